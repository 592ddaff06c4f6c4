//! Inference-mode batch normalisation: `(x - mean) / sqrt(var + eps) * gamma + beta` per channel.

use crate::error::GraphError;

use super::{Array, EvalContext, ShapeContext};

#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormAttrs {
    pub eps: f64,
    /// MXNet's `fix_gamma` (default true): gamma is taken as 1 whatever is stored.
    pub fix_gamma: bool,
    pub axis: usize,
}

impl BatchNormAttrs {
    /// The per-channel affine map the layer computes, `x * scale + shift`, from its stored
    /// `gamma`, `beta`, moving `mean` and `variance`: the one formula BatchNorm folding, the engine
    /// and the reference use.
    pub fn scale_shift(&self, gamma: &[f64], beta: &[f64], mean: &[f64], variance: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = (0..mean.len())
            .map(|k| {
                let g = if self.fix_gamma { 1.0 } else { gamma[k] };
                g / (variance[k] + self.eps).sqrt()
            })
            .collect();
        let shift = (0..mean.len()).map(|k| beta[k] - mean[k] * scale[k]).collect();
        (scale, shift)
    }
}

/// Outputs: the normalised input, then MXNet's mean and variance outputs (one value per channel).
pub(crate) fn output_shapes(b: &BatchNormAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let s = cx.input(0)?.to_vec();
    let ch = *s.get(b.axis).ok_or_else(|| cx.error("input has no channel axis"))?;
    for (k, what) in [(1, "gamma"), (2, "beta"), (3, "moving mean"), (4, "moving variance")] {
        cx.expect_param(k, &[ch], what)?;
    }
    Ok(vec![s, vec![ch], vec![ch]])
}

pub(crate) fn reference(b: &BatchNormAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let (gamma, beta, mean, var) = (cx.param(1), cx.param(2), cx.param(3), cx.param(4));
    let ch = x.shape[b.axis];
    let inner: usize = x.shape[b.axis + 1..].iter().product();
    // Written out rather than through `scale_shift`, so that the oracle checks that formula too.
    let out = x
        .data
        .iter()
        .enumerate()
        .map(|(idx, &v)| {
            let c = (idx / inner) % ch;
            let g = if b.fix_gamma { 1.0 } else { gamma[c] };
            (v - mean[c]) / (var[c] + b.eps).sqrt() * g + beta[c]
        })
        .collect();
    Ok(cx.output(out))
}
