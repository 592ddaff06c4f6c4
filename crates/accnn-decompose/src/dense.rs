//! Truncated SVD of fully-connected (dense) weights.
//!
//! Small layers get a thin SVD. Large ones (VGG-16's fc6 is 4096 x 25088: 411 MB in f32, its fc7
//! 4096 x 4096) take the Gram route instead: the eigenvectors of the shorter side's Gram matrix
//! (`W Wᵀ`, 4096 x 4096) are that side's singular vectors, and the factors at rank `K` are
//! projections of `W` onto the first `K` of them. That holds a few `min(m, n)²` matrices instead of a
//! copy of `W`, its other singular vectors and the SVD's workspace, costs one GEMM and one symmetric
//! eigensolver instead of two-sided bidiagonalisation (VGG-16's fc6 and fc7: 4x faster than f32
//! SVDs), and the projection reproduces `W` exactly at full rank whatever the accuracy of the small
//! singular values. Squaring limits that accuracy to about `ε · σ₁² / σᵢ` absolute (`ε` the
//! precision's: 1e-16 in f64, 6e-8 in f32); in f32 that is below 1e-3 σ₁ for every σᵢ, and a
//! perturbation of `ε σ₁²` in each eigenvalue moves a layer's kept-energy fractions by at most
//! `ε · rank`, far below what rank selection resolves.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use crate::response::SecondMoment;

use crate::DecomposeError;
use crate::matrix::{Precision, ThinSvd};

/// With [`Precision::Auto`], dense layers with more weights than this take the Gram route, in f32.
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
    /// Per output, the sum of the composed weight's row (`reconstruct · (reduce · 1)`), without
    /// composing it.
    pub fn row_sums(&self) -> Vec<f64> {
        let reduced: Vec<f64> = self
            .reduce
            .chunks(self.inputs)
            .map(|k| k.iter().map(|&v| v as f64).sum())
            .collect();
        self.reconstruct
            .chunks(self.rank)
            .map(|n| n.iter().zip(&reduced).map(|(&a, b)| a as f64 * b).sum())
            .collect()
    }

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
        vectors: GramVectors,
        left: bool,
        precision: Precision,
    },
}

/// The Gram route's singular vectors, or the Gram matrix they come from: in f32 only the
/// eigenvalues are computed up front (rank selection needs nothing else, and leaves VGG-16's fc6
/// and fc7 whole at most ratios), the eigenvectors the first time factors are asked for.
struct GramVectors {
    gram: Option<Mat<f32>>,
    vectors: std::sync::OnceLock<Mat<f32>>,
}

impl GramVectors {
    fn known(vectors: Mat<f32>) -> Self {
        GramVectors {
            gram: None,
            vectors: std::sync::OnceLock::from(vectors),
        }
    }

    /// The vectors by decreasing eigenvalue, computed now if they were deferred.
    fn get(&self) -> Result<&Mat<f32>, DecomposeError> {
        if let Some(v) = self.vectors.get() {
            return Ok(v);
        }
        let gram = self.gram.as_ref().ok_or(DecomposeError::NoConvergence)?;
        let eigen = gram
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| DecomposeError::NoConvergence)?;
        let (u, side) = (eigen.U(), gram.nrows());
        let vectors = Mat::<f32>::from_fn(side, side, |i, k| u[(i, side - 1 - k)]);
        // Another thread may have set them meanwhile: the same matrix either way.
        Ok(self.vectors.get_or_init(|| vectors))
    }
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

/// What the Gram route's eigendecomposition gives, before it becomes a [`DenseSvd`].
struct GramBasis {
    side: usize,
    left: bool,
    precision: Precision,
}

impl GramBasis {
    /// The SVD from the Gram matrix's eigenvalue `k` (in the eigensolver's non-decreasing order) and
    /// its eigenvectors (largest first): singular values largest first.
    fn into_svd(
        self,
        outputs: usize,
        inputs: usize,
        eigenvalue: impl Fn(usize) -> f64,
        vectors: GramVectors,
    ) -> Result<DenseSvd, DecomposeError> {
        let side = self.side;
        // Eigenvalues within the eigensolver's error of zero (ε · λ_max and less) are zero:
        // rounding noise must not read as energy (a rank-1 kernel would look full rank in f32).
        let epsilon = match self.precision {
            Precision::F64 => f64::EPSILON,
            _ => f32::EPSILON as f64,
        };
        let noise = epsilon * eigenvalue(side - 1).max(0.0);
        let singular_values: Vec<f64> = (0..side)
            .rev()
            .map(eigenvalue)
            .map(|l| if l > noise { l.sqrt() } else { 0.0 })
            .collect();
        if singular_values.iter().any(|x| !x.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        Ok(DenseSvd {
            outputs,
            inputs,
            basis: Basis::Gram {
                vectors,
                left: self.left,
                precision: self.precision,
            },
            singular_values,
        })
    }
}

impl DenseSvd {
    /// Factorises a row-major `(outputs, inputs)` weight.
    pub fn new(weight: &[f32], outputs: usize, inputs: usize, precision: Precision) -> Result<Self, DecomposeError> {
        check_weight(weight, outputs, inputs)?;
        if precision == Precision::Auto && weight.len() > GRAM_MIN_ELEMENTS {
            return Self::gram(weight, outputs, inputs, Precision::F32);
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
    /// whatever its size, the Gram matrix formed and diagonalised in `precision` (f64, or f32 for
    /// [`Precision::F32`] and [`Precision::Auto`]). [`DenseSvd::new`] takes it in f32 for layers over
    /// 4 M weights (VGG-16's fc6 and fc7).
    pub fn gram(weight: &[f32], outputs: usize, inputs: usize, precision: Precision) -> Result<Self, DecomposeError> {
        check_weight(weight, outputs, inputs)?;
        let w = MatRef::from_row_major_slice(weight, outputs, inputs);
        // The shorter side as rows: `a` is `side x long`; its columns are the samples whose second
        // moment (summed, not averaged) is the Gram matrix `a aᵀ`.
        let left = outputs <= inputs;
        let a = if left { w } else { w.transpose() };
        if precision != Precision::F64 {
            return Self::gram_f32(a, outputs, inputs, left);
        }
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
        let u = eigen.U();
        let basis = GramBasis {
            side,
            left,
            precision: Precision::F64,
        };
        let vectors = GramVectors::known(Mat::<f32>::from_fn(side, side, |i, k| u[(i, side - 1 - k)] as f32));
        basis.into_svd(outputs, inputs, |k| values[k], vectors)
    }

    /// The Gram route in f32: `a aᵀ` by one GEMM (its lower half), then the f32 eigensolver.
    fn gram_f32(a: MatRef<'_, f32>, outputs: usize, inputs: usize, left: bool) -> Result<Self, DecomposeError> {
        let side = a.nrows();
        let mut gram = Mat::<f32>::zeros(side, side);
        faer::linalg::matmul::triangular::matmul(
            gram.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            a,
            BlockStructure::Rectangular,
            a.transpose(),
            BlockStructure::Rectangular,
            1.0f32,
            Par::rayon(0),
        );
        // Eigenvalues now, eigenvectors when factors are asked for (see `GramVectors`).
        let mut values = gram
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|_| DecomposeError::NoConvergence)?;
        values.sort_by(f32::total_cmp);
        let basis = GramBasis {
            side,
            left,
            precision: Precision::F32,
        };
        let deferred = GramVectors {
            gram: Some(gram),
            vectors: std::sync::OnceLock::new(),
        };
        basis.into_svd(outputs, inputs, |k| values[k] as f64, deferred)
    }

    /// The precision actually used ([`Precision::F32`] or [`Precision::F64`]).
    pub fn precision(&self) -> Precision {
        match &self.basis {
            Basis::Svd(svd) => svd.precision(),
            Basis::Gram { precision, .. } => *precision,
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
            Basis::Gram { vectors, left, .. } => {
                let kept = vectors.get()?.as_ref().subcols(0, rank);
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
                // The two halves share S_K^½, but whatever the scale, root · inv = 1 keeps the
                // product the projection U_K U_Kᵀ W exactly: directions whose singular value reads
                // as zero (below the route's noise floor) are kept, at a floor scale, not dropped.
                let floor = (self.singular_values[0] * 1e-4).max(f64::MIN_POSITIVE);
                for k in 0..rank {
                    let root = self.singular_values[k].max(floor).sqrt();
                    let (root, inv) = (root as f32, (1.0 / root) as f32);
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
