//! Elementwise binary operators with numpy-style broadcasting: sum and product.

use crate::error::GraphError;

use super::context::strides;
use super::{Array, EvalContext, ShapeContext};

/// The broadcast shape of `a` and `b`; `node` names the node in errors.
pub fn broadcast(node: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, GraphError> {
    let n = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, n - s.len()).chain(s.iter().copied()).collect() };
    let (a2, b2) = (pad(a), pad(b));
    a2.iter()
        .zip(&b2)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(GraphError::node(node, format!("cannot broadcast {a:?} with {b:?}"))),
        })
        .collect()
}

/// `Add` (broadcasting only when `broadcast`: MXNet's `elemwise_add` needs equal shapes).
pub(crate) fn add_shapes(broadcasting: bool, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let (x, y) = (cx.input(0)?, cx.input(1)?);
    if broadcasting {
        Ok(vec![broadcast(cx.name(), x, y)?])
    } else if x == y {
        Ok(vec![x.to_vec()])
    } else {
        Err(cx.error(format!("adds shapes {x:?} and {y:?}, which differ")))
    }
}

pub(crate) fn mul_shapes(cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    Ok(vec![broadcast(cx.name(), cx.input(0)?, cx.input(1)?)?])
}

/// `f(a, b)` elementwise over the broadcast output.
pub(crate) fn reference(cx: &EvalContext, f: impl Fn(f64, f64) -> f64) -> Result<Array, GraphError> {
    let (a, b) = (cx.arg(0)?, cx.arg(1)?);
    let out_shape = cx.output_shape();
    let os = strides(out_shape);
    let pick = |arr: &Array, idx: usize| -> f64 {
        let off = out_shape.len() - arr.shape.len();
        let st = strides(&arr.shape);
        let mut flat = 0;
        for (d, &dim) in arr.shape.iter().enumerate() {
            let coord = (idx / os[d + off]) % out_shape[d + off];
            flat += if dim == 1 { 0 } else { coord * st[d] };
        }
        arr.data[flat]
    };
    let n: usize = out_shape.iter().product();
    Ok(cx.output((0..n).map(|i| f(pick(a, i), pick(b, i))).collect()))
}
