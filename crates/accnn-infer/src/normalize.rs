//! Layer, instance and group normalisation as tensor ops: the input viewed as
//! `(blocks, block)`, each row centred and scaled by its own statistics, then the stored scale and
//! bias broadcast back over the input's shape.

use accnn_graph::ir::{NormKind, NormalizationAttrs};
use candle_core::{DType, Device, Tensor};

pub(crate) struct Normalize {
    attrs: NormalizationAttrs,
    scale: Tensor,
    bias: Option<Tensor>,
}

impl Normalize {
    pub(crate) fn new(
        attrs: NormalizationAttrs,
        scale: Vec<f32>,
        bias: Option<Vec<f32>>,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let vector = |v: Vec<f32>| -> candle_core::Result<Tensor> {
            let n = v.len();
            Tensor::from_vec(v, n, device)?.to_dtype(dtype)
        };
        Ok(Normalize {
            attrs,
            scale: vector(scale)?,
            bias: bias.map(vector).transpose()?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let layout = self
            .attrs
            .layout(&dims)
            .ok_or_else(|| candle_core::Error::Msg(format!("{:?} does not apply to {dims:?}", self.attrs.kind)))?;
        let rows = x.reshape((layout.blocks, layout.block))?;
        let centred = rows.broadcast_sub(&rows.mean_keepdim(1)?)?;
        let variance = centred.sqr()?.mean_keepdim(1)?;
        let normalised = centred
            .broadcast_div(&(variance + self.attrs.epsilon as f64)?.sqrt()?)?
            .reshape(dims.as_slice())?;
        // The scale's shape within the input's: trailing axes for layer norm, channels otherwise.
        let mut shape = vec![1; dims.len()];
        match self.attrs.kind {
            NormKind::Layer { axis } => {
                // (`layout` succeeded, so the axis is in range.)
                let first = accnn_graph::ops::resolve_axis(axis, dims.len()).unwrap_or(0);
                shape[first..].copy_from_slice(&dims[first..]);
            }
            NormKind::Instance | NormKind::Group { .. } => shape[1] = dims[1],
        }
        let mut y = normalised.broadcast_mul(&self.scale.reshape(shape.as_slice())?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.reshape(shape.as_slice())?)?;
        }
        Ok(y)
    }
}
