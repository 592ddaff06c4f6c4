//! Data-aware factorisation: fit low-rank layers to the responses a network actually produces.
//!
//! - [`SecondMoment`] accumulates `Σ = E[p pᵀ]` of a layer's input patches.
//! - [`WhitenedConvSvd`]: the factorisation that minimises the *response* error `E‖(A − V Hᵀ)ᵀ p‖²`
//!   (treating the `kw` horizontal taps as uncorrelated): `V Hᵀ = A Q_K Q_Kᵀ` with `Q` the
//!   eigenvectors of the response moment `Aᵀ Σ A`, whose eigenvalues `σ²` are the response energy
//!   per rank, the quantity rank selection should budget. With `Σ = I` it is the weight SVD of
//!   [`ConvSvd`](crate::ConvSvd).
//! - [`LeastSquares`]: a streamed ridge regression `min ‖Y − F B‖² + λ‖B‖²`, used to refit the second
//!   half of a pair on the responses of the approximated network ("asymmetric" reconstruction).

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use crate::DecomposeError;
use crate::spatial::{KernelShape, SpatialFactors};

/// Running second moment `E[p pᵀ]` of `dim`-vectors, in `f64`.
#[derive(Clone, Debug)]
pub struct SecondMoment {
    sum: Mat<f64>,
    count: u64,
}

impl SecondMoment {
    pub fn new(dim: usize) -> Self {
        SecondMoment {
            sum: Mat::zeros(dim, dim),
            count: 0,
        }
    }

    pub fn dim(&self) -> usize {
        self.sum.nrows()
    }

    /// Samples seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds the rows of the row-major `rows x dim` matrix `samples`.
    pub fn add(&mut self, samples: &[f64]) {
        let dim = self.dim();
        if dim == 0 || samples.is_empty() {
            return;
        }
        let rows = samples.len() / dim;
        let x = MatRef::from_row_major_slice(&samples[..rows * dim], rows, dim);
        matmul(self.sum.as_mut(), Accum::Add, x.transpose(), x, 1.0, Par::rayon(0));
        self.count += rows as u64;
    }

    /// The sum `Σ p pᵀ` itself, without a copy.
    pub fn into_sum(self) -> Mat<f64> {
        self.sum
    }

    /// `Σ = sum / count` (zero before any sample), computed in place: a wide moment is not held twice.
    pub fn into_mean(mut self) -> Mat<f64> {
        let scale = 1.0 / self.count.max(1) as f64;
        for j in 0..self.sum.ncols() {
            for v in self.sum.col_mut(j).iter_mut() {
                *v *= scale;
            }
        }
        self.sum
    }

    /// `Σ = sum / count` (zero before any sample).
    pub fn mean(&self) -> Mat<f64> {
        let scale = 1.0 / self.count.max(1) as f64;
        Mat::from_fn(self.dim(), self.dim(), |i, j| self.sum[(i, j)] * scale)
    }
}

/// `Σ + ε · (trace Σ / d) · I`: keeps directions the data never excites from blowing up.
fn regularised(sigma: &Mat<f64>, ridge: f64) -> Mat<f64> {
    let mut out = sigma.clone();
    add_ridge(&mut out, ridge);
    out
}

/// Adds `ε · (trace / d)` to the diagonal of `sigma`, in place.
fn add_ridge(sigma: &mut Mat<f64>, ridge: f64) {
    let d = sigma.nrows();
    let trace: f64 = (0..d).map(|i| sigma[(i, i)]).sum();
    let eps = ridge * (trace / d.max(1) as f64).max(f64::MIN_POSITIVE);
    for i in 0..d {
        sigma[(i, i)] += eps;
    }
}

/// The response-optimal spatial factorisation of one (ungrouped) convolution, or of a dense layer
/// seen as a 1x1 convolution.
///
/// The optimum of `min E‖(A − B)ᵀ p‖²` over rank-`K` matrices `B` is `B = A Q_K Q_Kᵀ`, `Q` the
/// eigenvectors of the response moment `G = Aᵀ Σ A` (the right singular vectors of `Σ^½ A`, whose
/// singular values are `√eig(G)`). Nothing but `G` is diagonalised: no square root or inverse of `Σ`,
/// and `G` is `N·kw` square however wide the layer's input is, so a dense layer can pass the moment
/// of its outputs directly ([`WhitenedConvSvd::from_responses`]).
pub struct WhitenedConvSvd {
    shape: KernelShape,
    /// `Q`, `(N·kw) x r`, largest eigenvalue first, rounded to f32 (the factors' precision). The
    /// vertical factors `A Q_K` are formed from the weight for the rank asked, not held for all.
    right: Mat<f32>,
    singular_values: Vec<f64>,
}

/// The reshaped kernel `A`, `(C·kh) x (N·kw)`.
fn reshaped<T>(weight: &[f32], shape: KernelShape, cast: impl Fn(f32) -> T) -> Mat<T>
where
    T: faer::traits::ComplexField,
{
    let (rows, cols) = shape.reshaped(1);
    Mat::<T>::from_fn(rows, cols, |row, col| {
        cast(weight[shape.reshaped_index(1, 0, row, col)])
    })
}

impl WhitenedConvSvd {
    /// Factorises `weight` (`(N, C, kh, kw)`, row-major) for inputs whose vertical patches
    /// (`(c, i)`-ordered, `C·kh` long) have second moment `moment`. `ridge` (relative to the mean
    /// eigenvalue; 1e-3 is a good default) regularises `Σ`.
    pub fn new(weight: &[f32], shape: KernelShape, moment: &SecondMoment, ridge: f64) -> Result<Self, DecomposeError> {
        shape.check(weight, 1)?;
        let d = shape.channels * shape.height;
        if moment.dim() != d {
            return Err(DecomposeError::Invalid(format!(
                "input statistics are {}-dimensional, the kernel's vertical patches {d}",
                moment.dim()
            )));
        }
        let a = reshaped(weight, shape, f64::from);
        let mut sigma = moment.mean();
        add_ridge(&mut sigma, ridge);
        let sigma_a = &sigma * &a;
        drop(sigma);
        let mut gram = Mat::<f64>::zeros(a.ncols(), a.ncols());
        matmul(
            gram.as_mut(),
            Accum::Replace,
            a.transpose(),
            &sigma_a,
            1.0,
            Par::rayon(0),
        );
        drop((a, sigma_a));
        Self::from_gram(shape, gram)
    }

    /// Factorises a layer from the second moment of its responses `Aᵀ p` alone (`N·kw`-dimensional:
    /// for a dense layer, its outputs less the bias), without the input moment `Σ` (VGG-16's fc6
    /// reads 25,088 inputs: `Σ` would take 5 GB). With `ridge` 0 this is [`WhitenedConvSvd::new`]
    /// on the same samples; `ridge` (relative to the mean eigenvalue) regularises the response
    /// moment itself. The moment is consumed: its sum becomes the matrix diagonalised.
    pub fn from_responses(
        weight: &[f32],
        shape: KernelShape,
        responses: SecondMoment,
        ridge: f64,
    ) -> Result<Self, DecomposeError> {
        shape.check(weight, 1)?;
        let m = shape.filters * shape.width;
        if responses.dim() != m {
            return Err(DecomposeError::Invalid(format!(
                "response statistics are {}-dimensional, the kernel has {m} outputs",
                responses.dim()
            )));
        }
        let mut gram = responses.into_mean();
        add_ridge(&mut gram, ridge);
        Self::from_gram(shape, gram)
    }

    /// The factorisation from the response moment `gram = Aᵀ Σ A`.
    fn from_gram(shape: KernelShape, gram: Mat<f64>) -> Result<Self, DecomposeError> {
        if gram.col_iter().any(|c| c.iter().any(|v| !v.is_finite())) {
            return Err(DecomposeError::NonFinite);
        }
        let eigen = gram
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| DecomposeError::NoConvergence)?;
        drop(gram);
        let (values, q) = (eigen.S().column_vector(), eigen.U());
        let m = shape.filters * shape.width;
        let rank = (shape.channels * shape.height).min(m);
        // Eigenvalues within the eigensolver's error of zero are zero: rounding is not energy.
        let noise = f64::EPSILON * values[m - 1].max(0.0);
        // Largest first (the solver's order is non-decreasing).
        let singular_values: Vec<f64> = (0..rank)
            .map(|k| values[m - 1 - k])
            .map(|l| if l > noise { l.sqrt() } else { 0.0 })
            .collect();
        if singular_values.iter().any(|x| !x.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        let right = Mat::<f32>::from_fn(m, rank, |i, k| q[(i, m - 1 - k)] as f32);
        Ok(WhitenedConvSvd {
            shape,
            right,
            singular_values,
        })
    }

    /// Response singular values, non-increasing: `σ_k²` is the response energy of component `k`.
    pub fn singular_values(&self) -> &[f64] {
        &self.singular_values
    }

    pub fn max_rank(&self) -> usize {
        self.singular_values.len()
    }

    /// The pair at `rank`, in the layouts of [`SpatialFactors`], from the `weight` this was computed
    /// for.
    pub fn factors(&self, weight: &[f32], rank: usize) -> Result<SpatialFactors, DecomposeError> {
        let max = self.max_rank();
        if rank == 0 || rank > max {
            return Err(DecomposeError::RankOutOfRange { rank, max });
        }
        let KernelShape {
            filters,
            channels,
            height,
            width,
        } = self.shape;
        let mut vertical = vec![0f32; rank * channels * height];
        let mut horizontal = vec![0f32; filters * rank * width];
        // `A q_k / √σ_k` and `q_k √σ_k`: the product is `A q_k q_kᵀ`; the split balances the halves
        // as the SVD's `U √S`, `V √S` would (floored so a direction without energy stays finite).
        let floor = (self.singular_values[0] * 1e-12).max(f64::MIN_POSITIVE);
        let roots: Vec<f64> = (0..rank).map(|k| self.singular_values[k].max(floor).sqrt()).collect();
        if weight.len() != self.shape.len() {
            return Err(DecomposeError::ShapeMismatch {
                expected: self.shape.len(),
                got: weight.len(),
            });
        }
        let d = channels * height;
        let kept = self.right.subcols(0, rank);
        {
            // `A Q_K` straight into the vertical factor: column-major `d x K` is its `(k, row)`
            // layout. A dense layer's `A` is its weight transposed, read in place.
            let projected = MatMut::from_column_major_slice_mut(&mut vertical, d, rank);
            if height == 1 && width == 1 {
                let a = MatRef::from_row_major_slice(weight, filters, channels).transpose();
                matmul(projected, Accum::Replace, a, kept, 1.0, Par::rayon(0));
            } else {
                let a = reshaped(weight, self.shape, |v| v);
                matmul(projected, Accum::Replace, &a, kept, 1.0, Par::rayon(0));
            }
        }
        for (k, root) in roots.iter().enumerate() {
            for v in &mut vertical[k * d..(k + 1) * d] {
                *v = (*v as f64 / root) as f32;
            }
            for n in 0..filters {
                for j in 0..width {
                    horizontal[(n * rank + k) * width + j] = (self.right[(n * width + j, k)] as f64 * root) as f32;
                }
            }
        }
        Ok(SpatialFactors {
            shape: self.shape,
            groups: 1,
            rank,
            vertical,
            horizontal,
        })
    }
}

/// A ridge regression `Y ≈ F B` accumulated block by block: `B = (FᵀF + λ·mean(diag)·I)⁻¹ FᵀY`.
#[derive(Clone, Debug)]
pub struct LeastSquares {
    gram: Mat<f64>,
    cross: Mat<f64>,
    /// `‖Y‖²`, for residuals.
    energy: f64,
    count: u64,
}

impl LeastSquares {
    pub fn new(features: usize, outputs: usize) -> Self {
        LeastSquares {
            gram: Mat::zeros(features, features),
            cross: Mat::zeros(features, outputs),
            energy: 0.0,
            count: 0,
        }
    }

    pub fn features(&self) -> usize {
        self.gram.nrows()
    }

    pub fn outputs(&self) -> usize {
        self.cross.ncols()
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `rows` samples: `features` is `rows x F` and `targets` `rows x N`, both row-major.
    pub fn add(&mut self, features: &[f64], targets: &[f64]) {
        let (f, n) = (self.features(), self.outputs());
        if f == 0 || features.is_empty() {
            return;
        }
        let rows = features.len() / f;
        debug_assert_eq!(targets.len(), rows * n);
        let x = MatRef::from_row_major_slice(&features[..rows * f], rows, f);
        let y = MatRef::from_row_major_slice(&targets[..rows * n], rows, n);
        matmul(self.gram.as_mut(), Accum::Add, x.transpose(), x, 1.0, Par::rayon(0));
        matmul(self.cross.as_mut(), Accum::Add, x.transpose(), y, 1.0, Par::rayon(0));
        self.energy += targets[..rows * n].iter().map(|v| v * v).sum::<f64>();
        self.count += rows as u64;
    }

    /// `‖Y‖²` over the samples added.
    pub fn target_energy(&self) -> f64 {
        self.energy
    }

    /// `‖Y − F B‖²` over the samples added, for any `F x N` matrix `b`.
    pub fn residual(&self, b: &Mat<f64>) -> f64 {
        let gb = &self.gram * b;
        let (f, n) = (self.features(), self.outputs());
        let mut cross = 0.0;
        let mut quad = 0.0;
        for j in 0..n {
            for i in 0..f {
                cross += b[(i, j)] * self.cross[(i, j)];
                quad += b[(i, j)] * gb[(i, j)];
            }
        }
        (self.energy - 2.0 * cross + quad).max(0.0)
    }

    /// The `F x N` solution; `ridge` is relative to the mean diagonal of `FᵀF`.
    pub fn solve(&self, ridge: f64) -> Result<Mat<f64>, DecomposeError> {
        let g = regularised(&self.gram, ridge);
        let llt = g.llt(Side::Lower).map_err(|_| DecomposeError::NoConvergence)?;
        Ok(llt.solve(&self.cross))
    }
}
