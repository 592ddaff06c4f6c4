//! 2-D pooling: max, average and sum windows, global or not, with MXNet's and ONNX's rounding
//! conventions.

use crate::error::GraphError;
use crate::ir::Padding2d;
use crate::shape::window_output;

use super::{Array, EvalContext, ShapeContext};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
    Sum,
}

/// How a pooling window count is rounded: MXNet's `valid` floors, `full` ceils, `same` keeps
/// `ceil(size/stride)`; `Ceil` is ONNX's and PyTorch's `ceil_mode`, which ceils but drops a last
/// window that would start in the trailing padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolConvention {
    Valid,
    Full,
    Same,
    Ceil,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: Padding2d,
    pub global: bool,
    pub convention: PoolConvention,
    /// Whether padded cells count in the divisor of average pooling (MXNet default true).
    pub count_include_pad: bool,
}

impl PoolAttrs {
    /// `kind` pooling over `kernel` windows every `stride`, unpadded, rounding down (MXNet's
    /// `valid`), padded cells counted in averages (MXNet's default).
    ///
    /// ```
    /// use accnn_graph::ir::{PoolAttrs, PoolConvention, PoolKind};
    /// let full = PoolAttrs { convention: PoolConvention::Full, ..PoolAttrs::new(PoolKind::Max, [2, 2], [2, 2]) };
    /// assert_eq!(accnn_graph::shape::pool_output_hw(&full, 5, 5), Some((3, 3)));
    /// ```
    pub fn new(kind: PoolKind, kernel: [usize; 2], stride: [usize; 2]) -> Self {
        PoolAttrs {
            kind,
            kernel,
            stride,
            pad: Padding2d::default(),
            global: false,
            convention: PoolConvention::Valid,
            count_include_pad: true,
        }
    }
}

impl PoolAttrs {
    /// The number of cells an average over output cell `out` (row, column) of an `input` (height,
    /// width) divides by: the window's cells inside the padded extent when padding counts
    /// (`count_include_pad`), else those inside the input; at least 1. A window of the `full`
    /// convention that reaches past the padding counts only up to it.
    pub fn divisor(&self, out: [usize; 2], input: [usize; 2]) -> usize {
        let mut cells = 1;
        for axis in 0..2 {
            let (kernel, stride, before, after) = if self.global {
                (input[axis], 1, 0, 0)
            } else {
                let pad = [(self.pad.top, self.pad.bottom), (self.pad.left, self.pad.right)][axis];
                (self.kernel[axis], self.stride[axis], pad.0, pad.1)
            };
            let start = (out[axis] * stride) as isize - before as isize;
            let end = (start + kernel as isize).min((input[axis] + after) as isize);
            let counted = if self.count_include_pad {
                end - start
            } else {
                end.min(input[axis] as isize) - start.max(0)
            };
            cells *= counted.max(0) as usize;
        }
        cells.max(1)
    }
}

/// Output height and width of a pooling window on an `h x w` input, with MXNet's conventions.
pub fn pool_output_hw(p: &PoolAttrs, h: usize, w: usize) -> Option<(usize, usize)> {
    if p.global {
        return Some((1, 1));
    }
    if p.kernel.contains(&0) || p.stride.contains(&0) {
        return None;
    }
    let axis = |size: usize, pad_begin: usize, pad_total: usize, k: usize, s: usize| -> Option<usize> {
        match p.convention {
            PoolConvention::Valid => window_output(size, pad_total, k, s, 1),
            PoolConvention::Full => {
                let padded = size.checked_add(pad_total)?;
                (padded >= k).then(|| (padded - k).div_ceil(s) + 1)
            }
            PoolConvention::Ceil => {
                let padded = size.checked_add(pad_total)?;
                let n = (padded >= k).then(|| (padded - k).div_ceil(s) + 1)?;
                // The last window must start inside the input or the leading padding.
                Some(if n > 1 && (n - 1) * s >= size.saturating_add(pad_begin) {
                    n - 1
                } else {
                    n
                })
            }
            PoolConvention::Same => Some(size.div_ceil(s)),
        }
    };
    let Padding2d {
        top,
        bottom,
        left,
        right,
    } = p.pad;
    Some((
        axis(h, top, top.checked_add(bottom)?, p.kernel[0], p.stride[0])?,
        axis(w, left, left.checked_add(right)?, p.kernel[1], p.stride[1])?,
    ))
}

pub(crate) fn output_shapes(p: &PoolAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let [n, ch, h, w] = cx.nchw(0)?;
    let (ho, wo) =
        pool_output_hw(p, h, w).ok_or_else(|| cx.error(format!("window {:?} does not fit input {h}x{w}", p.kernel)))?;
    Ok(vec![vec![n, ch, ho, wo]])
}

pub(crate) fn reference(p: &PoolAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let out_shape = cx.output_shape();
    let (n, ch, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (ho, wo) = (out_shape[2], out_shape[3]);
    let (kernel, stride, pad, end) = if p.global {
        ([h, wd], [1, 1], [0, 0], [h, wd])
    } else {
        (
            p.kernel,
            p.stride,
            [p.pad.top, p.pad.left],
            [h + p.pad.bottom, wd + p.pad.right],
        )
    };
    let mut out = vec![0.0; out_shape.iter().product()];
    for b in 0..n {
        for c in 0..ch {
            for oy in 0..ho {
                for ox in 0..wo {
                    let y0 = (oy * stride[0]) as isize - pad[0] as isize;
                    let x0 = (ox * stride[1]) as isize - pad[1] as isize;
                    let y1 = (y0 + kernel[0] as isize).min(end[0] as isize);
                    let x1 = (x0 + kernel[1] as isize).min(end[1] as isize);
                    let (ya, yb) = (y0.max(0), y1.min(h as isize));
                    let (xa, xb) = (x0.max(0), x1.min(wd as isize));
                    let mut best = f64::NEG_INFINITY;
                    let mut sum = 0.0;
                    for y in ya..yb {
                        for xx in xa..xb {
                            let v = x.data[((b * ch + c) * h + y as usize) * wd + xx as usize];
                            best = best.max(v);
                            sum += v;
                        }
                    }
                    out[((b * ch + c) * ho + oy) * wo + ox] = match p.kind {
                        PoolKind::Max => best,
                        PoolKind::Sum => sum,
                        PoolKind::Avg => sum / p.divisor([oy, ox], [h, wd]) as f64,
                    };
                }
            }
        }
    }
    Ok(cx.output(out))
}
