//! CPU fully-connected layer.
//!
//! At small batches a dense layer is bound by reading its weights (fc6 of VGG-16 is 411 MB for
//! 0.1 GMAC an image): there every worker streams its own rows of the weight matrix once and dots
//! each row with up to 8 inputs of the batch at a time, each weight chunk loaded once for all of
//! them, with independent accumulators so that the loads, not the FMA latency, set the pace.
//! Larger batches are a GEMM (faer), whose packing copies the whole weight matrix once a call:
//! worth it only when enough images share that copy.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use rayon::prelude::*;

/// Batches up to this size take the streaming path. At batch 8 VGG-16's fc6 took 39 ms as a GEMM
/// (packing copies its 411 MB), 22 ms streamed (onnxruntime: 16 ms).
const STREAMED_BATCH: usize = 16;
/// Inputs of the batch each streamed weight row is dotted with at once.
const INPUTS_PER_PASS: usize = 8;
/// Columns of a block: 8 inputs' blocks take 16 KB of L1.
const K_BLOCK: usize = 512;
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

    /// Each weight row dotted with up to 8 inputs at a time (one input: the portable code,
    /// compiled for AVX-512). The rows are walked in blocks of `K_BLOCK` columns, all rows of the
    /// task per block, so that the inputs' block stays in L1 while the rows stream past it: 8
    /// whole inputs of fc6 (800 KB) would not stay in L2 beside the weights.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn streamed_avx512(&self, x: &[f32], batch: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
        if batch == 1 {
            return self.streamed_portable(x, batch, rows, out);
        }
        let k = self.inputs;
        let body = k - k % avx512::CHUNK;
        let n_rows = rows.len();
        // Vector partial sums per (row, input).
        let mut partial = vec![[0f32; avx512::CHUNK]; n_rows * batch];
        for k0 in (0..body).step_by(K_BLOCK) {
            let k1 = (k0 + K_BLOCK).min(body);
            for (r, o) in rows.clone().enumerate() {
                let w = &self.weight[o * k + k0..o * k + k1];
                let partial = &mut partial[r * batch..(r + 1) * batch];
                for (pass, acc) in partial.chunks_mut(INPUTS_PER_PASS).enumerate() {
                    let x = &x[(pass * INPUTS_PER_PASS) * k + k0..];
                    // SAFETY: AVX-512F by this function's contract; `x` holds `acc.len()` inputs
                    // `k` apart from their column `k0`, each `k1 - k0` values past it.
                    unsafe {
                        match acc.len() {
                            1 => avx512::accumulate::<1>(w, x, k, acc),
                            2 => avx512::accumulate::<2>(w, x, k, acc),
                            3 => avx512::accumulate::<3>(w, x, k, acc),
                            4 => avx512::accumulate::<4>(w, x, k, acc),
                            5 => avx512::accumulate::<5>(w, x, k, acc),
                            6 => avx512::accumulate::<6>(w, x, k, acc),
                            7 => avx512::accumulate::<7>(w, x, k, acc),
                            _ => avx512::accumulate::<8>(w, x, k, acc),
                        }
                    }
                }
            }
        }
        for (r, o) in rows.enumerate() {
            let w = &self.weight[o * k + body..(o + 1) * k];
            for b in 0..batch {
                let tail: f32 = w.iter().zip(&x[b * k + body..(b + 1) * k]).map(|(w, x)| w * x).sum();
                out[r * batch + b] = partial[r * batch + b].iter().sum::<f32>() + tail;
            }
        }
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_storeu_ps};

    /// Weights per step: two vectors.
    pub(super) const CHUNK: usize = 32;

    /// Adds `w · x_b` (`w.len()` a multiple of `CHUNK`) to input `b`'s two-vector partial sums
    /// `acc[b]`, for the `B` inputs at `x[b * stride..]`: each 32 weights loaded once for all `B`
    /// inputs, the `2 B <= 16` accumulators in registers throughout.
    ///
    /// # Safety
    /// AVX-512F must be available; `x` must hold `(B - 1) * stride + w.len()` values and `acc` `B`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn accumulate<const B: usize>(w: &[f32], x: &[f32], stride: usize, acc: &mut [[f32; CHUNK]]) {
        assert!(acc.len() >= B && x.len() >= (B - 1) * stride + w.len() && w.len().is_multiple_of(CHUNK));
        // SAFETY (whole function): in bounds by the assertion.
        let mut lo: [_; B] = std::array::from_fn(|b| unsafe { _mm512_loadu_ps(acc[b].as_ptr()) });
        let mut hi: [_; B] = std::array::from_fn(|b| unsafe { _mm512_loadu_ps(acc[b].as_ptr().add(16)) });
        let (w_ptr, x_ptr) = (w.as_ptr(), x.as_ptr());
        for i in (0..w.len()).step_by(CHUNK) {
            unsafe {
                let w0 = _mm512_loadu_ps(w_ptr.add(i));
                let w1 = _mm512_loadu_ps(w_ptr.add(i + 16));
                for b in 0..B {
                    let xb = x_ptr.add(b * stride + i);
                    lo[b] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), lo[b]);
                    hi[b] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb.add(16)), hi[b]);
                }
            }
        }
        for b in 0..B {
            unsafe {
                _mm512_storeu_ps(acc[b].as_mut_ptr(), lo[b]);
                _mm512_storeu_ps(acc[b].as_mut_ptr().add(16), hi[b]);
            }
        }
    }
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
