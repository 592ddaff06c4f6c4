//! Fully-connected layer: weight `(num_hidden, features)` and an optional bias, MXNet's
//! `FullyConnected` and ONNX's `Gemm` / `MatMul` with a constant weight.

use crate::error::GraphError;
use crate::tensor::element_count;

use super::{Array, EvalContext, ShapeContext};

/// Attributes of a fully-connected layer. Weight layout `(num_hidden, input_features)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FcAttrs {
    pub num_hidden: usize,
    pub no_bias: bool,
    /// MXNet's `flatten`: collapse all axes after the first before the product (default true).
    pub flatten: bool,
}

impl FcAttrs {
    /// How the layer sees an input of `shape`: `(rows, features)` per image.
    pub fn rows_and_features(&self, shape: &[usize]) -> Result<(usize, usize), GraphError> {
        if shape.is_empty() {
            return Err(GraphError::Invalid(
                "a fully-connected layer's input is a scalar".into(),
            ));
        }
        Ok(if self.flatten {
            (1, element_count(&shape[1..])?)
        } else {
            (element_count(&shape[1..shape.len() - 1])?, shape[shape.len() - 1])
        })
    }
}

/// MACs of a fully-connected layer applied to `rows` vectors of `features` values.
pub fn fc_macs(f: &FcAttrs, rows: usize, features: usize) -> u64 {
    rows as u64 * features as u64 * f.num_hidden as u64
}

pub(crate) fn output_shapes(f: &FcAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let s = cx.input(0)?;
    if s.is_empty() {
        return Err(cx.error("input is a scalar"));
    }
    let (lead, features) = if f.flatten {
        (vec![s[0]], element_count(&s[1..])?)
    } else {
        (s[..s.len() - 1].to_vec(), s[s.len() - 1])
    };
    cx.expect_param(1, &[f.num_hidden, features], "weight")?;
    if !f.no_bias {
        cx.expect_param(2, &[f.num_hidden], "bias")?;
    }
    let mut o = lead;
    o.push(f.num_hidden);
    Ok(vec![o])
}

pub(crate) fn reference(f: &FcAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let w = cx.param(1);
    let bias = if f.no_bias {
        vec![0.0; f.num_hidden]
    } else {
        cx.param(2)
    };
    let features = w.len() / f.num_hidden;
    let rows = x.data.len() / features;
    let mut out = vec![0.0; rows * f.num_hidden];
    for r in 0..rows {
        for o in 0..f.num_hidden {
            out[r * f.num_hidden + o] = bias[o]
                + (0..features)
                    .map(|m| w[o * features + m] * x.data[r * features + m])
                    .sum::<f64>();
        }
    }
    Ok(cx.output(out))
}
