//! Low-rank factorisations of CNN layers, computed with one SVD each ([faer]).
//!
//! - [`ConvSvd`]: the spatial decomposition of Tai et al. (arXiv 1511.06067). A `(N, C, kh, kw)`
//!   kernel is reshaped to the `(C*kh) x (N*kw)` matrix `A[(c,i), (n,j)] = W[n,c,i,j]`; its thin SVD
//!   `A = U S Vᵀ` gives, at rank `K`, a vertical kernel `(K, C, kh, 1)` from `U_K S_K^½` and a
//!   horizontal kernel `(N, K, 1, kw)` from `V_K S_K^½`. This is the closed-form optimum: by
//!   Eckart–Young the Frobenius error of the reshaped kernel is `sqrt(Σ_{i≥K} σ_i²)`.
//!   Grouped convolutions are factored group by group with the same rank per group.
//! - [`DenseSvd`]: a `(N, M)` fully-connected weight `W = U S Vᵀ` becomes `(K, M)` = `S_K^½ V_Kᵀ`
//!   followed by `(N, K)` = `U_K S_K^½`.
//!
//! - [`WhitenedConvSvd`], [`LeastSquares`]: the data-aware variants, fitted to a layer's responses
//!   on calibration data instead of its weights alone.
//!
//! Each factorisation is computed once; its [`singular_values`](ConvSvd::singular_values) feed rank
//! selection and [`factors`](ConvSvd::factors) then costs only a copy for any rank.
//!
//! ```
//! use accnn_decompose::{ConvSvd, KernelShape, Precision};
//! // A 4-filter 3x3 kernel on 2 channels.
//! let shape = KernelShape { filters: 4, channels: 2, height: 3, width: 3 };
//! let weight: Vec<f32> = (0..shape.len()).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
//! let svd = ConvSvd::new(&weight, shape, 1, Precision::Auto).unwrap();
//! let full = svd.factors(svd.max_rank()).unwrap();
//! // At full rank the pair reproduces the kernel exactly.
//! let rebuilt = full.compose();
//! assert!(weight.iter().zip(&rebuilt).all(|(a, b)| (a - b).abs() < 1e-4));
//! ```

mod dense;
mod matrix;
mod response;
mod spatial;

pub use dense::{DenseSvd, LinearFactors};
pub use matrix::Precision;
pub use response::{LeastSquares, SecondMoment, WhitenedConvSvd};
pub use spatial::{ConvSvd, KernelShape, SpatialFactors, channel_tap_sums, weighted_tap_sums};

/// Why a factorisation could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DecomposeError {
    #[error("weight has {got} values but its shape needs {expected}")]
    ShapeMismatch { expected: usize, got: usize },
    #[error("rank {rank} is out of range: it must be between 1 and {max}")]
    RankOutOfRange { rank: usize, max: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("the SVD did not converge")]
    NoConvergence,
    #[error("the weight holds NaN or infinite values")]
    NonFinite,
}

/// Frobenius norm of what rank `rank` drops: `sqrt(Σ_{i≥rank} σ_i²)` over all spectra (Eckart–Young).
pub fn truncation_error(spectra: &[&[f64]], rank: usize) -> f64 {
    spectra
        .iter()
        .flat_map(|s| s.iter().skip(rank))
        .map(|s| s * s)
        .sum::<f64>()
        .sqrt()
}
