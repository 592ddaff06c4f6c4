//! Data-aware factorisation: fit low-rank layers to the responses a network actually produces.
//!
//! - [`SecondMoment`] accumulates `Σ = E[p pᵀ]` of a layer's input patches.
//! - [`WhitenedConvSvd`]: the factorisation that minimises the *response* error `E‖(A − V Hᵀ)ᵀ p‖²`
//!   (treating the `kw` horizontal taps as uncorrelated): the SVD of `Σ^½ A = U S Qᵀ` gives
//!   `V = Σ^-½ U_K S_K^½`, `H = Q_K S_K^½`, and `S²` is the response energy per rank, the quantity
//!   rank selection should budget. With `Σ = I` it is the weight SVD of [`ConvSvd`](crate::ConvSvd).
//! - [`LeastSquares`]: a streamed ridge regression `min ‖Y − F B‖² + λ‖B‖²`, used to refit the second
//!   half of a pair on the responses of the approximated network ("asymmetric" reconstruction).

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatRef, Par, Side};

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

    /// `Σ = sum / count` (zero before any sample).
    pub fn mean(&self) -> Mat<f64> {
        let scale = 1.0 / self.count.max(1) as f64;
        Mat::from_fn(self.dim(), self.dim(), |i, j| self.sum[(i, j)] * scale)
    }
}

/// `Σ + ε · (trace Σ / d) · I`: keeps directions the data never excites from blowing up.
fn regularised(sigma: &Mat<f64>, ridge: f64) -> Mat<f64> {
    let d = sigma.nrows();
    let trace: f64 = (0..d).map(|i| sigma[(i, i)]).sum();
    let eps = ridge * (trace / d.max(1) as f64).max(f64::MIN_POSITIVE);
    Mat::from_fn(d, d, |i, j| sigma[(i, j)] + if i == j { eps } else { 0.0 })
}

/// The response-optimal spatial factorisation of one (ungrouped) convolution, or of a dense layer
/// seen as a 1x1 convolution.
pub struct WhitenedConvSvd {
    shape: KernelShape,
    /// `Σ^-½ U`, `(C·kh) x r`.
    left: Mat<f64>,
    /// `Q`, `(N·kw) x r`.
    right: Mat<f64>,
    singular_values: Vec<f64>,
}

impl WhitenedConvSvd {
    /// Factorises `weight` (`(N, C, kh, kw)`, row-major) for inputs whose vertical patches
    /// (`(c, i)`-ordered, `C·kh` long) have second moment `moment`. `ridge` (relative to the mean
    /// eigenvalue; 1e-3 is a good default) regularises `Σ`.
    pub fn new(weight: &[f32], shape: KernelShape, moment: &SecondMoment, ridge: f64) -> Result<Self, DecomposeError> {
        let KernelShape {
            filters,
            channels,
            height,
            width,
        } = shape;
        if weight.len() != shape.len() {
            return Err(DecomposeError::ShapeMismatch {
                expected: shape.len(),
                got: weight.len(),
            });
        }
        let d = channels * height;
        if moment.dim() != d {
            return Err(DecomposeError::Invalid(format!(
                "input statistics are {}-dimensional, the kernel's vertical patches {d}",
                moment.dim()
            )));
        }
        if weight.iter().any(|v| !v.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        let sigma = regularised(&moment.mean(), ridge);
        let eig = sigma
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| DecomposeError::NoConvergence)?;
        let (u, s) = (eig.U(), eig.S().column_vector());
        let root = |p: f64| -> Mat<f64> {
            let w: Vec<f64> = s.iter().map(|&l| l.max(f64::MIN_POSITIVE).powf(p)).collect();
            let scaled = Mat::from_fn(d, d, |i, k| u[(i, k)] * w[k]);
            &scaled * u.transpose()
        };
        let (half, inv_half) = (root(0.5), root(-0.5));
        let a = Mat::<f64>::from_fn(d, filters * width, |row, col| {
            let (c, i) = (row / height, row % height);
            let (n, j) = (col / width, col % width);
            weight[((n * channels + c) * height + i) * width + j] as f64
        });
        let whitened = &half * &a;
        let svd = whitened.thin_svd().map_err(|_| DecomposeError::NoConvergence)?;
        let singular_values: Vec<f64> = svd.S().column_vector().iter().copied().collect();
        if singular_values.iter().any(|x| !x.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        Ok(WhitenedConvSvd {
            shape,
            left: &inv_half * svd.U(),
            right: svd.V().to_owned(),
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

    /// The pair at `rank`, in the layouts of [`SpatialFactors`].
    pub fn factors(&self, rank: usize) -> Result<SpatialFactors, DecomposeError> {
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
        for k in 0..rank {
            let root = self.singular_values[k].sqrt();
            for row in 0..channels * height {
                vertical[k * channels * height + row] = (self.left[(row, k)] * root) as f32;
            }
            for n in 0..filters {
                for j in 0..width {
                    horizontal[(n * rank + k) * width + j] = (self.right[(n * width + j, k)] * root) as f32;
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
