//! 2-D transposed convolution ("deconvolution"): `(N, C, H, W)` with weight
//! `(C, num_filter / num_group, kh, kw)`, ONNX's `ConvTranspose` (the learned upsampling of
//! segmentation and detection heads). accnn runs it but does not decompose it.
//!
//! Each input pixel scatters `weight[c] * x[c, y, x]` into the output window at
//! `(y * stride - pad_top + ky * dilate, ...)`; the output is
//! `stride * (in - 1) + output_padding + (k - 1) * dilate + 1 - pad_begin - pad_end` per axis.

use crate::error::GraphError;
use crate::ir::Padding2d;

use super::{Array, EvalContext, ShapeContext};

/// Attributes of a 2-D transposed convolution. Weight layout `(channels, num_filter / num_group,
/// kh, kw)`: ONNX's, the transpose of a convolution's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvTransposeAttrs {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilate: [usize; 2],
    /// Rows and columns cropped from the full scattered output (ONNX `pads`).
    pub pad: Padding2d,
    /// Rows and columns added at the bottom and right of the output (ONNX `output_padding`).
    pub output_padding: [usize; 2],
    pub num_filter: usize,
    pub num_group: usize,
    pub no_bias: bool,
}

impl ConvTransposeAttrs {
    /// The full (uncropped) output length along axis `k` for an input of `len`:
    /// `stride * (len - 1) + output_padding + (kernel - 1) * dilate + 1`.
    pub fn full_length(&self, k: usize, len: usize) -> Option<usize> {
        let reach = self.kernel[k].checked_sub(1)?.checked_mul(self.dilate[k])? + 1;
        self.stride[k]
            .checked_mul(len.checked_sub(1)?)?
            .checked_add(self.output_padding[k])?
            .checked_add(reach)
    }

    /// Output height and width on an `h x w` input; `None` when the padding crops everything.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let ho = self
            .full_length(0, h)?
            .checked_sub(self.pad.top.checked_add(self.pad.bottom)?)?;
        let wo = self
            .full_length(1, w)?
            .checked_sub(self.pad.left.checked_add(self.pad.right)?)?;
        (ho > 0 && wo > 0).then_some((ho, wo))
    }

    /// The begin and end padding along one axis that make the output `target` long (ONNX's
    /// `output_shape` and `SAME_*` rules: the odd unit goes to the end, or to the beginning when
    /// `lower`); `None` when `target` is longer than the full output.
    pub fn padding_for(&self, k: usize, len: usize, target: usize, lower: bool) -> Option<(usize, usize)> {
        let total = self.full_length(k, len)?.checked_sub(target)?;
        let (small, large) = (total / 2, total - total / 2);
        Some(if lower { (large, small) } else { (small, large) })
    }
}

pub(crate) fn output_shapes(c: &ConvTransposeAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let [n, ch, h, w] = cx.nchw(0)?;
    if c.num_group == 0 || !ch.is_multiple_of(c.num_group) || !c.num_filter.is_multiple_of(c.num_group) {
        return Err(cx.error(format!(
            "{ch} input and {} output channels do not split into {} groups",
            c.num_filter, c.num_group
        )));
    }
    let (ho, wo) = c
        .output_hw(h, w)
        .ok_or_else(|| cx.error(format!("padding {:?} crops the whole {h}x{w} output", c.pad)))?;
    cx.expect_param(1, &[ch, c.num_filter / c.num_group, c.kernel[0], c.kernel[1]], "weight")?;
    if !c.no_bias {
        cx.expect_param(2, &[c.num_filter], "bias")?;
    }
    Ok(vec![vec![n, c.num_filter, ho, wo]])
}

/// Every input pixel scattered through the kernel, the cropped part dropped.
pub(crate) fn reference(c: &ConvTransposeAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
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
            let plane = &mut out[(b * c.num_filter + f) * ho * wo..][..ho * wo];
            plane.iter_mut().for_each(|v| *v = bias[f]);
        }
        for cin in 0..ch {
            let g = cin / cg;
            for iy in 0..h {
                for ix in 0..wd {
                    let v = x.data[((b * ch + cin) * h + iy) * wd + ix];
                    for fl in 0..fg {
                        let f = g * fg + fl;
                        for ky in 0..kh {
                            let oy = (iy * c.stride[0] + ky * c.dilate[0]) as isize - c.pad.top as isize;
                            if oy < 0 || oy >= ho as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ox = (ix * c.stride[1] + kx * c.dilate[1]) as isize - c.pad.left as isize;
                                if ox < 0 || ox >= wo as isize {
                                    continue;
                                }
                                out[((b * c.num_filter + f) * ho + oy as usize) * wo + ox as usize] +=
                                    v * w[((cin * fg + fl) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(cx.output(out))
}
