//! A thin SVD held in the precision it was computed in.

use faer::linalg::solvers::Svd;
use faer::{Mat, MatRef};

use crate::DecomposeError;

/// Floating-point precision of the SVD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// `f64` up to 4 M elements, `f32` beyond, falling back to `f64` if the `f32` result is not
    /// finite. Conv groups over 1 M elements take the Gram route in f64 and dense layers over 4 M in
    /// f32 instead ([`crate::ConvSvd`], [`crate::DenseSvd`]).
    #[default]
    Auto,
    F32,
    F64,
}

const AUTO_F64_LIMIT: usize = 4 << 20;

// f32 results are kept as faer gave them (copying U and V out would double the peak memory of large
// layers); f64 ones are rounded to f32, the precision the factors end up in, which halves what every
// layer's SVD holds while rank selection looks at all of them.
enum Factors {
    F32(Svd<f32>),
    F64 { u: Mat<f32>, v: Mat<f32> },
}

/// `A = U diag(s) Vᵀ` with `U: m x r`, `V: n x r`, `r = min(m, n)`, `s` non-increasing.
pub(crate) struct ThinSvd {
    factors: Factors,
    pub(crate) singular_values: Vec<f64>,
}

fn finite32(m: MatRef<'_, f32>) -> bool {
    (0..m.ncols()).all(|j| m.col(j).iter().all(|x| x.is_finite()))
}

impl ThinSvd {
    /// SVD of the `m x n` matrix whose `(i, j)` element is `at(i, j)`.
    pub(crate) fn compute(
        m: usize,
        n: usize,
        at: impl Fn(usize, usize) -> f32,
        precision: Precision,
    ) -> Result<Self, DecomposeError> {
        let use_f64 = match precision {
            Precision::F64 => true,
            Precision::F32 => false,
            Precision::Auto => m.saturating_mul(n) <= AUTO_F64_LIMIT,
        };
        if !use_f64 {
            let a = Mat::<f32>::from_fn(m, n, &at);
            let svd = a.thin_svd().map_err(|_| DecomposeError::NoConvergence)?;
            let s: Vec<f64> = svd.S().column_vector().iter().map(|&x| x as f64).collect();
            let ok = s.iter().all(|x| x.is_finite()) && finite32(svd.U()) && finite32(svd.V());
            if ok {
                return Ok(ThinSvd {
                    factors: Factors::F32(svd),
                    singular_values: s,
                });
            }
            if precision == Precision::F32 {
                return Err(DecomposeError::NonFinite);
            }
        }
        let a = Mat::<f64>::from_fn(m, n, |i, j| at(i, j) as f64);
        let svd = a.thin_svd().map_err(|_| DecomposeError::NoConvergence)?;
        let s: Vec<f64> = svd.S().column_vector().iter().copied().collect();
        if s.iter().any(|x| !x.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        let (u, v) = (svd.U(), svd.V());
        let factors = Factors::F64 {
            u: Mat::from_fn(u.nrows(), u.ncols(), |i, k| u[(i, k)] as f32),
            v: Mat::from_fn(v.nrows(), v.ncols(), |j, k| v[(j, k)] as f32),
        };
        drop(svd);
        Ok(ThinSvd {
            factors,
            singular_values: s,
        })
    }

    /// The precision the factors were computed in.
    pub(crate) fn precision(&self) -> Precision {
        match self.factors {
            Factors::F32(_) => Precision::F32,
            Factors::F64 { .. } => Precision::F64,
        }
    }

    /// `U[i, k]`.
    pub(crate) fn u(&self, i: usize, k: usize) -> f64 {
        match &self.factors {
            Factors::F32(svd) => svd.U()[(i, k)] as f64,
            Factors::F64 { u, .. } => u[(i, k)] as f64,
        }
    }

    /// `V[j, k]`.
    pub(crate) fn v(&self, j: usize, k: usize) -> f64 {
        match &self.factors {
            Factors::F32(svd) => svd.V()[(j, k)] as f64,
            Factors::F64 { v, .. } => v[(j, k)] as f64,
        }
    }
}
