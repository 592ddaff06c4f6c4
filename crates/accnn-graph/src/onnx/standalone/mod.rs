//! accnn's IR written as a new ONNX model, with no ONNX original to write on: how a model read from
//! an MXNet checkpoint (or built in memory) leaves for onnxruntime and every other ONNX runtime.
//!
//! Every node becomes the standard ONNX operators (opset [`STANDALONE_OPSET`]) that compute what the
//! IR's operator computes; weights become float32 initializers, the data input a float32 input whose
//! batch dimension is symbolic. Operators ONNX has no single node for at that opset (sum pooling,
//! Mish, GELU, group normalisation, MXNet's fixed-gamma BatchNorm, Reshape's MXNet codes) are
//! written as the short chain of nodes that computes them. An operator with no ONNX equivalent at
//! all is refused, naming the node.

use std::collections::HashMap;

use super::attrs;
use super::builder::{GraphBuilder, typed_value_info};
use super::export::{EncodedOnnx, OnnxFiles, conv_attributes, finish, window_attributes};
use super::proto::tensor_proto::DataType;
use super::proto::tensor_shape_proto::dimension;
use super::proto::type_proto::Value as TypeValue;
use super::proto::{AttributeProto, ValueInfoProto};
use super::tensor::externalise;
mod layers;

use crate::error::GraphError;
use crate::ir::{ConvTransposeAttrs, Entry, Model, Node, Op};
use crate::names::TakenNames;
use crate::ops::rearrange::{PadMode, SpaceDepth};
use crate::ops::reduce::ReduceOp;
use crate::shape::{Shapes, infer_shapes};
use crate::tensor::Tensor;

/// The default-domain opset of models written by [`encode_standalone`]: the first with
/// `LayerNormalization`, and one every maintained runtime reads.
pub const STANDALONE_OPSET: i64 = 17;

/// Writes `model` as a new ONNX model whose data input has `data_shape` (batch first; the batch is
/// written symbolic, so the model runs at any batch). With `external` (a file name to sit next to
/// the model), tensors of 1 KiB and more go to that file; without it, a model past protobuf's
/// 2 GiB limit is refused.
///
/// ```
/// use accnn_graph::ModelBuilder;
/// use accnn_graph::ir::Activation;
/// use accnn_graph::{onnx, Tensor};
/// # fn main() -> Result<(), accnn_graph::GraphError> {
/// let mut b = ModelBuilder::new();
/// let x = b.input("data");
/// let fc = b.dense("fc", x, Tensor::new(vec![3, 4], vec![0.5; 12])?, None, true);
/// let y = b.activation("relu", fc, Activation::Relu);
/// let model = b.build(&[y])?;
/// let written = onnx::encode_standalone(&model, &[1, 4], None)?;
/// let read = onnx::decode_onnx(&written.model, std::path::Path::new("fc.onnx"), None)?;
/// assert_eq!(read.model.args.len(), 1); // the weight
/// # Ok(()) }
/// ```
pub fn encode_standalone(
    model: &Model,
    data_shape: &[usize],
    external: Option<&str>,
) -> Result<EncodedOnnx, GraphError> {
    standalone_files(model, data_shape, external).map(OnnxFiles::encode)
}

/// [`encode_standalone`], the `.onnx` file left to be encoded as it is written.
pub fn standalone_files(model: &Model, data_shape: &[usize], external: Option<&str>) -> Result<OnnxFiles, GraphError> {
    let mut writer = Writer::new(model, data_shape)?;
    for (i, node) in model.graph.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Variable) {
            writer.node(i, node)?;
        }
    }
    for (k, head) in model.graph.heads.iter().enumerate() {
        let name = writer.name(*head)?;
        // A graph output must be a tensor a node computes, under a name of its own.
        let output = if writer.is_variable(head.node) || model.graph.heads[..k].contains(head) {
            let copy = writer.fresh(&format!("{name}_output"));
            writer.b.node("Identity", &[&name], &[&copy], vec![]);
            copy
        } else {
            name
        };
        let info = writer.output_info(&output, *head);
        writer.b.raw_output(info);
    }
    let mut proto = writer.b.into_model();
    let mut data = None;
    if let (Some(location), Some(graph)) = (external, proto.graph.as_mut()) {
        let mut bytes = Vec::new();
        for t in graph.initializer.iter_mut().filter(|t| t.raw_data.len() >= 1024) {
            externalise(t, &mut bytes, location);
        }
        data = Some(bytes);
    }
    finish(proto, data)
}

/// The ONNX graph under construction, with the tensor name of every IR output written so far.
pub(super) struct Writer<'m> {
    model: &'m Model,
    b: GraphBuilder,
    names: HashMap<Entry, String>,
    taken: TakenNames,
    /// Shapes at the export's batch, and at one more: what Reshape's batch-dependent axis is.
    shapes: Shapes,
    shapes_next_batch: Option<Shapes>,
    batch: usize,
}

pub(super) fn err(n: &Node, message: impl Into<String>) -> GraphError {
    GraphError::node(&n.name, message)
}

pub(super) fn pair(v: [usize; 2]) -> [i64; 2] {
    [v[0] as i64, v[1] as i64]
}

impl<'m> Writer<'m> {
    fn new(model: &'m Model, data_shape: &[usize]) -> Result<Self, GraphError> {
        let shapes = infer_shapes(model, data_shape)?;
        let mut next = data_shape.to_vec();
        if let Some(b) = next.first_mut() {
            *b += 1;
        }
        let shapes_next_batch = infer_shapes(model, &next).ok();
        let data = model.data_input()?;
        let mut b = GraphBuilder::new(STANDALONE_OPSET);
        let data_name = model.graph.nodes[data].name.clone();
        b.input_symbolic_batch(&data_name, data_shape);
        let mut taken = TakenNames::new(model.graph.nodes.iter().map(|n| n.name.clone()));
        taken.extend(model.args.keys().chain(model.aux.keys()).cloned());
        let mut names = HashMap::new();
        names.insert(Entry::new(data), data_name);
        Ok(Writer {
            model,
            b,
            names,
            taken,
            shapes,
            shapes_next_batch,
            batch: data_shape.first().copied().unwrap_or(1),
        })
    }

    /// A graph output's declaration: the batch symbolic where the output's first axis is the batch,
    /// other axes that follow the batch size left unknown, the rest fixed.
    fn output_info(&self, name: &str, e: Entry) -> ValueInfoProto {
        let at = |shapes: &Shapes| shapes.outputs.get(e.node).and_then(|o| o.get(e.output)).cloned();
        let here = at(&self.shapes).unwrap_or_default();
        let next = self
            .shapes_next_batch
            .as_ref()
            .and_then(at)
            .unwrap_or_else(|| here.clone());
        let batch = self.batch;
        let dims: Vec<Option<usize>> = here.iter().map(|&d| Some(d)).collect();
        let mut info = typed_value_info(name, DataType::Float as i32, Some(&dims));
        let shape = match info.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            Some(TypeValue::TensorType(t)) => t.shape.as_mut(),
            _ => None,
        };
        for (a, dim) in shape.into_iter().flat_map(|s| s.dim.iter_mut()).enumerate() {
            let (d, d_next) = (here[a], next.get(a).copied().unwrap_or(here[a]));
            if d != d_next {
                dim.value =
                    (a == 0 && d == batch && d_next == batch + 1).then(|| dimension::Value::DimParam("batch".into()));
            }
        }
        info
    }

    fn fresh(&mut self, base: &str) -> String {
        self.taken.fresh(base)
    }

    fn is_variable(&self, node: usize) -> bool {
        matches!(self.model.graph.nodes[node].op, Op::Variable)
    }

    /// The ONNX tensor name of `e`: a node output already written, or a weight (written as an
    /// initializer the first time it is read).
    fn name(&mut self, e: Entry) -> Result<String, GraphError> {
        if let Some(name) = self.names.get(&e) {
            return Ok(name.clone());
        }
        let node = &self.model.graph.nodes[e.node];
        let value = self
            .model
            .param(&node.name)
            .ok_or_else(|| err(node, "has no stored value and is not the data input"))?;
        self.b.initializer(&node.name, value.clone());
        self.names.insert(e, node.name.clone());
        Ok(node.name.clone())
    }

    fn shape(&self, e: Entry) -> &[usize] {
        self.shapes
            .outputs
            .get(e.node)
            .and_then(|o| o.get(e.output))
            .map_or(&[], Vec::as_slice)
    }

    fn weight(&self, n: &Node, k: usize) -> Result<&'m Tensor, GraphError> {
        let var = n
            .inputs
            .get(k)
            .map(|e| &self.model.graph.nodes[e.node].name)
            .ok_or_else(|| err(n, format!("has no input {k}")))?;
        self.model
            .param(var)
            .ok_or_else(|| err(n, format!("weight '{var}' is missing")))
    }

    /// A new float initializer named after `base`.
    fn constant(&mut self, base: &str, value: Tensor) -> String {
        let name = self.fresh(base);
        self.b.initializer(&name, value);
        name
    }

    fn scalar(&mut self, base: &str, value: f32) -> String {
        self.constant(base, Tensor::new(vec![], vec![value]).expect("one value, no axes"))
    }

    fn int64s(&mut self, base: &str, values: &[i64]) -> String {
        let name = self.fresh(base);
        self.b.int_initializer(&name, &[values.len()], values);
        name
    }

    /// The boolean `x != 0`, as `Not(Equal(x, 0))`: accnn's values are floats, ONNX's logic takes
    /// booleans (and a Cast to bool is not something every importer interprets).
    fn truth(&mut self, n: &Node, what: &str, x: &str) -> String {
        let zero = self.scalar(&format!("{}_{what}_zero", n.name), 0.0);
        let (is_zero, truth) = (self.temp(n, &format!("{what}_is_zero")), self.temp(n, what));
        self.emit("Equal", &[x, &zero], &is_zero, vec![]);
        self.emit("Not", &[&is_zero], &truth, vec![]);
        truth
    }

    /// A new intermediate tensor name, made from the node's name.
    fn temp(&mut self, n: &Node, what: &str) -> String {
        self.fresh(&format!("{}_{what}", n.name))
    }

    fn emit(&mut self, op_type: &str, inputs: &[&str], output: &str, attributes: Vec<AttributeProto>) {
        self.b.node(op_type, inputs, &[output], attributes);
    }

    fn node(&mut self, index: usize, n: &Node) -> Result<(), GraphError> {
        if let Op::Opaque { op_type, .. } = &n.op {
            return Err(err(
                n,
                format!(
                    "accnn keeps the '{op_type}' operator only to write it back into the ONNX model it was read from; it cannot write it into a new one"
                ),
            ));
        }
        // SoftmaxOutput's label only matters to training.
        let read = if matches!(n.op, Op::SoftmaxOutput) {
            1
        } else {
            n.inputs.len()
        };
        let mut inputs = Vec::with_capacity(read);
        for e in &n.inputs[..read.min(n.inputs.len())] {
            inputs.push(self.name(*e)?);
        }
        let ins: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let out = self.fresh(&format!("{}_output", n.name));
        let first = n.inputs.first().copied().ok_or_else(|| err(n, "has no input"))?;
        let x = ins.first().copied().unwrap_or_default();
        match &n.op {
            Op::Variable => return Ok(()),
            Op::Convolution(c) => {
                let take = if c.no_bias { 2 } else { 3 };
                self.b.named_node(
                    &n.name,
                    "Conv",
                    &ins[..take.min(ins.len())],
                    &[&out],
                    conv_attributes(c),
                );
            }
            Op::ConvTranspose(c) => {
                let take = if c.no_bias { 2 } else { 3 };
                let a = conv_transpose_attributes(c);
                self.b
                    .named_node(&n.name, "ConvTranspose", &ins[..take.min(ins.len())], &[&out], a);
            }
            Op::FullyConnected(f) => self.dense(n, f, first, &ins, &out)?,
            Op::Activation(a) => self.activation(n, *a, x, &out)?,
            Op::Pooling(p) => self.pooling(n, p, first, x, &out)?,
            Op::Flatten { axis } => self.emit("Flatten", &[x], &out, vec![attrs::int("axis", *axis)]),
            Op::Dropout | Op::Identity => self.emit("Identity", &[x], &out, vec![]),
            Op::BatchNorm(b) => self.batch_norm(n, b, &ins, &out)?,
            Op::Binary { op, .. } => self.binary(n, *op, &ins, &out)?,
            Op::Concat { axis } => self.emit("Concat", &ins, &out, vec![attrs::int("axis", *axis)]),
            Op::Softmax { axis } => self.emit("Softmax", &[x], &out, vec![attrs::int("axis", *axis)]),
            Op::LogSoftmax { axis } => self.emit("LogSoftmax", &[x], &out, vec![attrs::int("axis", *axis)]),
            Op::SoftmaxOutput => self.emit("Softmax", &[x], &out, vec![attrs::int("axis", 1)]),
            Op::Reshape { .. } => {
                let target = self.reshape_target(n, index)?;
                let shape = self.int64s(&format!("{}_shape", n.name), &target);
                self.emit("Reshape", &[x, &shape], &out, vec![]);
            }
            Op::Transpose { perm } => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                self.emit("Transpose", &[x], &out, vec![attrs::ints("perm", &perm)]);
            }
            Op::Lrn(l) => self.emit(
                "LRN",
                &[x],
                &out,
                vec![
                    attrs::int("size", l.size as i64),
                    attrs::float("alpha", l.alpha),
                    attrs::float("beta", l.beta),
                    attrs::float("bias", l.bias),
                ],
            ),
            Op::Reduce(r) => {
                let keep = attrs::int("keepdims", r.keep_dims as i64);
                let op_type = match r.op {
                    ReduceOp::Sum => "ReduceSum",
                    ReduceOp::Mean => "ReduceMean",
                    ReduceOp::Max => "ReduceMax",
                    ReduceOp::Min => "ReduceMin",
                    ReduceOp::Prod => "ReduceProd",
                    ReduceOp::L1 => "ReduceL1",
                    ReduceOp::L2 => "ReduceL2",
                    ReduceOp::SumSquare => "ReduceSumSquare",
                    ReduceOp::LogSumExp => "ReduceLogSumExp",
                };
                // From opset 13 ReduceSum takes its axes as an input; the others, until 18, as an attribute.
                match (&r.axes, r.op) {
                    (Some(axes), ReduceOp::Sum) => {
                        let axes = self.int64s(&format!("{}_axes", n.name), axes);
                        self.emit(op_type, &[x, &axes], &out, vec![keep]);
                    }
                    (Some(axes), _) => self.emit(op_type, &[x], &out, vec![keep, attrs::ints("axes", axes)]),
                    (None, _) => self.emit(op_type, &[x], &out, vec![keep]),
                }
            }
            Op::MatMul => self.emit("MatMul", &ins, &out, vec![]),
            Op::Slice(s) => {
                let base = n.name.clone();
                let starts = self.int64s(&format!("{base}_starts"), &s.starts);
                let ends = self.int64s(&format!("{base}_ends"), &s.ends);
                let axes: Vec<i64> = s.axes.clone().unwrap_or_else(|| (0..s.starts.len() as i64).collect());
                let axes = self.int64s(&format!("{base}_axes"), &axes);
                let steps = s.steps.clone().unwrap_or_else(|| vec![1; s.starts.len()]);
                let steps = self.int64s(&format!("{base}_steps"), &steps);
                self.emit("Slice", &[x, &starts, &ends, &axes, &steps], &out, vec![]);
            }
            Op::Squeeze { axes: Some(axes) } => {
                let axes = self.int64s(&format!("{}_axes", n.name), axes);
                self.emit("Squeeze", &[x, &axes], &out, vec![]);
            }
            Op::Squeeze { axes: None } => self.emit("Squeeze", &[x], &out, vec![]),
            Op::Unsqueeze { axes } => {
                let axes = self.int64s(&format!("{}_axes", n.name), axes);
                self.emit("Unsqueeze", &[x, &axes], &out, vec![]);
            }
            Op::Resize(r) => self.resize(n, r, x, &out)?,
            Op::Normalization(a) => self.normalization(n, a, first, &ins, &out)?,
            Op::Pad(p) => {
                let mode = match p.mode {
                    PadMode::Constant(_) => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "edge",
                    PadMode::Wrap => return Err(err(n, "wrap padding needs ONNX opset 19; accnn writes opset 17")),
                };
                let pads: Vec<i64> = p
                    .pads
                    .iter()
                    .map(|(b, _)| *b)
                    .chain(p.pads.iter().map(|(_, a)| *a))
                    .collect();
                let pads = self.int64s(&format!("{}_pads", n.name), &pads);
                let mut pad_inputs = vec![x.to_string(), pads];
                if let PadMode::Constant(v) = p.mode {
                    pad_inputs.push(self.scalar(&format!("{}_value", n.name), v));
                }
                let refs: Vec<&str> = pad_inputs.iter().map(String::as_str).collect();
                self.emit("Pad", &refs, &out, vec![attrs::string("mode", mode)]);
            }
            Op::Gather {
                axis,
                indices,
                index_dims,
            } => {
                let name = self.fresh(&format!("{}_indices", n.name));
                self.b.int_initializer(&name, index_dims, indices);
                self.emit("Gather", &[x, &name], &out, vec![attrs::int("axis", *axis)]);
            }
            Op::Expand { shape } => {
                let shape = self.int64s(&format!("{}_shape", n.name), shape);
                self.emit("Expand", &[x, &shape], &out, vec![]);
            }
            Op::Tile { repeats } => {
                let repeats: Vec<i64> = repeats.iter().map(|&r| r as i64).collect();
                let repeats = self.int64s(&format!("{}_repeats", n.name), &repeats);
                self.emit("Tile", &[x, &repeats], &out, vec![]);
            }
            Op::SpaceDepth(SpaceDepth::ToSpace {
                block,
                column_row_depth,
            }) => {
                let mode = if *column_row_depth { "CRD" } else { "DCR" };
                let a = vec![attrs::int("blocksize", *block as i64), attrs::string("mode", mode)];
                self.emit("DepthToSpace", &[x], &out, a);
            }
            Op::SpaceDepth(SpaceDepth::ToDepth { block }) => {
                self.emit("SpaceToDepth", &[x], &out, vec![attrs::int("blocksize", *block as i64)]);
            }
            Op::Where => {
                let condition = self.truth(n, "condition", x);
                self.emit("Where", &[&condition, ins[1], ins[2]], &out, vec![]);
            }
            Op::Opaque { .. } => unreachable!("refused above"),
        }
        self.names.insert(Entry::new(index), out);
        Ok(())
    }
}

pub(super) fn to(t: DataType) -> AttributeProto {
    attrs::int("to", t as i64)
}

pub(super) fn conv_transpose_attributes(c: &ConvTransposeAttrs) -> Vec<AttributeProto> {
    let mut a = window_attributes(c.kernel, c.stride, &c.pad);
    a.extend([
        attrs::ints("dilations", &pair(c.dilate)),
        attrs::ints("output_padding", &pair(c.output_padding)),
        attrs::int("group", c.num_group as i64),
    ]);
    a
}
