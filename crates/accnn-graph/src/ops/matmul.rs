//! Matrix product of two computed tensors (ONNX `MatMul` when neither side is a stored weight, as in
//! attention's `q · kᵀ`), numpy's rules: batch axes broadcast, a 1-D operand is a vector.
//! A product with a stored weight is a fully-connected layer instead ([`super::dense`]).

use crate::error::GraphError;

use super::{Array, EvalContext, ShapeContext};

/// The output shape of `a · b`, `None` when the inner dimensions differ or the batch axes do not
/// broadcast.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return None;
    }
    let batch = super::elementwise::broadcast("", &a2[..a2.len() - 2], &b2[..b2.len() - 2]).ok()?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Some(out)
}

pub(crate) fn output_shapes(cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let out = matmul_shape(a, b).ok_or_else(|| cx.error(format!("cannot multiply {a:?} by {b:?}")))?;
    Ok(vec![out])
}

pub(crate) fn reference(cx: &EvalContext) -> Result<Array, GraphError> {
    let (a, b) = (cx.arg(0)?, cx.arg(1)?);
    let a2: Vec<usize> = if a.shape.len() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b2: Vec<usize> = if b.shape.len() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = super::elementwise::broadcast(cx.node.name.as_str(), ab, bb)?;
    // Matrix index of a broadcast batch index in an operand with batch axes `dims`.
    let matrix = |dims: &[usize], flat: usize| -> usize {
        let off = batch.len() - dims.len();
        let mut index = 0;
        let mut rest = flat;
        let mut scale = 1;
        for d in (0..batch.len()).rev() {
            let coord = rest % batch[d];
            rest /= batch[d];
            if d >= off {
                let size = dims[d - off];
                index += if size == 1 { 0 } else { coord * scale };
                scale *= size;
            }
        }
        index
    };
    let count: usize = batch.iter().product();
    let mut out = Vec::with_capacity(count * m * n);
    for t in 0..count {
        let (pa, pb) = (matrix(ab, t) * m * k, matrix(bb, t) * k * n);
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|p| a.data[pa + i * k + p] * b.data[pb + p * n + j]).sum());
            }
        }
    }
    Ok(cx.output(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_numpy() {
        assert_eq!(matmul_shape(&[2, 3, 4], &[4, 5]), Some(vec![2, 3, 5]));
        assert_eq!(matmul_shape(&[2, 1, 3, 4], &[5, 4, 6]), Some(vec![2, 5, 3, 6]));
        assert_eq!(matmul_shape(&[4], &[4, 5]), Some(vec![5]));
        assert_eq!(matmul_shape(&[3, 4], &[4]), Some(vec![3]));
        assert_eq!(matmul_shape(&[3, 4], &[5, 6]), None);
    }
}
