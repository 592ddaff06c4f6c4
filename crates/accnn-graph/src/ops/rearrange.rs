//! Operators that rearrange values by index: Pad, Gather (constant indices), Expand, Tile and the
//! block moves DepthToSpace / SpaceToDepth. Each output element is one input element (or a fill
//! value), so each operator is described by where its output elements come from: per axis, a map
//! from output index to input index ([`AxisSource`]), which the reference and the engine share.

use crate::error::GraphError;

use super::layout::{self, for_each_index};
use super::{Array, EvalContext, ShapeContext, resolve_axis};

/// How Pad fills the positions outside the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// A constant value.
    Constant(f32),
    /// The input mirrored at its edges, the edge itself not repeated (`[1, 2, 3]` → `3 2 | 1 2 3 | 2 1`).
    Reflect,
    /// The edge value repeated.
    Edge,
    /// The input repeated periodically (`[1, 2, 3]` → `2 3 | 1 2 3 | 1 2`).
    Wrap,
}

/// ONNX `Pad`: `(before, after)` per axis of the input (negative values crop).
#[derive(Clone, Debug, PartialEq)]
pub struct PadAttrs {
    pub pads: Vec<(i64, i64)>,
    pub mode: PadMode,
}

/// Where the output positions of one axis read from: `Some(i)` input index `i`, `None` the fill.
pub type AxisSource = Vec<Option<usize>>;

impl PadAttrs {
    /// Per axis, the input index of every output position for an input of `dims`; `None` when the
    /// pads do not fit (an axis shorter than zero, or reflecting a too-short axis).
    pub fn sources(&self, dims: &[usize]) -> Option<Vec<AxisSource>> {
        if self.pads.len() != dims.len() {
            return None;
        }
        dims.iter()
            .zip(&self.pads)
            .map(|(&n, &(before, after))| {
                let out = n as i64 + before + after;
                if out < 0 {
                    return None;
                }
                let n = n as i64;
                (0..out)
                    .map(|o| {
                        let i = o - before;
                        if (0..n).contains(&i) {
                            return Some(Some(i as usize));
                        }
                        match self.mode {
                            PadMode::Constant(_) => Some(None),
                            _ if n == 0 => None,
                            PadMode::Edge => Some(Some(i.clamp(0, n - 1) as usize)),
                            PadMode::Wrap => Some(Some(i.rem_euclid(n) as usize)),
                            PadMode::Reflect if n == 1 => Some(Some(0)),
                            PadMode::Reflect => {
                                let period = 2 * (n - 1);
                                let r = i.rem_euclid(period);
                                Some(Some(if r < n { r } else { period - r } as usize))
                            }
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The fill value outside the input (zero but in constant mode).
    pub fn fill(&self) -> f32 {
        match self.mode {
            PadMode::Constant(v) => v,
            _ => 0.0,
        }
    }
}

/// DepthToSpace moves channel blocks into `block x block` pixel tiles; SpaceToDepth the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceDepth {
    /// ONNX DepthToSpace; `column_row_depth` is mode CRD (channel-major blocks), else DCR.
    ToSpace { block: usize, column_row_depth: bool },
    /// ONNX SpaceToDepth.
    ToDepth { block: usize },
}

impl SpaceDepth {
    /// The 6-D view, its permutation and the output shape for an `[N, C, H, W]` input: the move
    /// is a reshape to the view, a transpose, and a reshape to the output.
    pub fn plan(self, dims: &[usize]) -> Option<([usize; 6], [usize; 6], [usize; 4])> {
        let &[n, c, h, w] = dims else { return None };
        match self {
            SpaceDepth::ToSpace {
                block: b,
                column_row_depth,
            } => {
                if b == 0 || c % (b * b) != 0 {
                    return None;
                }
                let out = [n, c / (b * b), h * b, w * b];
                Some(if column_row_depth {
                    ([n, c / (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3], out)
                } else {
                    ([n, b, b, c / (b * b), h, w], [0, 3, 4, 1, 5, 2], out)
                })
            }
            SpaceDepth::ToDepth { block: b } => {
                if b == 0 || h % b != 0 || w % b != 0 {
                    return None;
                }
                Some((
                    [n, c, h / b, b, w / b, b],
                    [0, 3, 5, 1, 2, 4],
                    [n, c * b * b, h / b, w / b],
                ))
            }
        }
    }
}

/// The values of `data` (shaped `dims`) read through per-axis sources; `fill` where a source is
/// `None`.
pub fn remap<T: Copy>(dims: &[usize], data: &[T], sources: &[AxisSource], fill: T) -> (Vec<usize>, Vec<T>) {
    let out_dims: Vec<usize> = sources.iter().map(Vec::len).collect();
    let strides = super::context::strides(dims);
    let mut out = Vec::with_capacity(out_dims.iter().product());
    for_each_index(&out_dims, |idx| {
        let mut offset = 0;
        for (k, &o) in idx.iter().enumerate() {
            match sources[k][o] {
                Some(i) => offset += i * strides[k],
                None => {
                    out.push(fill);
                    return;
                }
            }
        }
        out.push(data[offset]);
    });
    (out_dims, out)
}

/// Per axis, output position `o` reads input `o mod n`: `dims` tiled `repeats` times.
pub fn tile_sources(dims: &[usize], repeats: &[usize]) -> Option<Vec<AxisSource>> {
    (dims.len() == repeats.len()).then(|| {
        dims.iter()
            .zip(repeats)
            .map(|(&n, &r)| (0..n * r).map(|o| Some(o % n)).collect())
            .collect()
    })
}

/// The output shape of ONNX Expand: `dims` and `shape` broadcast together (either side may be 1).
pub fn expanded(dims: &[usize], shape: &[i64]) -> Option<Vec<usize>> {
    let target: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
    super::elementwise::broadcast("", dims, &target).ok()
}

/// The output shape of Gather with `index_dims` indices along `axis`.
pub fn gathered(dims: &[usize], axis: i64, index_dims: &[usize]) -> Option<Vec<usize>> {
    let a = resolve_axis(axis, dims.len())?;
    let mut out = dims[..a].to_vec();
    out.extend_from_slice(index_dims);
    out.extend_from_slice(&dims[a + 1..]);
    Some(out)
}

pub(crate) fn pad_shapes(p: &PadAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let sources = p
        .sources(x)
        .ok_or_else(|| cx.error(format!("pads {:?} do not fit {x:?}", p.pads)))?;
    Ok(vec![sources.iter().map(Vec::len).collect()])
}

pub(crate) fn pad_reference(p: &PadAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let sources = p
        .sources(&x.shape)
        .ok_or_else(|| cx.error(format!("pads {:?} do not fit {:?}", p.pads, x.shape)))?;
    let (_, data) = remap(&x.shape, &x.data, &sources, p.fill() as f64);
    Ok(cx.output(data))
}

pub(crate) fn tile_shapes(repeats: &[usize], cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    if x.len() != repeats.len() {
        return Err(cx.error(format!("{} repeats for a rank-{} input", repeats.len(), x.len())));
    }
    Ok(vec![x.iter().zip(repeats).map(|(d, r)| d * r).collect()])
}

pub(crate) fn tile_reference(repeats: &[usize], cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let sources = tile_sources(&x.shape, repeats).ok_or_else(|| cx.error("repeats do not match the input's rank"))?;
    let (_, data) = remap(&x.shape, &x.data, &sources, 0.0);
    Ok(cx.output(data))
}

pub(crate) fn expand_shapes(shape: &[i64], cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let out = expanded(x, shape).ok_or_else(|| cx.error(format!("cannot expand {x:?} to {shape:?}")))?;
    Ok(vec![out])
}

pub(crate) fn expand_reference(shape: &[i64], cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let out = expanded(&x.shape, shape).ok_or_else(|| cx.error(format!("cannot expand {:?} to {shape:?}", x.shape)))?;
    let ones = vec![(); out.iter().product()];
    let (_, data) = layout::broadcast_map((&x.shape, &x.data), (&out, &ones), |v, ()| v)
        .ok_or_else(|| cx.error("shapes do not broadcast"))?;
    Ok(cx.output(data))
}

pub(crate) fn gather_shapes(
    axis: i64,
    indices: &[i64],
    index_dims: &[usize],
    cx: &ShapeContext,
) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let a = resolve_axis(axis, x.len()).ok_or_else(|| cx.error(format!("gather axis {axis} is out of range")))?;
    let n = x[a] as i64;
    if indices.iter().any(|&i| i < -n || i >= n) {
        return Err(cx.error(format!("an index is out of range for an axis of {n}")));
    }
    Ok(vec![gathered(x, axis, index_dims).unwrap_or_default()])
}

pub(crate) fn gather_reference(
    axis: i64,
    indices: &[i64],
    index_dims: &[usize],
    cx: &EvalContext,
) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let a = resolve_axis(axis, x.shape.len()).ok_or_else(|| cx.error(format!("gather axis {axis} is out of range")))?;
    let (_, data) = layout::gather(&x.shape, &x.data, a, indices, index_dims)
        .ok_or_else(|| cx.error("an index is out of range"))?;
    Ok(cx.output(data))
}

pub(crate) fn space_depth_shapes(s: SpaceDepth, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let (_, _, out) = s.plan(x).ok_or_else(|| cx.error(format!("{s:?} does not fit {x:?}")))?;
    Ok(vec![out.to_vec()])
}

pub(crate) fn space_depth_reference(s: SpaceDepth, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let (view, perm, _) = s
        .plan(&x.shape)
        .ok_or_else(|| cx.error(format!("{s:?} does not fit {:?}", x.shape)))?;
    let (_, data) = layout::transpose(&view, &x.data, &perm).ok_or_else(|| cx.error("bad permutation"))?;
    Ok(cx.output(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: PadMode, before: i64, after: i64) -> Vec<f64> {
        let p = PadAttrs {
            pads: vec![(before, after)],
            mode,
        };
        let sources = p.sources(&[3]).expect("fits");
        remap(&[3], &[1.0, 2.0, 3.0], &sources, p.fill() as f64).1
    }

    #[test]
    fn pad_modes_match_numpy_pad() {
        // numpy.pad([1, 2, 3], (2, 2), mode=...): constant, reflect, edge, wrap.
        assert_eq!(
            row(PadMode::Constant(9.0), 2, 2),
            vec![9.0, 9.0, 1.0, 2.0, 3.0, 9.0, 9.0]
        );
        assert_eq!(row(PadMode::Reflect, 2, 2), vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        assert_eq!(row(PadMode::Edge, 2, 2), vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]);
        assert_eq!(row(PadMode::Wrap, 2, 2), vec![2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]);
        // Negative pads crop.
        assert_eq!(row(PadMode::Constant(0.0), -1, 1), vec![2.0, 3.0, 0.0]);
    }

    #[test]
    fn depth_to_space_and_back_is_the_identity() {
        let dims = [1, 8, 2, 3];
        let data: Vec<usize> = (0..48).collect();
        for crd in [false, true] {
            let to = SpaceDepth::ToSpace {
                block: 2,
                column_row_depth: crd,
            };
            let (view, perm, out) = to.plan(&dims).expect("fits");
            assert_eq!(out, [1, 2, 4, 6]);
            let (_, spread) = layout::transpose(&view, &data, &perm).expect("perm");
            if !crd {
                // DCR: output (c, y*2+i, x*2+j) is input channel (i*2+j)*2+c at (y, x).
                let at = |c: usize, y: usize, x: usize| spread[(c * 4 + y) * 6 + x];
                assert_eq!(at(1, 3, 4), 5 * 6 + 3 + 2);
                let back = SpaceDepth::ToDepth { block: 2 };
                let (v2, p2, o2) = back.plan(&out).expect("fits");
                assert_eq!(o2, [1, 8, 2, 3]);
                assert_eq!(layout::transpose(&v2, &spread, &p2).expect("perm").1, data);
            }
        }
    }

    #[test]
    fn tile_and_expand_shapes() {
        let (d, t) = remap(&[2], &[5, 6], &tile_sources(&[2], &[3]).expect("rank"), 0);
        assert_eq!((d, t), (vec![6], vec![5, 6, 5, 6, 5, 6]));
        assert_eq!(expanded(&[3, 1], &[2, 1, 4]), Some(vec![2, 3, 4]));
        assert_eq!(expanded(&[3, 2], &[4]), None);
        assert_eq!(gathered(&[5, 6, 7], -2, &[2, 2]), Some(vec![5, 2, 2, 7]));
    }
}
