//! Normalisation by statistics of the input itself (not stored ones, as BatchNorm at inference):
//! ONNX `LayerNormalization` (ConvNeXt, transformers), `InstanceNormalization` (style transfer) and
//! `GroupNormalization`. Each subtracts the mean and divides by `sqrt(variance + epsilon)` over a
//! block of the input, then applies a stored scale and bias.

use crate::error::GraphError;

use super::{Array, EvalContext, ShapeContext, resolve_axis};

/// Which values share a mean and variance, and what the scale and bias are indexed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Statistics over the axes from `axis` on (negative: from the end); scale and bias have the
    /// shape of those axes.
    Layer { axis: i64 },
    /// Statistics per image and channel over the spatial axes; scale and bias per channel.
    Instance,
    /// Statistics per image over `groups` groups of channels; scale and bias per channel.
    Group { groups: usize },
}

/// Attributes of a normalisation; inputs are the data, the scale and (when `bias`) the bias.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormalizationAttrs {
    pub kind: NormKind,
    pub epsilon: f32,
    pub bias: bool,
}

/// How an input of some shape splits for a normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormLayout {
    /// Blocks sharing statistics, and values per block (row-major: block `b` is
    /// `values[b * block .. (b + 1) * block]`).
    pub blocks: usize,
    pub block: usize,
    /// Values per scale entry run: the scale index of flat position `i` is
    /// `(i / run) % scale_len`.
    pub run: usize,
    pub scale_len: usize,
}

impl NormalizationAttrs {
    /// The layout for `shape`, `None` when the shape does not fit the kind (too few axes, channels
    /// that do not split into the groups).
    pub fn layout(&self, shape: &[usize]) -> Option<NormLayout> {
        let total: usize = shape.iter().product();
        match self.kind {
            NormKind::Layer { axis } => {
                let a = resolve_axis(axis, shape.len())?;
                let block: usize = shape[a..].iter().product();
                Some(NormLayout {
                    blocks: total.checked_div(block)?,
                    block,
                    run: 1,
                    scale_len: block,
                })
            }
            NormKind::Instance | NormKind::Group { .. } => {
                if shape.len() < 2 {
                    return None;
                }
                let (channels, spatial) = (shape[1], shape[2..].iter().product::<usize>());
                let groups = match self.kind {
                    NormKind::Group { groups } => groups,
                    _ => channels,
                };
                if groups == 0 || !channels.is_multiple_of(groups) {
                    return None;
                }
                Some(NormLayout {
                    blocks: shape[0] * groups,
                    block: channels / groups * spatial,
                    run: spatial,
                    scale_len: channels,
                })
            }
        }
    }
}

pub(crate) fn output_shapes(attrs: &NormalizationAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let layout = attrs
        .layout(x)
        .ok_or_else(|| cx.error(format!("{:?} does not apply to shape {x:?}", attrs.kind)))?;
    let expected = match attrs.kind {
        NormKind::Layer { axis } => x[resolve_axis(axis, x.len()).unwrap_or(0)..].to_vec(),
        _ => vec![layout.scale_len],
    };
    cx.expect_param(1, &expected, "scale")?;
    if attrs.bias {
        cx.expect_param(2, &expected, "bias")?;
    }
    Ok(vec![x.to_vec()])
}

/// Two passes per block (mean, then the variance of the differences), in `f64`.
pub(crate) fn reference(attrs: &NormalizationAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let layout = attrs
        .layout(&x.shape)
        .ok_or_else(|| cx.error(format!("{:?} does not apply to shape {:?}", attrs.kind, x.shape)))?;
    let scale = cx.param(1);
    let bias = if attrs.bias {
        cx.param(2)
    } else {
        vec![0.0; scale.len()]
    };
    let mut out = vec![0.0; x.data.len()];
    for b in 0..layout.blocks {
        let range = b * layout.block..(b + 1) * layout.block;
        let values = &x.data[range.clone()];
        let n = layout.block as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let inv = 1.0 / (variance + attrs.epsilon as f64).sqrt();
        for i in range {
            let k = (i / layout.run) % layout.scale_len;
            out[i] = (x.data[i] - mean) * inv * scale[k] + bias[k];
        }
    }
    Ok(cx.output(out))
}
