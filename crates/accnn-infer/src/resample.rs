//! The upsampling operators of detection and segmentation heads: transposed convolution (one matrix
//! product per group, then the columns scattered into the output) and resize (one gather, or two
//! and a mix, per resized axis).

use accnn_graph::ir::{ConvTransposeAttrs, ResizeAttrs};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// A transposed convolution with its weight laid out per group as `(fg * kh * kw, cg)`.
pub(crate) struct Deconv {
    attrs: ConvTransposeAttrs,
    /// Per group: the transposed weight, `(fg * kh * kw, cg)`.
    groups: Vec<Tensor>,
    bias: Vec<f32>,
}

impl Deconv {
    /// `weight` in ONNX layout `(channels, num_filter / num_group, kh, kw)`.
    pub(crate) fn new(
        attrs: ConvTransposeAttrs,
        channels: usize,
        weight: &[f32],
        bias: Option<Vec<f32>>,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let g = attrs.num_group;
        let (cg, fg) = (channels / g, attrs.num_filter / g);
        let rows = fg * attrs.kernel[0] * attrs.kernel[1];
        if weight.len() != channels * rows {
            candle_core::bail!(
                "transposed convolution weight holds {} values, expected {}",
                weight.len(),
                channels * rows
            );
        }
        let groups = (0..g)
            .map(|k| {
                let block = &weight[k * cg * rows..(k + 1) * cg * rows];
                let mut t = vec![0f32; rows * cg];
                for c in 0..cg {
                    for r in 0..rows {
                        t[r * cg + c] = block[c * rows + r];
                    }
                }
                Tensor::from_vec(t, (rows, cg), device)?.to_dtype(dtype)
            })
            .collect::<candle_core::Result<_>>()?;
        let bias = bias.unwrap_or_else(|| vec![0.0; attrs.num_filter]);
        Ok(Deconv { attrs, groups, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = &self.attrs;
        let (n, c, h, w) = x.dims4()?;
        let (ho, wo) = a
            .output_hw(h, w)
            .ok_or_else(|| candle_core::Error::Msg(format!("padding {:?} crops the whole output", a.pad)))?;
        let (g, fg) = (a.num_group, a.num_filter / a.num_group);
        let cg = c / g;
        let [kh, kw] = a.kernel;
        // Per group, columns (n, fg * kh * kw, h * w): what each input pixel adds at each tap.
        let columns: Vec<Vec<f32>> = (0..g)
            .map(|k| {
                let xg = x.narrow(1, k * cg, cg)?.reshape((n, cg, h * w))?.contiguous()?;
                self.groups[k]
                    .broadcast_left(n)?
                    .matmul(&xg)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()
            })
            .collect::<candle_core::Result<_>>()?;
        let mut out = vec![0f32; n * a.num_filter * ho * wo];
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(plane, o)| {
            let (b, f) = (plane / a.num_filter, plane % a.num_filter);
            let (k, fl) = (f / fg, f % fg);
            o.iter_mut().for_each(|v| *v = self.bias[f]);
            let cols = &columns[k][b * fg * kh * kw * h * w..];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &cols[((fl * kh + ky) * kw + kx) * h * w..][..h * w];
                    for iy in 0..h {
                        let oy = (iy * a.stride[0] + ky * a.dilate[0]) as isize - a.pad.top as isize;
                        if oy < 0 || oy >= ho as isize {
                            continue;
                        }
                        let line = &mut o[oy as usize * wo..][..wo];
                        for ix in 0..w {
                            let ox = (ix * a.stride[1] + kx * a.dilate[1]) as isize - a.pad.left as isize;
                            if ox >= 0 && ox < wo as isize {
                                line[ox as usize] += row[iy * w + ix];
                            }
                        }
                    }
                }
            }
        });
        Tensor::from_vec(out, (n, a.num_filter, ho, wo), &Device::Cpu)?
            .to_device(x.device())?
            .to_dtype(x.dtype())
    }
}

/// `x` resampled one axis at a time through the graph's taps: one gather per tap of the axis's
/// filter (one for nearest, two for linear, four for cubic), weighted and summed.
pub(crate) fn resize(attrs: &ResizeAttrs, x: &Tensor) -> candle_core::Result<Tensor> {
    let out = attrs
        .output_shape(x.dims())
        .ok_or_else(|| candle_core::Error::Msg(format!("cannot resize {:?} to {:?}", x.dims(), attrs.target)))?;
    let mut y = x.clone();
    for (k, &out_len) in out.iter().enumerate() {
        let len = y.dims()[k];
        if attrs.is_identity(k, len, out_len) {
            continue;
        }
        let taps = attrs.taps(k, len, out_len);
        let mut shape = vec![1; out.len()];
        shape[k] = out_len;
        let mut sum: Option<Tensor> = None;
        for j in 0..taps.width {
            let column = |v: &[f64]| -> Vec<f64> { (0..out_len).map(|o| v[o * taps.width + j]).collect() };
            let weights = column(&taps.weight);
            if weights.iter().all(|&w| w == 0.0) {
                continue;
            }
            let index: Vec<u32> = (0..out_len).map(|o| taps.index[o * taps.width + j] as u32).collect();
            let gathered = y.index_select(&Tensor::from_vec(index, out_len, x.device())?, k)?;
            let term = if weights.iter().all(|&w| w == 1.0) {
                gathered
            } else {
                let w: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
                let w = Tensor::from_vec(w, shape.clone(), x.device())?.to_dtype(x.dtype())?;
                gathered.broadcast_mul(&w)?
            };
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
        y = match sum {
            Some(s) => s,
            // Every weight zero (an exclude_outside filter with nothing inside): zeros.
            None => {
                let mut dims = y.dims().to_vec();
                dims[k] = out_len;
                Tensor::zeros(dims, y.dtype(), y.device())?
            }
        };
    }
    y.contiguous()
}
