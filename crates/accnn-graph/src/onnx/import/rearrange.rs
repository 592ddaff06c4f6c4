//! ONNX operators that rearrange values (Pad, Gather, Expand, Tile, DepthToSpace, SpaceToDepth),
//! LogSoftmax, and Cast between float types. Their index arguments must be constants (after
//! folding); a data-dependent one keeps the node opaque.

use super::convert::input;
use super::{Converted, Importer};
use crate::ir::{Op, PadAttrs, PadMode, SpaceDepth};
use crate::onnx::attrs::NodeAttrs;
use crate::onnx::proto::NodeProto;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::Value;

impl Importer {
    /// Softmax and LogSoftmax. Before opset 13 they normalise over all the axes from `axis` on
    /// (the input seen as 2-D), which is the one-axis rule only when the later axes have size 1.
    pub(super) fn softmax(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let legacy = self.opset < 13;
        let axis = a.int("axis").unwrap_or(if legacy { 1 } else { -1 });
        if legacy {
            let x = input(n, 0)?;
            self.value(&x)?;
            let dims = self.known_shape(&x)?;
            let at = crate::ops::resolve_axis(axis, dims.len())?;
            if dims[at + 1..].iter().any(|&d| d != 1) {
                return None;
            }
        }
        let op = if n.op_type == "LogSoftmax" {
            Op::LogSoftmax { axis }
        } else {
            Op::Softmax { axis }
        };
        self.single_input(n, op)
    }

    /// Pad: pads as an attribute (before opset 11) or constant input, optionally on `axes` (opset 18).
    pub(super) fn pad(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let x = input(n, 0)?;
        let (pads, value, axes) = if self.opset < 11 {
            (a.ints("pads")?, a.float("value").unwrap_or(0.0), None)
        } else {
            let pads = self.ints_const(&input(n, 1)?)?.clone();
            let value = match input(n, 2) {
                Some(v) => self.scalar(&v)?,
                None => 0.0,
            };
            let axes = match input(n, 3) {
                Some(v) => Some(self.ints_const(&v)?.clone()),
                None => None,
            };
            (pads, value, axes)
        };
        let mode = match a.string("mode").as_deref().unwrap_or("constant") {
            "constant" => PadMode::Constant(value),
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            _ => return None,
        };
        self.value(&x)?;
        let rank = self.known_shape(&x)?.len();
        let axes: Vec<usize> = match axes {
            Some(axes) => axes
                .iter()
                .map(|&k| crate::ops::resolve_axis(k, rank))
                .collect::<Option<_>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return None;
        }
        let mut per_axis = vec![(0, 0); rank];
        for (k, &axis) in axes.iter().enumerate() {
            per_axis[axis] = (pads[k], pads[k + axes.len()]);
        }
        self.single_input(n, Op::Pad(PadAttrs { pads: per_axis, mode }))
    }

    /// Gather of a computed tensor at constant indices.
    pub(super) fn gather(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let Some(Value::Ints { dims, values }) = self.consts.get(&input(n, 1)?) else {
            return None;
        };
        let op = Op::Gather {
            axis: a.int("axis").unwrap_or(0),
            indices: values.clone(),
            index_dims: dims.clone(),
        };
        self.single_input(n, op)
    }

    /// Expand to a constant shape.
    pub(super) fn expand(&mut self, n: &NodeProto) -> Option<Converted> {
        let shape = self.ints_const(&input(n, 1)?)?.clone();
        self.single_input(n, Op::Expand { shape })
    }

    /// Tile by constant repeats.
    pub(super) fn tile(&mut self, n: &NodeProto) -> Option<Converted> {
        let repeats = self
            .ints_const(&input(n, 1)?)?
            .iter()
            .map(|&r| usize::try_from(r).ok())
            .collect::<Option<Vec<_>>>()?;
        self.single_input(n, Op::Tile { repeats })
    }

    /// DepthToSpace (modes DCR and CRD) and SpaceToDepth.
    pub(super) fn space_depth(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let block = usize::try_from(a.int("blocksize")?).ok().filter(|&b| b > 0)?;
        let s = if n.op_type == "SpaceToDepth" {
            SpaceDepth::ToDepth { block }
        } else {
            let column_row_depth = match a.string("mode").as_deref().unwrap_or("DCR") {
                "DCR" => false,
                "CRD" => true,
                _ => return None,
            };
            SpaceDepth::ToSpace {
                block,
                column_row_depth,
            }
        };
        self.single_input(n, Op::SpaceDepth(s))
    }

    /// A Cast of a float tensor to a float type: the engine computes in one float type, so it is
    /// the identity (casts of shape integers are folded before this).
    pub(super) fn cast(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let to = a.int("to")?;
        let float = [DataType::Float, DataType::Float16, DataType::Double, DataType::Bfloat16]
            .iter()
            .any(|&t| t as i64 == to);
        if !float {
            return None;
        }
        self.single_input(n, Op::Identity)
    }

    /// `op` applied to the node's first input, a computed value (not a stored weight).
    fn single_input(&mut self, n: &NodeProto, op: Op) -> Option<Converted> {
        let x = self.value(&input(n, 0)?)?;
        Some(Converted::new(op, vec![x]))
    }
}
