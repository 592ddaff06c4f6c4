//! Truncated SVD of fully-connected (dense) weights.

use crate::DecomposeError;
use crate::matrix::{Precision, ThinSvd};

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
    svd: ThinSvd,
}

impl DenseSvd {
    /// Factorises a row-major `(outputs, inputs)` weight.
    pub fn new(weight: &[f32], outputs: usize, inputs: usize, precision: Precision) -> Result<Self, DecomposeError> {
        if weight.len() != outputs * inputs || weight.is_empty() {
            return Err(DecomposeError::ShapeMismatch {
                expected: outputs * inputs,
                got: weight.len(),
            });
        }
        if weight.iter().any(|v| !v.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        let svd = ThinSvd::compute(outputs, inputs, |i, j| weight[i * inputs + j], precision)?;
        Ok(DenseSvd { outputs, inputs, svd })
    }

    /// The precision actually used ([`Precision::F32`] or [`Precision::F64`]).
    pub fn precision(&self) -> Precision {
        self.svd.precision()
    }

    /// `min(outputs, inputs)`.
    pub fn max_rank(&self) -> usize {
        self.svd.rank()
    }

    pub fn singular_values(&self) -> &[f64] {
        &self.svd.singular_values
    }

    pub fn factors(&self, rank: usize) -> Result<LinearFactors, DecomposeError> {
        let max = self.max_rank();
        if rank == 0 || rank > max {
            return Err(DecomposeError::RankOutOfRange { rank, max });
        }
        let (outputs, inputs) = (self.outputs, self.inputs);
        let mut reduce = vec![0f32; rank * inputs];
        let mut reconstruct = vec![0f32; outputs * rank];
        for k in 0..rank {
            let root = self.svd.singular_values[k].sqrt();
            for m in 0..inputs {
                reduce[k * inputs + m] = (self.svd.v(m, k) * root) as f32;
            }
            for n in 0..outputs {
                reconstruct[n * rank + k] = (self.svd.u(n, k) * root) as f32;
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
