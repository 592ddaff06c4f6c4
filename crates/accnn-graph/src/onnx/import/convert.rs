//! How each ONNX operator maps onto accnn's IR ([`crate::ops`]): one method per operator family.
//! A node that does not fit (a non-constant weight, an unsupported attribute value) maps to `None`
//! and is kept as an opaque node.

use std::collections::HashMap;

use super::{Converted, Importer};
use crate::error::GraphError;
use crate::ir::{
    Activation, BatchNormAttrs, BinaryOp, ConvAttrs, Entry, FcAttrs, Op, Padding2d, PoolAttrs, PoolConvention,
    PoolKind, ReduceAttrs, ReduceOp,
};
use crate::onnx::attrs::NodeAttrs;
use crate::onnx::proto::NodeProto;
use crate::ops::activation::{SELU_ALPHA, SELU_GAMMA};
use crate::tensor::Tensor;

type Conversion = Result<Option<Converted>, GraphError>;

/// The elementwise function an ONNX operator of one input computes, if it is one.
pub(super) fn unary(op_type: &str, a: &NodeAttrs) -> Option<Activation> {
    Some(match op_type {
        "Relu" => Activation::Relu,
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        "Softplus" => Activation::SoftRelu,
        "Softsign" => Activation::SoftSign,
        "LeakyRelu" => Activation::LeakyRelu {
            slope: a.float("alpha").unwrap_or(0.01),
        },
        "Exp" => Activation::Exp,
        "Log" => Activation::Log,
        "Neg" => Activation::Neg,
        "Abs" => Activation::Abs,
        "Sqrt" => Activation::Sqrt,
        "Reciprocal" => Activation::Reciprocal,
        "HardSigmoid" => Activation::HardSigmoid {
            alpha: a.float("alpha").unwrap_or(0.2),
            beta: a.float("beta").unwrap_or(0.5),
        },
        "HardSwish" => Activation::HardSwish,
        "Elu" => Activation::Elu {
            alpha: a.float("alpha").unwrap_or(1.0),
        },
        "Selu" => Activation::Selu {
            alpha: a.float("alpha").unwrap_or(SELU_ALPHA),
            gamma: a.float("gamma").unwrap_or(SELU_GAMMA),
        },
        "Mish" => Activation::Mish,
        "Erf" => Activation::Erf,
        "Gelu" => Activation::Gelu {
            tanh: a.string("approximate").as_deref() == Some("tanh"),
        },
        "Not" => Activation::Not,
        _ => return None,
    })
}

/// Input `k` of `n`, when present.
pub(super) fn input(n: &NodeProto, k: usize) -> Option<String> {
    n.input.get(k).filter(|s| !s.is_empty()).cloned()
}

impl Importer {
    /// The IR node ONNX node `n` becomes, `None` when accnn keeps it opaque. `consumers` maps tensor
    /// names to the indices in `all` of the nodes reading them.
    pub(super) fn convert(
        &mut self,
        n: &NodeProto,
        label: &str,
        consumers: &HashMap<String, Vec<usize>>,
        all: &[NodeProto],
    ) -> Conversion {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Ok(None);
        }
        let a = NodeAttrs { node: n, label };
        if let Some(f) = unary(&n.op_type, &a) {
            return Ok(self.single(n, Op::Activation(f)));
        }
        if let Some(op) = ReduceOp::from_onnx(&n.op_type) {
            return Ok(self.reduce(n, &a, op));
        }
        match n.op_type.as_str() {
            "Conv" => self.conv(n, &a),
            "Gemm" => self.gemm(n, &a),
            "MatMul" => Ok(self.matmul(n, consumers, all).or_else(|| self.matmul_of_values(n))),
            "Slice" => Ok(self.slice(n, &a)),
            "Split" => Ok(self.split(n, &a)),
            "Squeeze" | "Unsqueeze" => Ok(self.squeeze(n, &a)),
            "Clip" => Ok(self.clip(n, &a)),
            "MaxPool" | "AveragePool" => self.pool(n, &a),
            "GlobalAveragePool" | "GlobalMaxPool" => Ok(self.global_pool(n)),
            "Flatten" => {
                let axis = a.int("axis").unwrap_or(1);
                Ok(self.single(n, Op::Flatten { axis }))
            }
            "Reshape" => self.reshape(n, &a),
            "BatchNormalization" => Ok(self.batch_norm(n, &a)),
            "Concat" => Ok(self.concat(n, &a)),
            "Softmax" | "LogSoftmax" => Ok(self.softmax(n, &a)),
            "Pad" => Ok(self.pad(n, &a)),
            "Gather" => Ok(self.gather(n, &a)),
            "Expand" => Ok(self.expand(n)),
            "Tile" => Ok(self.tile(n)),
            "DepthToSpace" | "SpaceToDepth" => Ok(self.space_depth(n, &a)),
            "Cast" => Ok(self.cast(n, &a)),
            "Dropout" => Ok(self.dropout(n, &a, consumers)),
            "Identity" => Ok(self.single(n, Op::Identity)),
            "Where" => Ok(self.select(n)),
            "Sum" => Ok(self.binary(n, BinaryOp::Add)),
            "Transpose" => Ok(self.transpose(n, &a)),
            "LRN" => self.lrn(n, &a),
            "ConvTranspose" => self.conv_transpose(n, &a),
            "Resize" => self.resize(n, &a),
            "Upsample" => self.upsample(n, &a),
            "LayerNormalization" | "InstanceNormalization" | "GroupNormalization" => {
                self.normalization(n, &a, consumers)
            }
            op_type => Ok(BinaryOp::from_onnx(op_type).and_then(|op| self.binary(n, op))),
        }
    }

    /// `op` applied to the node's first input.
    fn single(&mut self, n: &NodeProto, op: Op) -> Option<Converted> {
        let x = self.value(&input(n, 0)?)?;
        Some(Converted::new(op, vec![x]))
    }

    fn conv(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let (Some(x), Some(w)) = (input(n, 0), input(n, 1)) else {
            return Ok(None);
        };
        let Some(s) = self
            .float_const(&w)
            .map(|t| t.shape().to_vec())
            .filter(|s| s.len() == 4)
        else {
            return Ok(None);
        };
        let bias = input(n, 2);
        if bias.as_ref().is_some_and(|b| self.float_const(b).is_none()) {
            return Ok(None);
        }
        let conv = ConvAttrs {
            kernel: a.pair("kernel_shape", [s[2], s[3]])?,
            stride: a.pair("strides", [1, 1])?,
            dilate: a.pair("dilations", [1, 1])?,
            pad: padding(a)?,
            num_filter: s[0],
            num_group: usize::try_from(a.int("group").unwrap_or(1))
                .ok()
                .filter(|&g| g > 0)
                .ok_or_else(|| a.err("group must be positive"))?,
            no_bias: bias.is_none(),
        };
        let same_pad = auto_pad(a)?;
        let Some(xe) = self.value(&x) else { return Ok(None) };
        let mut inputs = vec![xe, self.value(&w).expect("checked float constant")];
        if let Some(b) = bias {
            inputs.push(self.value(&b).expect("checked float constant"));
        }
        let mut c = Converted::new(Op::Convolution(conv), inputs);
        c.same_pad = same_pad;
        Ok(Some(c))
    }

    /// `alpha * x * B' + beta * C` as a fully-connected layer with a constant `B` and `C`.
    fn gemm(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let (Some(x), Some(b)) = (input(n, 0), input(n, 1)) else {
            return Ok(None);
        };
        if a.int("transA").unwrap_or(0) != 0 {
            return Ok(None);
        }
        let alpha = a.float("alpha").unwrap_or(1.0);
        let beta = a.float("beta").unwrap_or(1.0);
        let trans_b = a.int("transB").unwrap_or(0) != 0;
        let Some(bt) = self.float_const(&b).filter(|t| t.shape().len() == 2) else {
            return Ok(None);
        };
        let outputs = bt.shape()[usize::from(!trans_b)];
        // An unchanged weight is taken over by `self.weight` as it is: copying it first would
        // double a large FC layer's memory while the model loads (VGG-16's fc6 is 411 MB).
        let changed = !trans_b || alpha != 1.0;
        let weight = match (changed, trans_b) {
            (false, _) => None,
            (true, true) => Some(scaled(bt.clone(), alpha)),
            (true, false) => Some(scaled(transpose(bt), alpha)),
        };
        let bias = match input(n, 2) {
            None => None,
            Some(c) => {
                let Some(t) = self.float_const(&c).cloned() else {
                    return Ok(None);
                };
                let Some(v) = bias_vector(&t, outputs) else {
                    return Ok(None);
                };
                Some((c, scaled(v, beta), t.shape() != [outputs] || beta != 1.0))
            }
        };
        let Some(xe) = self.value(&x) else { return Ok(None) };
        let weight = match weight {
            Some(w) => self.weight(&b, w, true),
            None => self.value(&b).expect("weights are float constants"),
        };
        let mut inputs = vec![xe, weight];
        let no_bias = bias.is_none();
        if let Some((name, v, changed)) = bias {
            inputs.push(self.weight(&name, v, changed));
        }
        let fc = FcAttrs {
            num_hidden: outputs,
            no_bias,
            flatten: true,
        };
        Ok(Some(Converted::new(Op::FullyConnected(fc), inputs)))
    }

    /// `x * B` with a constant `B`, merged with the `Add` of a constant bias that is its only reader.
    fn matmul(
        &mut self,
        n: &NodeProto,
        consumers: &HashMap<String, Vec<usize>>,
        all: &[NodeProto],
    ) -> Option<Converted> {
        let (x, b) = (input(n, 0)?, input(n, 1)?);
        let weight = transpose(self.float_const(&b).filter(|t| t.shape().len() == 2)?);
        let outputs = weight.shape()[0];
        let out = n.output.first().cloned().unwrap_or_default();
        let add = consumers.get(&out).and_then(|c| match c.as_slice() {
            // (A graph output counts as a reader at index usize::MAX.)
            [only]
                if all
                    .get(*only)
                    .is_some_and(|a| a.op_type == "Add" && a.domain.is_empty()) =>
            {
                let add = &all[*only];
                let other = add.input.iter().find(|i| **i != out)?;
                let t = self.float_const(other)?;
                let v = bias_vector(t, outputs).filter(|_| t.shape().last() == Some(&outputs))?;
                Some((*only, other.clone(), v, t.shape() != [outputs], add.output.clone()))
            }
            _ => None,
        });
        let xe = self.value(&x)?;
        let mut inputs = vec![xe, self.weight(&b, weight, true)];
        let fc = FcAttrs {
            num_hidden: outputs,
            no_bias: add.is_none(),
            flatten: false,
        };
        let mut c = Converted::new(Op::FullyConnected(fc), Vec::new());
        if let Some((idx, name, v, changed, add_outputs)) = add {
            inputs.push(self.weight(&name, v, changed));
            c.merged.push(idx);
            c.outputs = Some(add_outputs);
        }
        c.inputs = inputs;
        Some(c)
    }

    /// Bounds as attributes before opset 11, as constant inputs since.
    fn clip(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let (min, max) = if self.opset < 11 {
            (a.float("min"), a.float("max"))
        } else {
            let bound = |k: usize| -> Result<Option<f32>, ()> {
                match input(n, k) {
                    None => Ok(None),
                    Some(name) => self.scalar(&name).map(Some).ok_or(()),
                }
            };
            (bound(1).ok()?, bound(2).ok()?)
        };
        let clip = Activation::Clip {
            min: min.unwrap_or(f32::NEG_INFINITY),
            max: max.unwrap_or(f32::INFINITY),
        };
        self.single(n, Op::Activation(clip))
    }

    fn pool(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let Some(kernel) = a.ints("kernel_shape").filter(|k| k.len() == 2) else {
            return Ok(None);
        };
        if n.output.get(1).is_some_and(|o| !o.is_empty()) {
            return Ok(None);
        }
        if a.pair("dilations", [1, 1])? != [1, 1] || a.int("storage_order").unwrap_or(0) != 0 {
            return Ok(None);
        }
        let pool = PoolAttrs {
            kind: if n.op_type == "MaxPool" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            },
            kernel: a.pair("kernel_shape", [kernel[0] as usize, kernel[1] as usize])?,
            stride: a.pair("strides", [1, 1])?,
            pad: padding(a)?,
            global: false,
            convention: if a.int("ceil_mode").unwrap_or(0) != 0 {
                PoolConvention::Ceil
            } else {
                PoolConvention::Valid
            },
            count_include_pad: a.int("count_include_pad").unwrap_or(0) != 0,
        };
        let same_pad = auto_pad(a)?;
        let mut c = self.single(n, Op::Pooling(pool));
        if let Some(c) = &mut c {
            c.same_pad = same_pad;
        }
        Ok(c)
    }

    fn global_pool(&mut self, n: &NodeProto) -> Option<Converted> {
        let pool = PoolAttrs {
            kind: if n.op_type == "GlobalMaxPool" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            },
            kernel: [1, 1],
            stride: [1, 1],
            pad: Padding2d::default(),
            global: true,
            convention: PoolConvention::Valid,
            count_include_pad: false,
        };
        self.single(n, Op::Pooling(pool))
    }

    /// A Reshape to a constant target.
    fn reshape(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let Some(shape) = input(n, 1).and_then(|s| self.ints_const(&s).cloned()) else {
            return Ok(None);
        };
        if a.int("allowzero").unwrap_or(0) != 0 && shape.contains(&0) {
            return Ok(None);
        }
        if shape.iter().any(|&d| d < -1) {
            return Err(a.err(format!("Reshape target {shape:?} holds a value below -1")));
        }
        // A target that repeats the batch it was read (or folded from `Shape`) for keeps the batch
        // instead (code 0), so that the model runs at any batch, as exporters meant.
        let mut shape = shape;
        let batch = self.data_shape.as_ref().and_then(|s| s.first().copied());
        let input_batch = input(n, 0)
            .and_then(|x| self.value(&x))
            .and_then(|e| self.shapes.known(e).and_then(|s| s.first().copied()));
        if let (Some(b), Some(first)) = (batch, shape.first_mut())
            && input_batch == Some(b)
            && *first == b as i64
        {
            *first = 0;
        }
        Ok(self.single(n, Op::Reshape { shape }))
    }

    /// Inference-mode BatchNormalization with constant statistics.
    fn batch_norm(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        if a.int("training_mode").unwrap_or(0) != 0 || n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return None;
        }
        let params: Vec<String> = (1..5).filter_map(|k| input(n, k)).collect();
        if params.len() != 4 || params.iter().any(|p| self.float_const(p).is_none()) {
            return None;
        }
        let x = self.value(&input(n, 0)?)?;
        let mut inputs = vec![x];
        inputs.extend(params.iter().map(|p| self.value(p).expect("checked float constant")));
        let attrs = BatchNormAttrs {
            eps: a.float("epsilon").unwrap_or(1e-5) as f64,
            fix_gamma: false,
            axis: 1,
        };
        Some(Converted::new(Op::BatchNorm(attrs), inputs))
    }

    /// Dropout at inference: the identity. In training mode (attribute before opset 12, a constant
    /// input since) or with its mask read, it is kept opaque.
    /// Dropout at inference; its mask output, when named, must be unread.
    fn dropout(&mut self, n: &NodeProto, a: &NodeAttrs, consumers: &HashMap<String, Vec<usize>>) -> Option<Converted> {
        let mask_read = n
            .output
            .get(1)
            .is_some_and(|o| !o.is_empty() && consumers.contains_key(o));
        if mask_read || a.int("is_test") == Some(0) {
            return None;
        }
        if let Some(mode) = input(n, 2) {
            let training = match self.ints_const(&mode) {
                Some(v) => v.iter().any(|&b| b != 0),
                None => self.scalar(&mode).is_none_or(|b| b != 0.0),
            };
            if training {
                return None;
            }
        }
        self.single(n, Op::Dropout)
    }

    fn transpose(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let perm = match a.ints("perm") {
            Some(p) => p.iter().map(|&x| usize::try_from(x).ok()).collect::<Option<Vec<_>>>()?,
            // The default reverses the axes, which needs the input's rank.
            None => {
                let x = self.value(&input(n, 0)?)?;
                let rank = self.shapes.known(x)?.len();
                (0..rank).rev().collect()
            }
        };
        self.single(n, Op::Transpose { perm })
    }

    /// The product of two computed tensors.
    fn matmul_of_values(&mut self, n: &NodeProto) -> Option<Converted> {
        let (a, b) = (input(n, 0)?, input(n, 1)?);
        if self.float_const(&b).is_some() {
            return None;
        }
        let (ae, be) = (self.value(&a)?, self.value(&b)?);
        Some(Converted::new(Op::MatMul, vec![ae, be]))
    }

    /// A Slice with constant bounds (attributes before opset 10).
    fn slice(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let ints = |s: &Self, k: usize| -> Option<Option<Vec<i64>>> {
            match input(n, k) {
                Some(name) => Some(Some(s.ints_const(&name)?.clone())),
                None => Some(None),
            }
        };
        let attrs = if self.opset < 10 {
            crate::ir::SliceAttrs {
                starts: a.ints("starts")?,
                ends: a.ints("ends")?,
                axes: a.ints("axes"),
                steps: None,
            }
        } else {
            crate::ir::SliceAttrs {
                starts: ints(self, 1)??,
                ends: ints(self, 2)??,
                axes: ints(self, 3)?,
                steps: ints(self, 4)?,
            }
        };
        self.single(n, Op::Slice(attrs))
    }

    /// A Split becomes one Slice per output: sizes from the `split` attribute (before opset 13) or
    /// constant input, else equal parts (the last one smaller, opset 18's `num_outputs`).
    fn split(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let x_name = input(n, 0)?;
        if n.output.is_empty() {
            return None;
        }
        let x = self.value(&x_name)?;
        let dims = self.known_shape(&x_name)?;
        let axis = a.int("axis").unwrap_or(0);
        let dim = dims[crate::ops::resolve_axis(axis, dims.len())?] as i64;
        let parts = n.output.len() as i64;
        let sizes = match (self.opset < 13, input(n, 1)) {
            (true, _) => a.ints("split"),
            (false, Some(name)) => Some(self.ints_const(&name)?.clone()),
            (false, None) => None,
        };
        let sizes = match sizes {
            Some(s) => s,
            None => {
                let chunk = (dim + parts - 1) / parts.max(1);
                (0..parts).map(|k| chunk.min(dim - chunk * k).max(0)).collect()
            }
        };
        if sizes.len() != n.output.len() || sizes.iter().any(|&s| s < 0) || sizes.iter().sum::<i64>() != dim {
            return None;
        }
        let mut start = 0;
        let mut parts: Vec<Converted> = sizes
            .iter()
            .zip(&n.output)
            .map(|(&size, out)| {
                let slice = crate::ir::SliceAttrs {
                    starts: vec![start],
                    ends: vec![start + size],
                    axes: Some(vec![axis]),
                    steps: None,
                };
                start += size;
                let mut c = Converted::new(Op::Slice(slice), vec![x]);
                c.outputs = Some(vec![out.clone()]);
                c
            })
            .collect();
        let mut first = parts.remove(0);
        first.also = parts;
        Some(first)
    }

    /// Squeeze and Unsqueeze with constant axes (attributes before opset 13).
    fn squeeze(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let axes = if self.opset < 13 {
            a.ints("axes")
        } else {
            match input(n, 1) {
                Some(name) => Some(self.ints_const(&name)?.clone()),
                None => None,
            }
        };
        let op = if n.op_type == "Unsqueeze" {
            Op::Unsqueeze { axes: axes? }
        } else {
            Op::Squeeze { axes }
        };
        self.single(n, op)
    }

    /// A reduction; its axes are an attribute, or from opset 18 (13 for ReduceSum) a constant input.
    fn reduce(&mut self, n: &NodeProto, a: &NodeAttrs, op: ReduceOp) -> Option<Converted> {
        let axes_are_input = self.opset >= 18 || (op == ReduceOp::Sum && self.opset >= 13);
        let axes = if axes_are_input {
            match input(n, 1) {
                Some(name) => Some(self.ints_const(&name)?.clone()),
                None => None,
            }
        } else {
            a.ints("axes")
        };
        let axes = axes.filter(|v| !v.is_empty());
        if axes.is_none() && a.int("noop_with_empty_axes").unwrap_or(0) != 0 {
            return self.single(n, Op::Identity);
        }
        let attrs = ReduceAttrs {
            op,
            axes,
            keep_dims: a.int("keepdims").unwrap_or(1) != 0,
        };
        self.single(n, Op::Reduce(attrs))
    }

    fn lrn(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let size = a
            .int("size")
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s > 0)
            .ok_or_else(|| a.err("LRN needs a positive size"))?;
        let attrs = crate::ir::LrnAttrs {
            size,
            alpha: a.float("alpha").unwrap_or(1e-4),
            beta: a.float("beta").unwrap_or(0.75),
            bias: a.float("bias").unwrap_or(1.0),
        };
        Ok(self.single(n, Op::Lrn(attrs)))
    }

    /// Two-input elementwise operators, with numpy broadcasting (Min and Max of more inputs stay
    /// opaque).
    fn binary(&mut self, n: &NodeProto, op: BinaryOp) -> Option<Converted> {
        let names: Vec<String> = n.input.iter().filter(|s| !s.is_empty()).cloned().collect();
        // Sum, Max and Min take any number of inputs; one is a copy.
        let variadic = matches!(n.op_type.as_str(), "Sum" | "Max" | "Min");
        if names.len() != n.input.len() || names.len() < 2 && !variadic || names.len() > 2 && !variadic {
            return None;
        }
        let inputs: Vec<Entry> = names.iter().map(|x| self.operand(x)).collect::<Option<_>>()?;
        let op = if inputs.len() == 1 {
            Op::Identity
        } else {
            Op::Binary { op, broadcast: true }
        };
        Some(Converted::new(op, inputs))
    }

    /// `Where(condition, x, y)` on values (on constants it is computed as the model is read).
    fn select(&mut self, n: &NodeProto) -> Option<Converted> {
        if n.input.len() != 3 {
            return None;
        }
        let inputs: Vec<Entry> = n.input.iter().map(|x| self.operand(x)).collect::<Option<_>>()?;
        Some(Converted::new(Op::Where, inputs))
    }

    /// Concat (a negative axis counts from the end).
    fn concat(&mut self, n: &NodeProto, a: &NodeAttrs) -> Option<Converted> {
        let axis = a.int("axis")?;
        let mut inputs = Vec::new();
        for name in n.input.iter().filter(|s| !s.is_empty()) {
            inputs.push(self.value(name)?);
        }
        Some(Converted::new(Op::Concat { axis }, inputs))
    }
}

/// ONNX `pads` (`[top, left, bottom, right]`) as a padding.
pub(super) fn padding(a: &NodeAttrs) -> Result<Padding2d, GraphError> {
    let pads = a.pads()?;
    Ok(Padding2d {
        top: pads[0],
        left: pads[1],
        bottom: pads[2],
        right: pads[3],
    })
}

/// `Some(lower)` for `auto_pad = SAME_UPPER / SAME_LOWER`, `None` for explicit padding.
fn auto_pad(a: &NodeAttrs) -> Result<Option<bool>, GraphError> {
    match a.string("auto_pad").as_deref() {
        None | Some("NOTSET") | Some("") => Ok(None),
        Some("VALID") => {
            if a.pads()? != [0; 4] {
                return Err(a.err("auto_pad VALID with explicit pads"));
            }
            Ok(None)
        }
        Some("SAME_UPPER") => Ok(Some(false)),
        Some("SAME_LOWER") => Ok(Some(true)),
        Some(other) => Err(a.err(format!("unknown auto_pad '{other}'"))),
    }
}

fn transpose(t: &Tensor) -> Tensor {
    let (r, c) = (t.shape()[0], t.shape()[1]);
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = t.data()[i * c + j];
        }
    }
    Tensor::new(vec![c, r], out).expect("same element count")
}

fn scaled(mut t: Tensor, factor: f32) -> Tensor {
    if factor != 1.0 {
        t.data_mut().iter_mut().for_each(|v| *v *= factor);
    }
    t
}

/// A bias broadcastable to `n` outputs (`[n]`, `[1, n]`, a scalar) as a vector of `n`.
fn bias_vector(t: &Tensor, n: usize) -> Option<Tensor> {
    let len = t.len();
    let leading_ones = t.shape().iter().rev().skip(1).all(|&d| d == 1);
    match len {
        1 => Some(Tensor::new(vec![n], vec![t.data()[0]; n]).expect("n elements")),
        l if l == n && leading_ones => Some(Tensor::new(vec![n], t.data().to_vec()).expect("n elements")),
        _ => None,
    }
}
