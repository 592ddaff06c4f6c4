//! Convolution, dense and pooling layers as candle tensor ops: the path for CUDA and for bf16/f16,
//! on any device candle runs (on the CPU too, where it is tested against the reference
//! interpreter).
//!
//! candle's `conv2d` takes one padding, stride and dilation for both axes. The decomposed halves
//! need more: `(kh, 1)` and `(1, kw)` kernels with padding on one axis only, and in a strided
//! network strides `(s, 1)` and `(1, s)`. So asymmetric padding is applied as explicit zero rows and
//! columns, unequal dilations become one (the kernel dilated with zeros, or the dilation of an axis
//! of kernel size 1 dropped as meaningless), and unequal strides run at stride 1 followed by keeping
//! every `s`-th row or column (correct, at the cost of computing the dropped positions).

use std::sync::Mutex;

use candle_core::{D, DType, Device, Tensor};

use accnn_graph::ir::{ConvAttrs, PoolAttrs, PoolKind};

/// A convolution on candle's `conv2d`.
pub(crate) struct Conv {
    /// `(F, C / groups, kh, kw)`, dilated with zeros where the two dilations differed.
    weight: Tensor,
    /// `(1, F, 1, 1)`.
    bias: Option<Tensor>,
    attrs: ConvAttrs,
    dilation: usize,
    pub relu: bool,
}

impl Conv {
    /// `weight` is `(F, C / groups, kh, kw)` row-major as stored.
    pub fn new(
        attrs: &ConvAttrs,
        channels: usize,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let [kh, kw] = attrs.kernel;
        let (f, cg) = (attrs.num_filter, channels / attrs.num_group);
        let [dh, dw] = attrs.dilate;
        let (weight, (kh, kw), dilation) = if dh == dw || kw == 1 || kh == 1 {
            // With a kernel of size 1 along an axis, that axis's dilation changes nothing.
            let d = if kh == 1 { dw } else { dh };
            (weight, (kh, kw), d)
        } else {
            let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
            let mut dilated = vec![0f32; f * cg * eh * ew];
            for (fc, taps) in weight.chunks(kh * kw).enumerate() {
                for i in 0..kh {
                    for j in 0..kw {
                        dilated[(fc * eh + i * dh) * ew + j * dw] = taps[i * kw + j];
                    }
                }
            }
            (dilated, (eh, ew), 1)
        };
        let weight = Tensor::from_vec(weight, (f, cg, kh, kw), device)?.to_dtype(dtype)?;
        let bias = bias
            .map(|b| Tensor::from_vec(b, (1, f, 1, 1), device)?.to_dtype(dtype))
            .transpose()?;
        Ok(Conv {
            weight,
            bias,
            attrs: attrs.clone(),
            dilation,
            relu: false,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = self.attrs.pad;
        let uniform = p.top == p.bottom && p.left == p.right && p.top == p.left;
        let (x, padding) = if uniform {
            (x.clone(), p.top)
        } else {
            (
                x.pad_with_zeros(2, p.top, p.bottom)?
                    .pad_with_zeros(3, p.left, p.right)?,
                0,
            )
        };
        let [sh, sw] = self.attrs.stride;
        let stride = if sh == sw { sh } else { 1 };
        let mut y = x.conv2d(&self.weight, padding, stride, self.dilation, self.attrs.num_group)?;
        if sh != sw {
            y = every_nth(&y, 2, sh)?;
            y = every_nth(&y, 3, sw)?;
        }
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if self.relu { y.relu() } else { Ok(y) }
    }
}

/// Every `step`-th index of `dim`, starting at 0.
fn every_nth(x: &Tensor, dim: usize, step: usize) -> candle_core::Result<Tensor> {
    if step == 1 {
        return Ok(x.clone());
    }
    let n = x.dim(dim)? as u32;
    let keep = Tensor::arange_step(0u32, n, step as u32, x.device())?;
    x.index_select(&keep, dim)
}

/// A fully-connected layer as one matrix product.
pub(crate) struct Dense {
    /// `(K, N)`: the stored `(N, K)` weight, transposed once.
    weight_t: Tensor,
    /// `(N,)`.
    bias: Option<Tensor>,
}

impl Dense {
    pub fn new(
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        outputs: usize,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let inputs = weight.len() / outputs.max(1);
        let weight_t = Tensor::from_vec(weight, (outputs, inputs), device)?
            .to_dtype(dtype)?
            .t()?
            .contiguous()?;
        let bias = bias
            .map(|b| Tensor::from_vec(b, outputs, device)?.to_dtype(dtype))
            .transpose()?;
        Ok(Dense { weight_t, bias })
    }

    /// `x` is `(B, K)`, contiguous.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight_t)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Pooling with MXNet's window conventions, on candle's `max_pool2d`/`avg_pool2d`.
pub(crate) struct Pool {
    attrs: PoolAttrs,
    /// An average's per-window divisors `(1, 1, Ho, Wo)` for the last input size: made on the host
    /// and copied to the device once, not on every run.
    divisors: Mutex<Option<((usize, usize), Tensor)>>,
}

impl Pool {
    pub fn new(attrs: PoolAttrs) -> Self {
        Pool {
            attrs,
            divisors: Mutex::new(None),
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = &self.attrs;
        let (_, _, h, w) = x.dims4()?;
        if p.global {
            return match p.kind {
                PoolKind::Max => x.max_keepdim(D::Minus1)?.max_keepdim(D::Minus2),
                PoolKind::Avg => x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2),
                PoolKind::Sum => x.sum_keepdim(D::Minus1)?.sum_keepdim(D::Minus2),
            };
        }
        let (ho, wo) = accnn_graph::shape::pool_output_hw(p, h, w)
            .ok_or_else(|| candle_core::Error::Msg(format!("pooling window does not fit {h}x{w}")))?;
        let ([kh, kw], [sh, sw]) = (p.kernel, p.stride);
        // The input extended to exactly the rows and columns the windows cover: padding before,
        // and after as far as the last window reaches (or cut where it stops short). Cells outside
        // the input never win a maximum, and add nothing to a sum.
        let fill = if p.kind == PoolKind::Max {
            f32::NEG_INFINITY
        } else {
            0.0
        };
        let x = extend(x, 2, p.pad.top, (ho - 1) * sh + kh, fill)?;
        let x = extend(&x, 3, p.pad.left, (wo - 1) * sw + kw, fill)?.contiguous()?;
        if p.kind == PoolKind::Max {
            return x.max_pool2d_with_stride((kh, kw), (sh, sw));
        }
        let sums = (x.avg_pool2d_with_stride((kh, kw), (sh, sw))? * (kh * kw) as f64)?;
        if p.kind == PoolKind::Sum {
            return Ok(sums);
        }
        let mut cached = self.divisors.lock().unwrap_or_else(|e| e.into_inner());
        let divisors = match &*cached {
            Some((hw, t)) if *hw == (h, w) => t.clone(),
            _ => {
                // Each window's divisor, as the CPU kernel counts it.
                let rows: Vec<usize> = (0..ho).map(|o| crate::pool::window(p, 0, o, h).count(p)).collect();
                let cols: Vec<usize> = (0..wo).map(|o| crate::pool::window(p, 1, o, w).count(p)).collect();
                let counts: Vec<f32> = rows
                    .iter()
                    .flat_map(|r| cols.iter().map(move |c| (r * c).max(1) as f32))
                    .collect();
                let t = Tensor::from_vec(counts, (1, 1, ho, wo), x.device())?.to_dtype(x.dtype())?;
                *cached = Some(((h, w), t.clone()));
                t
            }
        };
        sums.broadcast_div(&divisors)
    }
}

/// `x` along `dim` with `before` cells of `fill` in front and cut or filled after to `len` cells.
fn extend(x: &Tensor, dim: usize, before: usize, len: usize, fill: f32) -> candle_core::Result<Tensor> {
    let size = x.dim(dim)?;
    let block = |cells: usize| -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = cells;
        Tensor::full(fill, dims, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    let kept = size.min(len.saturating_sub(before));
    parts.push(x.narrow(dim, 0, kept)?);
    let after = len.saturating_sub(before + kept);
    if after > 0 {
        parts.push(block(after)?);
    }
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    Tensor::cat(&parts, dim)
}
