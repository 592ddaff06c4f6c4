//! ONNX's normalisations by the input's own statistics: `LayerNormalization` (opset 17),
//! `InstanceNormalization` and `GroupNormalization` (opset 18; per-group scale and bias until 21,
//! spread here to every channel of the group). Kept opaque when the scale or bias is computed, or
//! when the mean and inverse-deviation outputs of layer norm are read.

use std::collections::HashMap;

use super::convert::input;
use super::{Converted, Importer};
use crate::error::GraphError;
use crate::ir::{NormKind, NormalizationAttrs, Op};
use crate::onnx::attrs::NodeAttrs;
use crate::onnx::proto::NodeProto;
use crate::tensor::Tensor;

type Conversion = Result<Option<Converted>, GraphError>;

impl Importer {
    pub(super) fn normalization(
        &mut self,
        n: &NodeProto,
        a: &NodeAttrs,
        consumers: &HashMap<String, Vec<usize>>,
    ) -> Conversion {
        if n.output
            .iter()
            .skip(1)
            .any(|o| !o.is_empty() && consumers.contains_key(o))
        {
            return Ok(None);
        }
        let kind = match n.op_type.as_str() {
            "LayerNormalization" => NormKind::Layer {
                axis: a.int("axis").unwrap_or(-1),
            },
            "InstanceNormalization" => NormKind::Instance,
            _ => {
                let groups = a
                    .int("num_groups")
                    .and_then(|g| usize::try_from(g).ok())
                    .filter(|&g| g > 0)
                    .ok_or_else(|| a.err("GroupNormalization needs a positive num_groups"))?;
                NormKind::Group { groups }
            }
        };
        let (Some(x), Some(scale)) = (input(n, 0), input(n, 1)) else {
            return Ok(None);
        };
        let bias = input(n, 2);
        let Some(scale_t) = self.float_const(&scale).cloned() else {
            return Ok(None);
        };
        let bias_t = match &bias {
            Some(b) => match self.float_const(b) {
                Some(t) => Some(t.clone()),
                None => return Ok(None),
            },
            None => None,
        };
        let Some(xe) = self.value(&x) else { return Ok(None) };
        let attrs = NormalizationAttrs {
            kind,
            epsilon: a.float("epsilon").unwrap_or(1e-5),
            bias: bias.is_some(),
        };
        // Stored weights get the exact shape the operator checks: the normalised axes for layer
        // norm, one value per channel otherwise (group values spread over their channels).
        let Some(shape) = self.shapes.known(xe).map(<[usize]>::to_vec) else {
            return Ok(None);
        };
        let Some(layout) = attrs.layout(&shape) else {
            return Err(a.err(format!("{kind:?} does not apply to input shape {shape:?}")));
        };
        let target: Vec<usize> = match kind {
            NormKind::Layer { axis } => shape[crate::ops::resolve_axis(axis, shape.len()).unwrap_or(0)..].to_vec(),
            _ => vec![layout.scale_len],
        };
        let mut inputs = vec![xe];
        for (name, t) in std::iter::once((scale, scale_t)).chain(bias.zip(bias_t)) {
            let Some(fitted) = fit(&t, &target) else {
                return Err(a.err(format!(
                    "'{name}' of shape {:?} does not fit the normalised shape {target:?}",
                    t.shape()
                )));
            };
            let changed = fitted.shape() != t.shape();
            inputs.push(self.weight(&name, fitted, changed));
        }
        Ok(Some(Converted::new(Op::Normalization(attrs), inputs)))
    }
}

/// `t` as a tensor of shape `target`: the same values, a broadcast single value, or per-group
/// values repeated over each group's channels.
fn fit(t: &Tensor, target: &[usize]) -> Option<Tensor> {
    let want: usize = target.iter().product();
    let values: Vec<f32> = match t.len() {
        l if l == want => t.data().to_vec(),
        1 => vec![t.data()[0]; want],
        l if target.len() == 1 && l > 0 && want.is_multiple_of(l) => {
            let per = want / l;
            t.data().iter().flat_map(|&v| std::iter::repeat_n(v, per)).collect()
        }
        _ => return None,
    };
    Tensor::new(target.to_vec(), values).ok()
}
