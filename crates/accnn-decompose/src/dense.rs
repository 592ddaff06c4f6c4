//! Truncated SVD of fully-connected (dense) weights.
//!
//! Small layers get a thin SVD. Large ones (VGG-16's fc6 is 4096 x 25088: 411 MB in f32) take the
//! Gram route instead: the eigenvectors of the shorter side's Gram matrix (`W Wᵀ`, 4096 x 4096,
//! accumulated in f64 over column blocks) are that side's singular vectors, and the factors at rank
//! `K` are projections of `W` onto the first `K` of them. That holds a few `min(m, n)²` matrices
//! instead of a copy of `W`, its other singular vectors and the SVD's workspace (under a third of the
//! memory), and the projection reproduces `W` exactly at full rank whatever the accuracy of the small
//! singular values (which squaring limits to about `1e-16 · σ₁² / σᵢ` absolute).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use crate::response::SecondMoment;

use crate::DecomposeError;
use crate::matrix::{Precision, ThinSvd};

/// With [`Precision::Auto`], dense layers with more weights than this, and at least twice as many
/// inputs as outputs or the reverse, take the Gram route.
const GRAM_MIN_ELEMENTS: usize = 4 << 20;
/// Columns of `W` converted to f64 at a time while accumulating the Gram matrix.
const GRAM_BLOCK: usize = 1024;

/// The two weights replacing an `(outputs, inputs)` dense layer, row-major:
/// `reduce` is `(rank, inputs)` and `reconstruct` is `(outputs, rank)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearFactors {
    pub outputs: usize,
    pub inputs: usize,
    pub rank: usize,
    pub reduce: Vec<f32>,
    pub reconstruct: Vec<f32>,
}

impl LinearFactors {
    /// The `(outputs, inputs)` product `reconstruct · reduce`.
    pub fn compose(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.outputs * self.inputs];
        for n in 0..self.outputs {
            for m in 0..self.inputs {
                let acc: f64 = (0..self.rank)
                    .map(|k| self.reconstruct[n * self.rank + k] as f64 * self.reduce[k * self.inputs + m] as f64)
                    .sum();
                out[n * self.inputs + m] = acc as f32;
            }
        }
        out
    }
}

/// The SVD of a dense weight, ready to give factors at any rank.
pub struct DenseSvd {
    outputs: usize,
    inputs: usize,
    basis: Basis,
    singular_values: Vec<f64>,
}

enum Basis {
    Svd(ThinSvd),
    /// Orthonormal singular vectors of the shorter side, one column each, by decreasing singular
    /// value: left (`U`, outputs) when `outputs <= inputs`, right (`V`, inputs) otherwise.
    Gram {
        vectors: Mat<f32>,
        left: bool,
    },
}

/// A non-empty, finite `(outputs, inputs)` weight.
fn check_weight(weight: &[f32], outputs: usize, inputs: usize) -> Result<(), DecomposeError> {
    if weight.len() != outputs * inputs || weight.is_empty() {
        return Err(DecomposeError::ShapeMismatch {
            expected: outputs * inputs,
            got: weight.len(),
        });
    }
    if weight.iter().any(|v| !v.is_finite()) {
        return Err(DecomposeError::NonFinite);
    }
    Ok(())
}

impl DenseSvd {
    /// Factorises a row-major `(outputs, inputs)` weight.
    pub fn new(weight: &[f32], outputs: usize, inputs: usize, precision: Precision) -> Result<Self, DecomposeError> {
        check_weight(weight, outputs, inputs)?;
        // The Gram matrix of a square layer is as large as the layer (in f64, twice), and its
        // eigensolver's workspace larger than an f32 SVD's: only strongly rectangular layers gain.
        let (short, long) = (outputs.min(inputs), outputs.max(inputs));
        if precision == Precision::Auto && weight.len() > GRAM_MIN_ELEMENTS && long >= 2 * short {
            return Self::gram(weight, outputs, inputs);
        }
        let svd = ThinSvd::compute(outputs, inputs, |i, j| weight[i * inputs + j], precision)?;
        Ok(DenseSvd {
            outputs,
            inputs,
            singular_values: svd.singular_values.clone(),
            basis: Basis::Svd(svd),
        })
    }

    /// Factorises a row-major `(outputs, inputs)` weight by the Gram route (see the module docs),
    /// whatever its size. [`DenseSvd::new`] takes it for layers over 4 M weights with one side at
    /// least twice the other (VGG-16's fc6, not its square fc7).
    pub fn gram(weight: &[f32], outputs: usize, inputs: usize) -> Result<Self, DecomposeError> {
        check_weight(weight, outputs, inputs)?;
        let w = MatRef::from_row_major_slice(weight, outputs, inputs);
        // The shorter side as rows: `a` is `side x long`; its columns are the samples whose second
        // moment (summed, not averaged) is the Gram matrix `a aᵀ`.
        let left = outputs <= inputs;
        let a = if left { w } else { w.transpose() };
        let (side, long) = (a.nrows(), a.ncols());
        let mut moment = SecondMoment::new(side);
        let mut block = vec![0f64; GRAM_BLOCK.min(long) * side];
        for start in (0..long).step_by(GRAM_BLOCK) {
            let width = GRAM_BLOCK.min(long - start);
            for (j, sample) in block.chunks_mut(side).take(width).enumerate() {
                sample
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = a[(i, start + j)] as f64);
            }
            moment.add(&block[..width * side]);
        }
        drop(block);
        let gram = moment.into_sum();
        let eigen = gram
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| DecomposeError::NoConvergence)?;
        drop(gram);
        // Eigenvalues come in non-decreasing order: the largest singular value is the last.
        let values = eigen.S().column_vector();
        let singular_values: Vec<f64> = (0..side).rev().map(|k| values[k].max(0.0).sqrt()).collect();
        if singular_values.iter().any(|x| !x.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        let u = eigen.U();
        let vectors = Mat::<f32>::from_fn(side, side, |i, k| u[(i, side - 1 - k)] as f32);
        Ok(DenseSvd {
            outputs,
            inputs,
            basis: Basis::Gram { vectors, left },
            singular_values,
        })
    }

    /// The precision actually used ([`Precision::F32`] or [`Precision::F64`]; the Gram route
    /// accumulates and diagonalises in f64).
    pub fn precision(&self) -> Precision {
        match &self.basis {
            Basis::Svd(svd) => svd.precision(),
            Basis::Gram { .. } => Precision::F64,
        }
    }

    /// `min(outputs, inputs)`.
    pub fn max_rank(&self) -> usize {
        self.singular_values.len()
    }

    pub fn singular_values(&self) -> &[f64] {
        &self.singular_values
    }

    /// The two weights at `rank`, each carrying `S_K^½`. `weight` is the weight this was computed
    /// from: the Gram route keeps only one side's singular vectors and projects the weight onto them.
    pub fn factors(&self, weight: &[f32], rank: usize) -> Result<LinearFactors, DecomposeError> {
        let max = self.max_rank();
        if rank == 0 || rank > max {
            return Err(DecomposeError::RankOutOfRange { rank, max });
        }
        let (outputs, inputs) = (self.outputs, self.inputs);
        if weight.len() != outputs * inputs {
            return Err(DecomposeError::ShapeMismatch {
                expected: outputs * inputs,
                got: weight.len(),
            });
        }
        let mut reduce = vec![0f32; rank * inputs];
        let mut reconstruct = vec![0f32; outputs * rank];
        match &self.basis {
            Basis::Svd(svd) => {
                for k in 0..rank {
                    let root = self.singular_values[k].sqrt();
                    for m in 0..inputs {
                        reduce[k * inputs + m] = (svd.v(m, k) * root) as f32;
                    }
                    for n in 0..outputs {
                        reconstruct[n * rank + k] = (svd.u(n, k) * root) as f32;
                    }
                }
            }
            Basis::Gram { vectors, left } => {
                let kept = vectors.as_ref().subcols(0, rank);
                // W ≈ U_K (U_Kᵀ W) when the vectors are W's left ones, (W V_K) V_Kᵀ when right.
                // `projected` (K x long) is the vectors' transpose times `a` (W or Wᵀ, shorter side
                // first), scaled by S_K^{-½}; `spread` (side x K) is the vectors scaled by S_K^½.
                // Both are views of the two outputs, so the product is written once, in place.
                let w = MatRef::from_row_major_slice(weight, outputs, inputs);
                let (a, mut projected, mut spread) = if *left {
                    (
                        w,
                        MatMut::from_row_major_slice_mut(&mut reduce, rank, inputs),
                        MatMut::from_row_major_slice_mut(&mut reconstruct, outputs, rank),
                    )
                } else {
                    (
                        w.transpose(),
                        MatMut::from_column_major_slice_mut(&mut reconstruct, rank, outputs),
                        MatMut::from_column_major_slice_mut(&mut reduce, inputs, rank),
                    )
                };
                matmul(
                    projected.as_mut(),
                    Accum::Replace,
                    kept.transpose(),
                    a,
                    1.0f32,
                    Par::rayon(0),
                );
                // A zero singular value contributes nothing either way.
                let s_max = self.singular_values[0];
                for k in 0..rank {
                    let s = self.singular_values[k];
                    let (root, inv) = if s > s_max * 1e-12 {
                        (s.sqrt() as f32, 1.0 / s.sqrt() as f32)
                    } else {
                        (0.0, 0.0)
                    };
                    projected.as_mut().row_mut(k).iter_mut().for_each(|v| *v *= inv);
                    spread
                        .as_mut()
                        .col_mut(k)
                        .iter_mut()
                        .zip(kept.col(k).iter())
                        .for_each(|(d, &u)| *d = u * root);
                }
            }
        }
        Ok(LinearFactors {
            outputs,
            inputs,
            rank,
            reduce,
            reconstruct,
        })
    }
}
