//! Local response normalisation across channels (ONNX `LRN`, MXNet `LRN`; AlexNet, GoogLeNet):
//! each value divided by `(bias + alpha / size * sum of squares over the channel window)^beta`.

use crate::error::GraphError;

use super::{Array, EvalContext, ShapeContext};

/// The window and the constants of a local response normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnAttrs {
    /// Channels in the window (odd in practice; ONNX allows even).
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

impl LrnAttrs {
    /// Channels the window reaches below and above its centre: `floor((size - 1) / 2)` and
    /// `ceil((size - 1) / 2)`, as ONNX defines it.
    pub fn reach(&self) -> (usize, usize) {
        let span = self.size.saturating_sub(1);
        (span / 2, span.div_ceil(2))
    }
}

pub(crate) fn output_shapes(attrs: &LrnAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    if x.len() < 2 || attrs.size == 0 {
        return Err(cx.error(format!("LRN of size {} over shape {x:?} (needs N, C, ...)", attrs.size)));
    }
    Ok(vec![x.to_vec()])
}

pub(crate) fn reference(attrs: &LrnAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let (batch, channels) = (x.shape[0], x.shape[1]);
    let inner: usize = x.shape[2..].iter().product();
    let (below, above) = attrs.reach();
    let scale = attrs.alpha as f64 / attrs.size as f64;
    let mut out = vec![0.0; x.data.len()];
    for n in 0..batch {
        for c in 0..channels {
            let window = c.saturating_sub(below)..(c + above + 1).min(channels);
            for i in 0..inner {
                let at = |k: usize| x.data[(n * channels + k) * inner + i];
                let squares: f64 = window.clone().map(|k| at(k) * at(k)).sum();
                out[(n * channels + c) * inner + i] =
                    at(c) / (attrs.bias as f64 + scale * squares).powf(attrs.beta as f64);
            }
        }
    }
    Ok(cx.output(out))
}
