//! Convolution and pooling as differentiable candle ops.
//!
//! On the CPU a convolution is one matrix product `[W | b] · [cols; 1]` over an im2col tensor laid
//! out channel-major, `(C·kh·kw + 1, B·Ho·Wo)`, made by a custom op whose gradient is col2im. So
//! the weight's and the bias's gradients are matrix products too, with no reduction over the batch:
//! candle's CPU reductions over a leading axis, and its `conv2d` backward (a direct-loop transposed
//! convolution), made a training step several times slower. candle's `conv2d` also takes one
//! padding and stride for both axes, which the `(kh, 1)` and `(1, kw)` halves of a decomposed layer
//! cannot use. Elsewhere (CUDA, grouped convolutions) the im2col tensor is stacked from shifted
//! views of the padded input.

use accnn_graph::ir::{ConvAttrs, PoolAttrs, PoolKind};
use candle_core::{D, DType, Result, Tensor};

/// `x` `(B, C, H, W)` convolved with `weight` `(F, C / groups, kh, kw)`, plus `bias` `(F,)`.
pub(crate) fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, attrs: &ConvAttrs) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let [kh, kw] = attrs.kernel;
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilate;
    let p = attrs.pad;
    let groups = attrs.num_group;
    let f = attrs.num_filter;
    let misfit = || candle_core::Error::Msg(format!("a {kh}x{kw} kernel does not fit a {h}x{w} input"));
    let ho = accnn_graph::shape::window_output(h, p.top + p.bottom, kh, sh, dh).ok_or_else(misfit)?;
    let wo = accnn_graph::shape::window_output(w, p.left + p.right, kw, sw, dw).ok_or_else(misfit)?;
    let taps = kh * kw;
    if groups == 1 && x.device().is_cpu() && x.dtype() == DType::F32 {
        let window = Window {
            channels: c,
            input: [h, w],
            kernel: [kh, kw],
            stride: [sh, sw],
            dilate: [dh, dw],
            before: [p.top, p.left],
            output: [ho, wo],
            ones_row: bias.is_some(),
        };
        let cols = x.contiguous()?.apply_op1(Im2Col(window))?;
        let weight = weight.reshape((f, c * taps))?;
        let weight = match bias {
            Some(bias) => Tensor::cat(&[&weight, &bias.reshape((f, 1))?], 1)?,
            None => weight,
        };
        // (F, B·Ho·Wo) → (B, F, Ho, Wo)
        let y = weight.matmul(&cols)?;
        return y
            .reshape((f, b, ho * wo))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((b, f, ho, wo));
    }
    let padded = pad(x, p.top, p.bottom, p.left, p.right)?;
    let mut views = Vec::with_capacity(taps);
    for i in 0..kh {
        let rows = strided(&padded, 2, i * dh, ho, sh)?;
        for j in 0..kw {
            views.push(strided(&rows, 3, j * dw, wo, sw)?);
        }
    }
    let per_group = c / groups;
    let cols = Tensor::stack(&views, 2)?.reshape((b, groups, per_group * taps, ho * wo))?;
    let weight = weight.reshape((groups, f / groups, per_group * taps))?;
    // (B, G, F/G, Ho·Wo)
    let y = weight
        .unsqueeze(0)?
        .broadcast_as((b, groups, f / groups, per_group * taps))?
        .contiguous()?
        .matmul(&cols)?;
    let y = y.reshape((b, f, ho, wo))?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, f, 1, 1))?),
        None => Ok(y),
    }
}

/// `x` with zero rows and columns around its last two axes.
fn pad(x: &Tensor, top: usize, bottom: usize, left: usize, right: usize) -> Result<Tensor> {
    let x = if top + bottom > 0 {
        x.pad_with_zeros(2, top, bottom)?
    } else {
        x.clone()
    };
    if left + right > 0 {
        x.pad_with_zeros(3, left, right)
    } else {
        Ok(x)
    }
}

/// `count` indices of `dim` from `start`, `step` apart.
fn strided(x: &Tensor, dim: usize, start: usize, count: usize, step: usize) -> Result<Tensor> {
    if step == 1 {
        return x.narrow(dim, start, count);
    }
    let span = (count - 1) * step + 1;
    let x = x.narrow(dim, start, span)?.contiguous()?;
    let keep = Tensor::arange_step(0u32, span as u32, step as u32, x.device())?;
    x.index_select(&keep, dim)
}

/// Pooling as differentiable ops: candle's average pooling where the windows tile the input
/// exactly (its backward needs that), else the maximum or the sum over the stacked window taps (an
/// average divides by [`PoolAttrs::divisor`], the operator's own rule).
/// Maximum pooling never uses candle's `max_pool2d`: its backward scales each window's gradient by
/// the share of the window that holds the maximum (1/4 for a 2x2 window), where it should pass
/// the gradient on whole, to one maximum.
pub(crate) fn pool2d(x: &Tensor, attrs: &PoolAttrs) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if attrs.global {
        return match attrs.kind {
            PoolKind::Max => x.max_keepdim(D::Minus1)?.max_keepdim(D::Minus2),
            PoolKind::Avg => x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2),
            PoolKind::Sum => x.sum_keepdim(D::Minus1)?.sum_keepdim(D::Minus2),
        };
    }
    let (ho, wo) = accnn_graph::shape::pool_output_hw(attrs, h, w)
        .ok_or_else(|| candle_core::Error::Msg(format!("pooling window does not fit {h}x{w}")))?;
    let ([kh, kw], [sh, sw]) = (attrs.kernel, attrs.stride);
    let p = attrs.pad;
    let unpadded = p.top == 0 && p.left == 0 && p.bottom == 0 && p.right == 0;
    let tiles = unpadded && kh == sh && kw == sw && ho * sh == h && wo * sw == w;
    match attrs.kind {
        PoolKind::Avg if tiles => x.avg_pool2d((kh, kw)),
        PoolKind::Sum if tiles => x.avg_pool2d((kh, kw))? * (kh * kw) as f64,
        PoolKind::Max | PoolKind::Avg | PoolKind::Sum => {
            let (bottom, right) = (
                ((ho - 1) * sh + kh).saturating_sub(h + p.top),
                ((wo - 1) * sw + kw).saturating_sub(w + p.left),
            );
            // Shifted so that every input cell is at least 1: zero padding never wins a maximum
            // (and adds nothing to a sum, unshifted).
            let lowest = if attrs.kind == PoolKind::Max {
                x.min_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? - 1.0
            } else {
                0.0
            };
            let shifted = (x - lowest)?;
            let padded = pad(&shifted, p.top, bottom, p.left, right)?;
            let mut taps = Vec::with_capacity(kh * kw);
            for i in 0..kh {
                let rows = strided(&padded, 2, i, ho, sh)?;
                for j in 0..kw {
                    taps.push(strided(&rows, 3, j, wo, sw)?);
                }
            }
            let windows = Tensor::stack(&taps, 4)?;
            match attrs.kind {
                PoolKind::Max => {
                    // The gradient goes to one maximum per window (the first), as the engines
                    // that trained the model route it: candle's `max` would give every tied cell
                    // the whole gradient, and ties are common after an overlapping pooling.
                    let first = windows.argmax_keepdim(4)?;
                    let index = Tensor::arange(0u32, (kh * kw) as u32, x.device())?;
                    let winner = first.broadcast_eq(&index)?.to_dtype(x.dtype())?;
                    (windows * winner)?.sum(4)? + lowest
                }
                PoolKind::Sum => windows.sum(4),
                PoolKind::Avg => {
                    let divisors: Vec<f32> = (0..ho)
                        .flat_map(|oy| (0..wo).map(move |ox| 1.0 / attrs.divisor([oy, ox], [h, w]) as f32))
                        .collect();
                    let scale = Tensor::from_vec(divisors, (1, 1, ho, wo), x.device())?.to_dtype(x.dtype())?;
                    windows.sum(4)?.broadcast_mul(&scale)
                }
            }
        }
    }
}

/// The geometry of a convolution's windows over one input.
#[derive(Clone, Copy, Debug)]
struct Window {
    channels: usize,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilate: [usize; 2],
    /// Zero rows above and columns left of the input.
    before: [usize; 2],
    output: [usize; 2],
    /// A last row of ones, multiplying the bias.
    ones_row: bool,
}

impl Window {
    /// For output index `o` of axis `a` at tap `k`: the input index, if inside the input.
    fn source(&self, a: usize, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[a] + k * self.dilate[a])
            .checked_sub(self.before[a])
            .filter(|&i| i < self.input[a])
    }

    /// Calls `f(tap, out_offset, in_offset, len)` for every run of output positions of one channel
    /// plane that read input cells (the others read padding): `len` outputs from `out_offset`,
    /// reading every `stride[1]`-th input cell from `in_offset`.
    fn runs(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let [kh, kw] = self.kernel;
        let [ho, wo] = self.output;
        let w = self.input[1];
        for i in 0..kh {
            for j in 0..kw {
                // The output columns whose input column lies inside: a contiguous range.
                let Some(first) = (0..wo).find(|&o| self.source(1, o, j).is_some()) else {
                    continue;
                };
                let len = (first..wo).take_while(|&o| self.source(1, o, j).is_some()).count();
                let ix = first * self.stride[1] + j * self.dilate[1] - self.before[1];
                for oy in 0..ho {
                    if let Some(iy) = self.source(0, oy, i) {
                        f(i * kw + j, oy * wo + first, iy * w + ix, len);
                    }
                }
            }
        }
    }

    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    fn plane_in(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn plane_out(&self) -> usize {
        self.output[0] * self.output[1]
    }
}

fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("im2col runs on f32 tensors");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("im2col takes a contiguous tensor"),
    }
}

/// `(B, C, H, W)` → `(C·kh·kw [+ 1], B·Ho·Wo)`, row `c·kh·kw + tap` holding what tap `tap` of
/// channel `c` sees at every output position of every image; its gradient is [`Col2Im`].
struct Im2Col(Window);

impl candle_core::CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let x = contiguous_f32(storage, layout)?;
        let g = self.0;
        let (b, c) = (layout.dims()[0], g.channels);
        let (taps, plane_in, plane_out) = (g.taps(), g.plane_in(), g.plane_out());
        let sw = g.stride[1];
        let rows = c * taps + usize::from(g.ones_row);
        let mut out = vec![0f32; rows * b * plane_out];
        let (channel_rows, ones) = out.split_at_mut(c * taps * b * plane_out);
        ones.fill(1.0);
        channel_rows
            .par_chunks_mut(taps * b * plane_out)
            .enumerate()
            .for_each(|(ch, cols)| {
                for image in 0..b {
                    let plane = &x[(image * c + ch) * plane_in..][..plane_in];
                    g.runs(|tap, o, i, len| {
                        let dst = &mut cols[(tap * b + image) * plane_out + o..][..len];
                        if sw == 1 {
                            dst.copy_from_slice(&plane[i..i + len]);
                        } else {
                            for (k, d) in dst.iter_mut().enumerate() {
                                *d = plane[i + k * sw];
                            }
                        }
                    });
                }
            });
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((rows, b * plane_out)),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let images = arg.dim(0)?;
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0, images))?))
    }
}

/// The transpose of [`Im2Col`] for a batch of `.1` images: every column entry added back to the
/// input cell it was read from (the ones row is dropped).
struct Col2Im(Window, usize);

impl candle_core::CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let cols = contiguous_f32(storage, layout)?;
        let (g, b) = (self.0, self.1);
        let c = g.channels;
        let (taps, plane_in, plane_out) = (g.taps(), g.plane_in(), g.plane_out());
        let sw = g.stride[1];
        let mut out = vec![0f32; b * c * plane_in];
        out.par_chunks_mut(plane_in).enumerate().for_each(|(k, plane)| {
            let (image, ch) = (k / c, k % c);
            g.runs(|tap, o, i, len| {
                let src = &cols[((ch * taps + tap) * b + image) * plane_out + o..][..len];
                for (k, s) in src.iter().enumerate() {
                    plane[i + k * sw] += s;
                }
            });
        });
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((b, c, g.input[0], g.input[1])),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::backprop::GradStore;
    use candle_core::{Device, Var};

    /// The gradient of `x` in `grads`, flattened.
    fn gradient_of(grads: &GradStore, x: &Var) -> Vec<f32> {
        grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn max_pooling_passes_each_windows_gradient_whole_to_its_maximum() {
        // Tiling 1x2 windows (the case candle's own max_pool2d gets wrong by a factor of 2).
        let (b, c, h, w) = (2, 3, 4, 4);
        let n = b * c * h * w;
        let vals: Vec<f32> = (0..n).map(|v| ((v * 37) % 101) as f32).collect();
        let x = Var::from_vec(vals.clone(), (b, c, h, w), &Device::Cpu).unwrap();
        let y = pool2d(x.as_tensor(), &PoolAttrs::new(PoolKind::Max, [1, 2], [1, 2])).unwrap();
        let r: Vec<f32> = (0..b * c * h * 2).map(|v| v as f32 + 1.0).collect();
        let weights = Tensor::from_vec(r.clone(), (b, c, h, 2), &Device::Cpu).unwrap();
        let grads = (y * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g = gradient_of(&grads, &x);
        let mut expected = vec![0f32; n];
        for row in 0..b * c * h {
            for o in 0..2 {
                let left = row * w + 2 * o;
                let k = if vals[left] >= vals[left + 1] { left } else { left + 1 };
                expected[k] += r[row * 2 + o];
            }
        }
        assert_eq!(g, expected);
    }

    #[test]
    fn the_weight_gradient_is_the_correlation_of_the_output_gradient_with_the_input() {
        // ∂/∂W[f,c,i,j] of Σ R·conv(x) = Σ_{b,y,x} R[b,f,y,x] · x[b,c,y+i-1,x+j-1], written out.
        let (b, c, h, w, f) = (2, 3, 5, 6, 4);
        let xs: Vec<f32> = (0..b * c * h * w)
            .map(|v| ((v * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let ws: Vec<f32> = (0..f * c * 9).map(|v| ((v * 13) % 17) as f32 / 8.0 - 1.0).collect();
        let rs: Vec<f32> = (0..b * f * h * w).map(|v| ((v * 7) % 19) as f32 / 9.0 - 1.0).collect();
        let x = Tensor::from_vec(xs.clone(), (b, c, h, w), &Device::Cpu).unwrap();
        let weight = Var::from_vec(ws, (f, c, 3, 3), &Device::Cpu).unwrap();
        let bias = Var::from_vec(vec![0.5f32; f], f, &Device::Cpu).unwrap();
        let y = conv2d(
            &x,
            weight.as_tensor(),
            Some(bias.as_tensor()),
            &ConvAttrs::same([3, 3], f),
        )
        .unwrap();
        let r = Tensor::from_vec(rs.clone(), (b, f, h, w), &Device::Cpu).unwrap();
        let grads = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(weight.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut expected = vec![0f32; f * c * 9];
        for (k, e) in expected.iter_mut().enumerate() {
            let (fi, ci, i, j) = (k / (c * 9), k / 9 % c, k / 3 % 3, k % 3);
            for bi in 0..b {
                for yy in 0..h {
                    for xx in 0..w {
                        let (sy, sx) = ((yy + i).wrapping_sub(1), (xx + j).wrapping_sub(1));
                        if sy < h && sx < w {
                            *e += rs[((bi * f + fi) * h + yy) * w + xx] * xs[((bi * c + ci) * h + sy) * w + sx];
                        }
                    }
                }
            }
        }
        for (a, e) in g.iter().zip(&expected) {
            assert!((a - e).abs() < 1e-4 * (1.0 + e.abs()), "{a} vs {e}");
        }
        // The bias's gradient is the output gradient summed per filter.
        let gb = grads.get(bias.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (fi, g) in gb.iter().enumerate() {
            let sum: f32 = (0..b).flat_map(|bi| rs[(bi * f + fi) * h * w..][..h * w].iter()).sum();
            assert!((g - sum).abs() < 1e-4 * (1.0 + sum.abs()));
        }
    }

    #[test]
    fn padded_overlapping_max_pooling_routes_gradients_to_each_windows_maximum() {
        // 3x3 windows at stride 2 with one cell of padding (ResNet's stem) on a 5x6 input.
        let (h, w) = (5, 6);
        let vals: Vec<f32> = (0..h * w).map(|v| ((v * 37) % 101) as f32 - 50.0).collect();
        let x = Var::from_vec(vals.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
        let attrs = PoolAttrs {
            pad: accnn_graph::ir::Padding2d::symmetric(1, 1),
            ..PoolAttrs::new(PoolKind::Max, [3, 3], [2, 2])
        };
        let y = pool2d(x.as_tensor(), &attrs).unwrap();
        let (ho, wo) = (y.dim(2).unwrap(), y.dim(3).unwrap());
        let r: Vec<f32> = (0..ho * wo).map(|v| v as f32 + 1.0).collect();
        let out = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let weights = Tensor::from_vec(r.clone(), (1, 1, ho, wo), &Device::Cpu).unwrap();
        let grads = (y * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g = gradient_of(&grads, &x);
        let mut expected = vec![0f32; h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let cells = (0..3).flat_map(|i| (0..3).map(move |j| (2 * oy + i, 2 * ox + j)));
                let inside = cells.filter(|&(y, x)| (1..=h).contains(&y) && (1..=w).contains(&x));
                let best = inside
                    .map(|(y, x)| (y - 1) * w + x - 1)
                    .max_by(|&a, &b| vals[a].total_cmp(&vals[b]))
                    .unwrap();
                assert_eq!(out[oy * wo + ox], vals[best]);
                expected[best] += r[oy * wo + ox];
            }
        }
        assert_eq!(g, expected);
    }

    #[test]
    fn a_window_of_tied_maxima_passes_its_gradient_to_one_of_them() {
        let x = Var::from_vec(vec![3f32, 3.0, 1.0, 3.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = pool2d(x.as_tensor(), &PoolAttrs::new(PoolKind::Max, [2, 2], [2, 2])).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![3.0]);
        let grads = (y * 5.0).unwrap().sum_all().unwrap().backward().unwrap();
        let g = gradient_of(&grads, &x);
        assert_eq!(g, vec![5.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn padded_average_pooling_spreads_each_windows_gradient_over_its_counted_cells() {
        let (h, w) = (4, 5);
        let vals: Vec<f32> = (0..h * w).map(|v| ((v * 37) % 11) as f32).collect();
        let x = Var::from_vec(vals, (1, 1, h, w), &Device::Cpu).unwrap();
        for include in [false, true] {
            let attrs = PoolAttrs {
                pad: accnn_graph::ir::Padding2d::symmetric(1, 1),
                count_include_pad: include,
                ..PoolAttrs::new(PoolKind::Avg, [3, 3], [2, 2])
            };
            let y = pool2d(x.as_tensor(), &attrs).unwrap();
            let (ho, wo) = (y.dim(2).unwrap(), y.dim(3).unwrap());
            let r: Vec<f32> = (0..ho * wo).map(|v| v as f32 + 1.0).collect();
            let weights = Tensor::from_vec(r.clone(), (1, 1, ho, wo), &Device::Cpu).unwrap();
            let grads = (y * weights).unwrap().sum_all().unwrap().backward().unwrap();
            let g = gradient_of(&grads, &x);
            let mut expected = vec![0f32; h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let share = r[oy * wo + ox] / attrs.divisor([oy, ox], [h, w]) as f32;
                    for i in 0..3 {
                        for j in 0..3 {
                            let (yy, xx) = ((2 * oy + i).wrapping_sub(1), (2 * ox + j).wrapping_sub(1));
                            if yy < h && xx < w {
                                expected[yy * w + xx] += share;
                            }
                        }
                    }
                }
            }
            for (a, e) in g.iter().zip(&expected) {
                assert!((a - e).abs() < 1e-5, "{include}: {g:?} vs {expected:?}");
            }
        }
    }
}
