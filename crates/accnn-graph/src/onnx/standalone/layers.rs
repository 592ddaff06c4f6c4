//! The operators written as a chain of ONNX nodes, or with inputs and attributes worked out from
//! the IR's: dense layers, activations, pooling, BatchNorm, logic, resizing and normalisation.

use super::{Writer, err, to};
use crate::error::GraphError;
use crate::ir::{Activation, BatchNormAttrs, BinaryOp, Entry, FcAttrs, Node, PoolAttrs, PoolConvention, PoolKind};
use crate::onnx::attrs;
use crate::onnx::export::window_attributes;
use crate::onnx::proto::AttributeProto;
use crate::onnx::proto::tensor_proto::DataType;
use crate::ops::normalization::NormKind;
use crate::ops::resize::{CoordinateTransform, NearestRounding, ResizeMode, ResizeTarget};
use crate::shape::pool_output_hw;
use crate::tensor::Tensor;

impl Writer<'_> {
    pub(super) fn dense(&mut self, n: &Node, f: &FcAttrs, x: Entry, ins: &[&str], out: &str) -> Result<(), GraphError> {
        let bias = (!f.no_bias).then(|| ins.get(2).copied()).flatten();
        if f.flatten {
            let mut input = ins[0].to_string();
            if self.shape(x).len() != 2 {
                input = self.temp(n, "flat");
                self.emit("Flatten", &[ins[0]], &input, vec![attrs::int("axis", 1)]);
            }
            let mut gemm_inputs = vec![input.as_str(), ins[1]];
            gemm_inputs.extend(bias);
            self.b
                .named_node(&n.name, "Gemm", &gemm_inputs, &[out], vec![attrs::int("transB", 1)]);
            return Ok(());
        }
        // MatMul applies to the last axis: its weight is (inputs, outputs).
        let w = self.weight(n, 1)?;
        let (rows, cols) = (w.shape()[0], w.shape()[1]);
        let transposed: Vec<f32> = (0..rows * cols)
            .map(|k| w.data()[(k % rows) * cols + k / rows])
            .collect();
        let weight = self.constant(
            &format!("{}_transposed", ins[1]),
            Tensor::new(vec![cols, rows], transposed)?,
        );
        match bias {
            None => self.emit("MatMul", &[ins[0], &weight], out, vec![]),
            Some(bias) => {
                let product = self.temp(n, "matmul");
                self.emit("MatMul", &[ins[0], &weight], &product, vec![]);
                self.emit("Add", &[&product, bias], out, vec![]);
            }
        }
        Ok(())
    }

    pub(super) fn activation(&mut self, n: &Node, a: Activation, x: &str, out: &str) -> Result<(), GraphError> {
        let simple = |op: &'static str| Some((op, vec![]));
        let direct: Option<(&str, Vec<AttributeProto>)> = match a {
            Activation::Relu => simple("Relu"),
            Activation::Sigmoid => simple("Sigmoid"),
            Activation::Tanh => simple("Tanh"),
            Activation::SoftRelu => simple("Softplus"),
            Activation::SoftSign => simple("Softsign"),
            Activation::Exp => simple("Exp"),
            Activation::Log => simple("Log"),
            Activation::Neg => simple("Neg"),
            Activation::Abs => simple("Abs"),
            Activation::Sqrt => simple("Sqrt"),
            Activation::Reciprocal => simple("Reciprocal"),
            Activation::Erf => simple("Erf"),
            Activation::HardSwish => simple("HardSwish"),
            Activation::LeakyRelu { slope } => Some(("LeakyRelu", vec![attrs::float("alpha", slope)])),
            Activation::HardSigmoid { alpha, beta } => Some((
                "HardSigmoid",
                vec![attrs::float("alpha", alpha), attrs::float("beta", beta)],
            )),
            Activation::Elu { alpha } => Some(("Elu", vec![attrs::float("alpha", alpha)])),
            Activation::Selu { alpha, gamma } => {
                Some(("Selu", vec![attrs::float("alpha", alpha), attrs::float("gamma", gamma)]))
            }
            Activation::Clip { .. } | Activation::Mish | Activation::Gelu { .. } | Activation::Not => None,
        };
        if let Some((op_type, attributes)) = direct {
            self.emit(op_type, &[x], out, attributes);
            return Ok(());
        }
        match a {
            Activation::Clip { min, max } => {
                let lo = self.scalar(&format!("{}_min", n.name), min);
                let hi = self.scalar(&format!("{}_max", n.name), max);
                self.emit("Clip", &[x, &lo, &hi], out, vec![]);
            }
            Activation::Mish => {
                let (soft, tanh) = (self.temp(n, "softplus"), self.temp(n, "tanh"));
                self.emit("Softplus", &[x], &soft, vec![]);
                self.emit("Tanh", &[&soft], &tanh, vec![]);
                self.emit("Mul", &[x, &tanh], out, vec![]);
            }
            Activation::Gelu { tanh: false } => {
                // x * 0.5 * (1 + erf(x / sqrt 2))
                let root2 = self.scalar(&format!("{}_sqrt2", n.name), std::f32::consts::SQRT_2);
                let (half, one) = (
                    self.scalar(&format!("{}_half", n.name), 0.5),
                    self.scalar(&format!("{}_one", n.name), 1.0),
                );
                let [scaled, erf, shifted, halved] = ["scaled", "erf", "shifted", "halved"].map(|s| self.temp(n, s));
                self.emit("Div", &[x, &root2], &scaled, vec![]);
                self.emit("Erf", &[&scaled], &erf, vec![]);
                self.emit("Add", &[&erf, &one], &shifted, vec![]);
                self.emit("Mul", &[x, &half], &halved, vec![]);
                self.emit("Mul", &[&halved, &shifted], out, vec![]);
            }
            Activation::Gelu { tanh: true } => {
                // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                let c = (2.0 / std::f64::consts::PI).sqrt() as f32;
                let names = ["cube", "cubic", "inner", "scaled", "tanh", "shifted", "halved"];
                let [cube, cubic, inner, scaled, tanh, shifted, halved] = names.map(|s| self.temp(n, s));
                let three = self.scalar(&format!("{}_three", n.name), 3.0);
                let k = self.scalar(&format!("{}_k", n.name), 0.044715);
                let cs = self.scalar(&format!("{}_c", n.name), c);
                let one = self.scalar(&format!("{}_one", n.name), 1.0);
                let half = self.scalar(&format!("{}_half", n.name), 0.5);
                self.emit("Pow", &[x, &three], &cube, vec![]);
                self.emit("Mul", &[&cube, &k], &cubic, vec![]);
                self.emit("Add", &[x, &cubic], &inner, vec![]);
                self.emit("Mul", &[&inner, &cs], &scaled, vec![]);
                self.emit("Tanh", &[&scaled], &tanh, vec![]);
                self.emit("Add", &[&tanh, &one], &shifted, vec![]);
                self.emit("Mul", &[x, &half], &halved, vec![]);
                self.emit("Mul", &[&halved, &shifted], out, vec![]);
            }
            Activation::Not => {
                let zero = self.scalar(&format!("{}_zero", n.name), 0.0);
                let is_zero = self.temp(n, "is_zero");
                self.emit("Equal", &[x, &zero], &is_zero, vec![]);
                self.emit("Cast", &[&is_zero], out, vec![to(DataType::Float)]);
            }
            _ => unreachable!("written directly above"),
        }
        Ok(())
    }

    pub(super) fn pooling(
        &mut self,
        n: &Node,
        p: &PoolAttrs,
        input: Entry,
        x: &str,
        out: &str,
    ) -> Result<(), GraphError> {
        if p.global {
            match p.kind {
                PoolKind::Max => self.emit("GlobalMaxPool", &[x], out, vec![]),
                PoolKind::Avg => self.emit("GlobalAveragePool", &[x], out, vec![]),
                PoolKind::Sum => {
                    let axes = self.int64s(&format!("{}_axes", n.name), &[2, 3]);
                    self.emit("ReduceSum", &[x, &axes], out, vec![attrs::int("keepdims", 1)]);
                }
            }
            return Ok(());
        }
        let shape = self.shape(input);
        let &[_, _, h, w] = shape else {
            return Err(err(
                n,
                format!("pools a {}-D input; ONNX pools 4-D images here", shape.len()),
            ));
        };
        let out_hw = pool_output_hw(p, h, w);
        let with = |convention| {
            pool_output_hw(
                &PoolAttrs {
                    convention,
                    ..p.clone()
                },
                h,
                w,
            )
        };
        // MXNet's `full` ceils like ONNX's ceil_mode unless a last window would start in the trailing
        // padding, which ONNX drops: the two agree exactly when the counts do.
        let mut attributes = window_attributes(p.kernel, p.stride, &p.pad);
        match p.convention {
            PoolConvention::Valid => {}
            PoolConvention::Ceil => attributes.push(attrs::int("ceil_mode", 1)),
            PoolConvention::Full if out_hw == with(PoolConvention::Ceil) => {
                attributes.push(attrs::int("ceil_mode", 1));
            }
            PoolConvention::Full => {
                return Err(err(
                    n,
                    format!(
                        "MXNet's 'full' pooling gives {out_hw:?} windows on a {h}x{w} input where ONNX's ceil_mode gives fewer"
                    ),
                ));
            }
            PoolConvention::Same => {
                // auto_pad and pads are exclusive.
                attributes.retain(|a| a.name != "pads");
                attributes.push(attrs::string("auto_pad", "SAME_UPPER"));
            }
        }
        match p.kind {
            PoolKind::Max => self.emit("MaxPool", &[x], out, attributes),
            PoolKind::Avg => {
                attributes.push(attrs::int("count_include_pad", p.count_include_pad as i64));
                self.emit("AveragePool", &[x], out, attributes);
            }
            PoolKind::Sum => {
                // A sum is the padded-count average times the window, where no window overhangs.
                if out_hw != with(PoolConvention::Valid) || p.convention == PoolConvention::Same {
                    return Err(err(
                        n,
                        "sum pooling whose windows overhang the padded input has no ONNX equivalent",
                    ));
                }
                attributes.push(attrs::int("count_include_pad", 1));
                let mean = self.temp(n, "mean");
                self.emit("AveragePool", &[x], &mean, attributes);
                let area = self.scalar(&format!("{}_area", n.name), (p.kernel[0] * p.kernel[1]) as f32);
                self.emit("Mul", &[&mean, &area], out, vec![]);
            }
        }
        Ok(())
    }

    pub(super) fn batch_norm(
        &mut self,
        n: &Node,
        b: &BatchNormAttrs,
        ins: &[&str],
        out: &str,
    ) -> Result<(), GraphError> {
        if b.axis != 1 || ins.len() < 5 {
            return Err(err(
                n,
                format!(
                    "ONNX BatchNormalization normalises axis 1 with four stored inputs; this one has axis {} and {} inputs",
                    b.axis,
                    ins.len()
                ),
            ));
        }
        let mut inputs: Vec<String> = ins.iter().map(|s| s.to_string()).collect();
        if b.fix_gamma {
            let channels = self.weight(n, 3)?.len();
            inputs[1] = self.constant(
                &format!("{}_unit_gamma", n.name),
                Tensor::new(vec![channels], vec![1.0; channels])?,
            );
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.b.named_node(
            &n.name,
            "BatchNormalization",
            &refs[..5],
            &[out],
            vec![attrs::float("epsilon", b.eps as f32)],
        );
        Ok(())
    }

    pub(super) fn binary(&mut self, n: &Node, op: BinaryOp, ins: &[&str], out: &str) -> Result<(), GraphError> {
        let arithmetic = match op {
            BinaryOp::Add => Some("Add"),
            BinaryOp::Sub => Some("Sub"),
            BinaryOp::Mul => Some("Mul"),
            BinaryOp::Div => Some("Div"),
            BinaryOp::Pow => Some("Pow"),
            BinaryOp::Min => Some("Min"),
            BinaryOp::Max => Some("Max"),
            BinaryOp::PRelu => Some("PRelu"),
            _ => None,
        };
        if let Some(op_type) = arithmetic {
            self.emit(op_type, &ins[..2], out, vec![]);
            return Ok(());
        }
        // Comparisons and logic give ONNX booleans; accnn's tensors are floats 0 and 1.
        let (op_type, logical) = match op {
            BinaryOp::Equal => ("Equal", false),
            BinaryOp::Less => ("Less", false),
            BinaryOp::LessOrEqual => ("LessOrEqual", false),
            BinaryOp::Greater => ("Greater", false),
            BinaryOp::GreaterOrEqual => ("GreaterOrEqual", false),
            BinaryOp::And => ("And", true),
            BinaryOp::Or => ("Or", true),
            BinaryOp::Xor => ("Xor", true),
            _ => unreachable!("arithmetic is written above"),
        };
        let mut operands = [ins[0].to_string(), ins[1].to_string()];
        if logical {
            for (k, operand) in operands.iter_mut().enumerate() {
                *operand = self.truth(n, &format!("operand{k}"), operand);
            }
        }
        let verdict = self.temp(n, "verdict");
        self.emit(op_type, &[&operands[0], &operands[1]], &verdict, vec![]);
        self.emit("Cast", &[&verdict], out, vec![to(DataType::Float)]);
        Ok(())
    }

    /// ONNX Reshape's target for an IR reshape (whose MXNet codes ONNX lacks): the inferred output
    /// shape, with `-1` on the axis that follows the batch.
    pub(super) fn reshape_target(&self, n: &Node, index: usize) -> Result<Vec<i64>, GraphError> {
        let here = self.shape(Entry::new(index)).to_vec();
        let next = self
            .shapes_next_batch
            .as_ref()
            .and_then(|s| s.outputs.get(index))
            .and_then(|o| o.first())
            .cloned()
            .unwrap_or_else(|| here.clone());
        if here.len() != next.len() {
            return Err(err(n, "its output's rank depends on the batch size"));
        }
        let varying: Vec<usize> = (0..here.len()).filter(|&a| here[a] != next[a]).collect();
        if varying.len() > 1 {
            return Err(err(n, "more than one of its output axes follows the batch size"));
        }
        Ok(here
            .iter()
            .enumerate()
            .map(|(a, &d)| if varying.contains(&a) { -1 } else { d as i64 })
            .collect())
    }

    pub(super) fn resize(
        &mut self,
        n: &Node,
        r: &crate::ir::ResizeAttrs,
        x: &str,
        out: &str,
    ) -> Result<(), GraphError> {
        if r.antialias {
            return Err(err(
                n,
                "antialiased resizing needs ONNX opset 18; accnn writes opset 17",
            ));
        }
        let coordinates = match r.coordinates {
            CoordinateTransform::HalfPixel => "half_pixel",
            CoordinateTransform::PytorchHalfPixel => "pytorch_half_pixel",
            CoordinateTransform::AlignCorners => "align_corners",
            CoordinateTransform::Asymmetric => "asymmetric",
            CoordinateTransform::HalfPixelSymmetric => {
                return Err(err(
                    n,
                    "half_pixel_symmetric resizing needs ONNX opset 19; accnn writes opset 17",
                ));
            }
        };
        let mut a = vec![attrs::string("coordinate_transformation_mode", coordinates)];
        match r.mode {
            ResizeMode::Nearest(rounding) => {
                let rounding = match rounding {
                    NearestRounding::RoundPreferFloor => "round_prefer_floor",
                    NearestRounding::RoundPreferCeil => "round_prefer_ceil",
                    NearestRounding::Floor => "floor",
                    NearestRounding::Ceil => "ceil",
                };
                a.extend([
                    attrs::string("mode", "nearest"),
                    attrs::string("nearest_mode", rounding),
                ]);
            }
            ResizeMode::Linear => a.push(attrs::string("mode", "linear")),
            ResizeMode::Cubic {
                a: coeff,
                exclude_outside,
            } => a.extend([
                attrs::string("mode", "cubic"),
                attrs::float("cubic_coeff_a", coeff),
                attrs::int("exclude_outside", exclude_outside as i64),
            ]),
        }
        let empty = self.constant(&format!("{}_roi", n.name), Tensor::new(vec![0], vec![])?);
        match &r.target {
            ResizeTarget::Scales(s) => {
                let scales = self.constant(&format!("{}_scales", n.name), Tensor::new(vec![s.len()], s.clone())?);
                self.emit("Resize", &[x, &empty, &scales], out, a);
            }
            ResizeTarget::Sizes(s) => {
                let sizes: Vec<i64> = s.iter().map(|&d| d as i64).collect();
                let sizes = self.int64s(&format!("{}_sizes", n.name), &sizes);
                self.emit("Resize", &[x, &empty, "", &sizes], out, a);
            }
        }
        Ok(())
    }

    pub(super) fn normalization(
        &mut self,
        n: &Node,
        a: &crate::ir::NormalizationAttrs,
        input: Entry,
        ins: &[&str],
        out: &str,
    ) -> Result<(), GraphError> {
        let eps = attrs::float("epsilon", a.epsilon);
        let scale_len = self.weight(n, 1)?.len();
        let bias = match (a.bias, ins.get(2)) {
            (true, Some(b)) => b.to_string(),
            _ => {
                let zeros = Tensor::zeros(self.weight(n, 1)?.shape().to_vec());
                self.constant(&format!("{}_zero_bias", n.name), zeros)
            }
        };
        match a.kind {
            NormKind::Layer { axis } => {
                let attributes = vec![attrs::int("axis", axis), eps];
                self.b.named_node(
                    &n.name,
                    "LayerNormalization",
                    &[ins[0], ins[1], &bias],
                    &[out],
                    attributes,
                );
            }
            NormKind::Instance => {
                self.b.named_node(
                    &n.name,
                    "InstanceNormalization",
                    &[ins[0], ins[1], &bias],
                    &[out],
                    vec![eps],
                );
            }
            NormKind::Group { groups } => {
                // Instance statistics over (N, groups, rest), then the per-channel affine map.
                let shape = self.shape(input).to_vec();
                if shape.len() < 2 || groups == 0 {
                    return Err(err(n, "group normalisation needs a batch and a channel axis"));
                }
                let grouped = self.int64s(&format!("{}_grouped", n.name), &[0, groups as i64, -1]);
                let ones = self.constant(
                    &format!("{}_ones", n.name),
                    Tensor::new(vec![groups], vec![1.0; groups])?,
                );
                let zeros = self.constant(&format!("{}_zeros", n.name), Tensor::zeros(vec![groups]));
                let mut affine = vec![scale_len as i64];
                affine.extend(std::iter::repeat_n(1, shape.len() - 2));
                let affine = self.int64s(&format!("{}_affine", n.name), &affine);
                let names = ["grouped", "normalised", "restored", "scale", "bias", "scaled"];
                let [g, normalised, restored, scale, shift, scaled] = names.map(|s| self.temp(n, s));
                // Back to the input's shape, the batch copied (Reshape's 0).
                let restore: Vec<i64> = std::iter::once(0).chain(shape[1..].iter().map(|&d| d as i64)).collect();
                let original = self.int64s(&format!("{}_input_shape", n.name), &restore);
                self.emit("Reshape", &[ins[0], &grouped], &g, vec![]);
                self.emit("InstanceNormalization", &[&g, &ones, &zeros], &normalised, vec![eps]);
                self.emit("Reshape", &[&normalised, &original], &restored, vec![]);
                self.emit("Reshape", &[ins[1], &affine], &scale, vec![]);
                self.emit("Reshape", &[&bias, &affine], &shift, vec![]);
                self.emit("Mul", &[&restored, &scale], &scaled, vec![]);
                self.emit("Add", &[&scaled, &shift], out, vec![]);
            }
        }
        Ok(())
    }
}
