//! CPU fully-connected layer.
//!
//! At small batches a dense layer is a matrix-vector product bound by reading its weights (fc6 of
//! VGG-16 is 411 MB for 0.1 GMAC): there every worker streams its own rows of the weight matrix once
//! and dots each row with every input of the batch, with independent accumulators so that the
//! loads, not the FMA latency, set the pace. Larger batches are a GEMM (faer).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use rayon::prelude::*;

/// Batches up to this size take the streaming matrix-vector path.
const STREAMED_BATCH: usize = 4;
/// Weight rows per parallel task on the streaming path.
const ROWS_PER_TASK: usize = 16;

/// `y = x Wᵀ + b` for `x` of shape `(B, K)`, `W` row-major `(N, K)` as stored.
pub(crate) struct DenseKernel {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    outputs: usize,
    inputs: usize,
    threads: usize,
}

impl DenseKernel {
    pub fn new(weight: Vec<f32>, bias: Option<Vec<f32>>, outputs: usize, threads: usize) -> Self {
        let inputs = weight.len() / outputs.max(1);
        DenseKernel {
            weight,
            bias,
            outputs,
            inputs,
            threads,
        }
    }

    /// Output rows `rows` for the `batch` inputs `x`, into `out` laid out `(rows, batch)`.
    fn streamed(&self, x: &[f32], batch: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            return unsafe { self.streamed_avx512(x, batch, rows, out) };
        }
        self.streamed_portable(x, batch, rows, out)
    }

    #[inline(always)]
    fn streamed_portable(&self, x: &[f32], batch: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let k = self.inputs;
        for (r, o) in rows.enumerate() {
            let w = &self.weight[o * k..(o + 1) * k];
            for b in 0..batch {
                out[r * batch + b] = dot(w, &x[b * k..(b + 1) * k]);
            }
        }
    }

    /// The same code, compiled for AVX-512 (the compiler vectorises `dot` with zmm registers).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn streamed_avx512(&self, x: &[f32], batch: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
        self.streamed_portable(x, batch, rows, out)
    }
}

/// `Σ a[i] b[i]` in 64 independent partial sums: the compiler vectorises them, and no FMA waits
/// for the previous one.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 64];
    let (ac, bc) = (a.chunks_exact(64), b.chunks_exact(64));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..64 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl CustomOp1 for DenseKernel {
    fn name(&self) -> &'static str {
        "accnn-dense"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, [batch, k]) = crate::op_input(storage, layout, self.name())?;
        if k != self.inputs {
            candle_core::bail!("accnn-dense expects {} inputs per row, got {k}", self.inputs);
        }
        let n = self.outputs;
        let mut y = if batch <= STREAMED_BATCH {
            let mut by_row = vec![0f32; n * batch];
            let task = |(chunk, out): (usize, &mut [f32])| {
                let first = chunk * ROWS_PER_TASK;
                self.streamed(x, batch, first..(first + ROWS_PER_TASK).min(n), out);
            };
            if self.threads > 1 {
                by_row.par_chunks_mut(ROWS_PER_TASK * batch).enumerate().for_each(task);
            } else {
                by_row.chunks_mut(ROWS_PER_TASK * batch).enumerate().for_each(task);
            }
            if batch == 1 {
                by_row
            } else {
                (0..batch * n).map(|i| by_row[(i % n) * batch + i / n]).collect()
            }
        } else {
            let mut y = vec![0f32; batch * n];
            let lhs = MatRef::from_row_major_slice(x, batch, k);
            let rhs = MatRef::from_row_major_slice(&self.weight, n, k).transpose();
            let dst = MatMut::from_row_major_slice_mut(&mut y, batch, n);
            matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, crate::par(self.threads));
            y
        };
        if let Some(bias) = &self.bias {
            for row in y.chunks_mut(n) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((batch, n))))
    }
}
