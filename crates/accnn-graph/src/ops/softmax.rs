//! Softmax over one axis (MXNet `softmax` and, at inference, `SoftmaxOutput`; ONNX `Softmax`).

use crate::error::GraphError;

use super::{Array, EvalContext, ShapeContext, resolve_axis};

pub(crate) fn output_shapes(cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    Ok(vec![cx.input(0)?.to_vec()])
}

pub(crate) fn reference(axis: i64, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let axis =
        resolve_axis(axis, x.shape.len()).ok_or_else(|| cx.error(format!("softmax axis {axis} is out of range")))?;
    let dim = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    let mut out = x.data.clone();
    for o in 0..outer {
        for i in 0..inner {
            let idx = |k: usize| (o * dim + k) * inner + i;
            let m = (0..dim).map(|k| x.data[idx(k)]).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..dim).map(|k| (x.data[idx(k)] - m).exp()).sum();
            for k in 0..dim {
                out[idx(k)] = (x.data[idx(k)] - m).exp() / z;
            }
        }
    }
    Ok(Array::new(x.shape.clone(), out))
}
