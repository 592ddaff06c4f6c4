//! Operators that move values without computing: Concat, Reshape, Flatten, Transpose, and the
//! pass-throughs (Identity, Dropout at inference).

use crate::error::GraphError;
use crate::tensor::element_count;

use super::{Array, EvalContext, ShapeContext, resolve_axis};

/// The output shape of MXNet's `Reshape` with `codes` (0 copy, -1 infer, -2 copy the rest, -3 merge
/// two) applied to `input`; `node` names the node in errors.
pub fn reshape(node: &str, input: &[usize], codes: &[i64]) -> Result<Vec<usize>, GraphError> {
    let bad = || GraphError::node(node, format!("cannot reshape {input:?} with {codes:?}"));
    let mut out: Vec<Option<usize>> = Vec::new();
    let mut src = 0usize;
    for &code in codes {
        match code {
            0 => {
                out.push(Some(*input.get(src).ok_or_else(bad)?));
                src += 1;
            }
            -1 => {
                out.push(None);
                src += 1;
            }
            -2 => {
                out.extend(input.get(src..).ok_or_else(bad)?.iter().map(|&d| Some(d)));
                src = input.len();
            }
            -3 => {
                let (a, b) = (input.get(src).ok_or_else(bad)?, input.get(src + 1).ok_or_else(bad)?);
                out.push(Some(a * b));
                src += 2;
            }
            d if d > 0 => {
                out.push(Some(d as usize));
                src += 1;
            }
            _ => return Err(bad()),
        }
    }
    let total = element_count(input)?;
    let known: usize = out.iter().flatten().product();
    let unknown = out.iter().filter(|d| d.is_none()).count();
    let shape: Vec<usize> = match unknown {
        0 => out.into_iter().flatten().collect(),
        1 if known > 0 && total % known == 0 => out.into_iter().map(|d| d.unwrap_or(total / known)).collect(),
        _ => return Err(bad()),
    };
    if element_count(&shape)? != total {
        return Err(bad());
    }
    Ok(shape)
}

pub(crate) fn reshape_shapes(codes: &[i64], cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    Ok(vec![reshape(cx.name(), cx.input(0)?, codes)?])
}

/// The 2-D shape Flatten at `axis` (negative: from the end) gives `input`, `None` when the axis is
/// out of range.
pub fn flatten(input: &[usize], axis: i64) -> Option<[usize; 2]> {
    // Flatten's axis may also be the rank itself (everything in the outer part).
    let axis = if axis == input.len() as i64 {
        input.len()
    } else {
        resolve_axis(axis, input.len())?
    };
    let (outer, inner) = input.split_at(axis);
    Some([element_count(outer).ok()?, element_count(inner).ok()?])
}

pub(crate) fn flatten_shapes(axis: i64, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let s = cx.input(0)?;
    let [outer, inner] =
        flatten(s, axis).ok_or_else(|| cx.error(format!("flatten axis {axis} is out of range for {s:?}")))?;
    Ok(vec![vec![outer, inner]])
}

/// Identity; Dropout has MXNet's second (mask) output of the same shape.
pub(crate) fn passthrough_shapes(outputs: usize, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    Ok(vec![cx.input(0)?.to_vec(); outputs])
}

/// The input's values in the output's shape: Reshape, Flatten, Identity, Dropout.
pub(crate) fn same_values(cx: &EvalContext) -> Result<Array, GraphError> {
    Ok(cx.output(cx.arg(0)?.data.clone()))
}

pub(crate) fn concat_shapes(axis: i64, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let first = cx.input(0)?.to_vec();
    let axis = resolve_axis(axis, first.len())
        .ok_or_else(|| cx.error(format!("concat axis {axis} out of range for {first:?}")))?;
    let mut o = first.clone();
    o[axis] = 0;
    for k in 0..cx.input_count() {
        let s = cx.input(k)?;
        let same_rest =
            s.len() == first.len() && s.iter().zip(&first).enumerate().all(|(d, (a, b))| d == axis || a == b);
        if !same_rest {
            return Err(cx.error(format!("cannot concatenate {s:?} with {first:?} on axis {axis}")));
        }
        o[axis] += s[axis];
    }
    Ok(vec![o])
}

pub(crate) fn concat_reference(axis: i64, cx: &EvalContext) -> Result<Array, GraphError> {
    let out_shape = cx.output_shape();
    let axis =
        resolve_axis(axis, out_shape.len()).ok_or_else(|| cx.error(format!("concat axis {axis} is out of range")))?;
    let outer: usize = out_shape[..axis].iter().product();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for k in 0..cx.input_count() {
            let a = cx.arg(k)?;
            let chunk: usize = a.shape[axis..].iter().product();
            out.extend_from_slice(&a.data[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(cx.output(out))
}

/// The shape Transpose with `perm` gives its input.
pub(crate) fn transpose_shapes(perm: &[usize], cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let mut seen = vec![false; x.len()];
    if perm.len() != x.len()
        || perm
            .iter()
            .any(|&p| p >= x.len() || std::mem::replace(&mut seen[p], true))
    {
        return Err(cx.error(format!("{perm:?} is not a permutation of the axes of {x:?}")));
    }
    Ok(vec![perm.iter().map(|&p| x[p]).collect()])
}

pub(crate) fn transpose_reference(perm: &[usize], cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let (_, data) = super::layout::transpose(&x.shape, &x.data, perm)
        .ok_or_else(|| cx.error(format!("{perm:?} is not a permutation of the axes of {:?}", x.shape)))?;
    Ok(cx.output(data))
}

/// ONNX `Slice` with constant bounds: `starts`/`ends` on `axes` (all when `None`) by `steps` (1
/// when `None`), negative values from the end, clamped as Python does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceAttrs {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Option<Vec<i64>>,
    pub steps: Option<Vec<i64>>,
}

impl SliceAttrs {
    /// The range taken on each axis of an input of `dims`.
    pub fn ranges(&self, dims: &[usize]) -> Result<Vec<super::layout::SliceAxis>, String> {
        super::layout::slice_axes(
            dims,
            &self.starts,
            &self.ends,
            self.axes.as_deref(),
            self.steps.as_deref(),
        )
    }
}

pub(crate) fn slice_shapes(attrs: &SliceAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let ranges = attrs.ranges(cx.input(0)?).map_err(|m| cx.error(m))?;
    Ok(vec![ranges.iter().map(|r| r.count).collect()])
}

pub(crate) fn slice_reference(attrs: &SliceAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let ranges = attrs.ranges(&x.shape).map_err(|m| cx.error(m))?;
    let (_, data) = super::layout::slice(&x.shape, &x.data, &ranges);
    Ok(cx.output(data))
}

/// Dimensions after inserting size-1 axes at `axes` (negative: from the end of the output).
pub fn unsqueezed(dims: &[usize], axes: &[i64]) -> Option<Vec<usize>> {
    let rank = dims.len() + axes.len();
    let mut at: Vec<usize> = axes.iter().map(|&a| resolve_axis(a, rank)).collect::<Option<_>>()?;
    at.sort_unstable();
    at.dedup();
    if at.len() != axes.len() {
        return None;
    }
    let mut rest = dims.iter();
    Some(
        (0..rank)
            .map(|k| if at.contains(&k) { 1 } else { *rest.next().unwrap_or(&1) })
            .collect(),
    )
}

/// Dimensions after removing the size-1 axes `axes` (all of them when `None`).
pub fn squeezed(dims: &[usize], axes: Option<&[i64]>) -> Option<Vec<usize>> {
    match axes {
        None => Some(dims.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let at: Vec<usize> = axes
                .iter()
                .map(|&a| resolve_axis(a, dims.len()))
                .collect::<Option<_>>()?;
            if at.iter().any(|&a| dims[a] != 1) {
                return None;
            }
            Some(
                dims.iter()
                    .enumerate()
                    .filter(|(k, _)| !at.contains(k))
                    .map(|(_, &d)| d)
                    .collect(),
            )
        }
    }
}

pub(crate) fn unsqueeze_shapes(axes: &[i64], cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let out = unsqueezed(x, axes).ok_or_else(|| cx.error(format!("cannot insert axes {axes:?} into {x:?}")))?;
    Ok(vec![out])
}

pub(crate) fn squeeze_shapes(axes: Option<&[i64]>, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let out =
        squeezed(x, axes).ok_or_else(|| cx.error(format!("cannot remove axes {axes:?} from {x:?} (not size 1)")))?;
    Ok(vec![out])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsqueeze_and_squeeze_place_axes_like_onnx() {
        assert_eq!(unsqueezed(&[3, 4], &[0, -1]), Some(vec![1, 3, 4, 1]));
        assert_eq!(unsqueezed(&[3], &[1, 1]), None);
        assert_eq!(squeezed(&[1, 3, 1], None), Some(vec![3]));
        assert_eq!(squeezed(&[1, 3, 1], Some(&[-1])), Some(vec![1, 3]));
        assert_eq!(squeezed(&[1, 3, 1], Some(&[1])), None);
    }
}
