//! `cargo xtask install-libtorch`: LibTorch for the `tch` backend, from PyPI.
//!
//! burn-tch 0.21 binds tch 0.22, which expects LibTorch 2.9. PyPI's `torch==2.9.0` wheel
//! carries exactly that LibTorch; newer wheels fail to build against tch 0.22 (their headers
//! need C++20 and drop functions it binds). So this installs `torch==2.9.0` into a virtual
//! environment of its own and prints the environment that building and running need.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;

/// The torch version whose LibTorch matches burn-tch 0.21 / tch 0.22.
const TORCH_VERSION: &str = "2.9.0";

#[derive(clap::Args)]
pub struct Args {
    /// Where to create the virtual environment.
    #[arg(long, default_value = ".venv-libtorch")]
    dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = if args.dir.is_absolute() {
        args.dir.clone()
    } else {
        crate::workspace_root().join(&args.dir)
    };
    if !dir.join("bin/python").exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .context("running python3 -m venv")?
            .success();
        if !ok {
            bail!(
                "could not create a virtual environment at {}",
                dir.display()
            );
        }
    }
    let ok = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", &format!("torch=={TORCH_VERSION}")])
        .status()
        .context("running pip")?
        .success();
    if !ok {
        bail!("pip install torch=={TORCH_VERSION} failed");
    }
    let output = Command::new(dir.join("bin/python"))
        .args([
            "-c",
            "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .context("locating torch/lib")?;
    let lib = String::from_utf8_lossy(&output.stdout).trim().to_string();
    println!(
        "LibTorch {TORCH_VERSION} installed in {}. Build and run with:",
        dir.display()
    );
    println!(
        "  export PATH={}/bin:$PATH LIBTORCH_USE_PYTORCH=1",
        dir.display()
    );
    println!("  export LD_LIBRARY_PATH={lib}:$LD_LIBRARY_PATH");
    println!("  cargo xtask bench --backend tch");
    Ok(())
}
