//! The binary starts and documents itself (this test also makes `cargo test --workspace` build
//! the binary that `tests/custom_stage.rs` at the repository root swaps into a pipeline).

#[test]
fn help_names_the_stage_contract() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multi-trigger-synth"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--config") && text.contains("--out"),
        "{text}"
    );
}
