//! 2-D convolution: `(N, C, H, W)` with weight `(num_filter, C / num_group, kh, kw)` and an optional
//! bias, MXNet's `Convolution` and ONNX's `Conv`.

use crate::error::GraphError;
use crate::ir::Padding2d;
use crate::shape::window_output;

use super::{Array, EvalContext, ShapeContext};

/// Attributes of a 2-D convolution. Weight layout `(num_filter, channels / num_group, kh, kw)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvAttrs {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilate: [usize; 2],
    pub pad: Padding2d,
    pub num_filter: usize,
    pub num_group: usize,
    pub no_bias: bool,
}

impl ConvAttrs {
    /// A stride-1, undilated, ungrouped convolution with bias whose output is as large as its input
    /// (padding `(k - 1) / 2` on each side, for odd kernel sizes `k`): VGG's and ResNet's 3x3 layers.
    ///
    /// ```
    /// # use accnn_graph::ir::{ConvAttrs, Padding2d};
    /// let c = ConvAttrs::same([3, 3], 64);
    /// assert_eq!((c.pad, c.stride, c.num_filter), (Padding2d::symmetric(1, 1), [1, 1], 64));
    /// ```
    pub fn same(kernel: [usize; 2], num_filter: usize) -> Self {
        ConvAttrs {
            kernel,
            stride: [1, 1],
            dilate: [1, 1],
            pad: Padding2d::symmetric((kernel[0] - 1) / 2, (kernel[1] - 1) / 2),
            num_filter,
            num_group: 1,
            no_bias: false,
        }
    }
}

/// Output height and width of a convolution on an `h x w` input.
pub fn conv_output_hw(c: &ConvAttrs, h: usize, w: usize) -> Option<(usize, usize)> {
    Some((
        window_output(
            h,
            c.pad.top.checked_add(c.pad.bottom)?,
            c.kernel[0],
            c.stride[0],
            c.dilate[0],
        )?,
        window_output(
            w,
            c.pad.left.checked_add(c.pad.right)?,
            c.kernel[1],
            c.stride[1],
            c.dilate[1],
        )?,
    ))
}

/// MACs of a convolution producing an output of `out_hw` from `in_channels` channels, per image.
pub fn conv_macs(c: &ConvAttrs, in_channels: usize, out_hw: (usize, usize)) -> u64 {
    let per_output = (in_channels / c.num_group) as u64 * (c.kernel[0] * c.kernel[1]) as u64;
    c.num_filter as u64 * out_hw.0 as u64 * out_hw.1 as u64 * per_output
}

pub(crate) fn output_shapes(c: &ConvAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let [n, ch, h, w] = cx.nchw(0)?;
    if ch % c.num_group != 0 {
        return Err(cx.error(format!("{ch} input channels do not split into {} groups", c.num_group)));
    }
    let (ho, wo) =
        conv_output_hw(c, h, w).ok_or_else(|| cx.error(format!("kernel {:?} does not fit input {h}x{w}", c.kernel)))?;
    cx.expect_param(1, &[c.num_filter, ch / c.num_group, c.kernel[0], c.kernel[1]], "weight")?;
    if !c.no_bias {
        cx.expect_param(2, &[c.num_filter], "bias")?;
    }
    Ok(vec![vec![n, c.num_filter, ho, wo]])
}

/// The textbook seven-deep loop.
pub(crate) fn reference(c: &ConvAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let w = cx.param(1);
    let bias = if c.no_bias {
        vec![0.0; c.num_filter]
    } else {
        cx.param(2)
    };
    let out_shape = cx.output_shape();
    let (n, ch, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (ho, wo) = (out_shape[2], out_shape[3]);
    let (cg, fg) = (ch / c.num_group, c.num_filter / c.num_group);
    let [kh, kw] = c.kernel;
    let mut out = vec![0.0; out_shape.iter().product()];
    for b in 0..n {
        for f in 0..c.num_filter {
            let g = f / fg;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias[f];
                    for cl in 0..cg {
                        let cin = g * cg + cl;
                        for ky in 0..kh {
                            let iy = (oy * c.stride[0] + ky * c.dilate[0]) as isize - c.pad.top as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * c.stride[1] + kx * c.dilate[1]) as isize - c.pad.left as isize;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                acc += w[((f * cg + cl) * kh + ky) * kw + kx]
                                    * x.data[((b * ch + cin) * h + iy as usize) * wd + ix as usize];
                            }
                        }
                    }
                    out[((b * c.num_filter + f) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    Ok(cx.output(out))
}
