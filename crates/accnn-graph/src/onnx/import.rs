//! ONNX `ModelProto` to accnn's IR. How each ONNX operator maps onto the IR is in `convert`.

mod constants;
mod convert;
mod normalization;
mod rearrange;
mod recorded;
mod upsampling;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::proto::{ModelProto, NodeProto};
use super::tensor::{Value, decode, dtype_of, fingerprint, inline_external};
use super::{Imported, Initializer, OnnxModel, OnnxSource};
use crate::error::GraphError;
use crate::ir::{Entry, Graph, Model, Node, Op, Padding2d};
use crate::names::TakenNames;
use crate::tensor::Tensor;

/// The oldest default-domain opset accnn reads.
pub const MIN_OPSET: i64 = 9;

/// A pending `auto_pad = SAME_*`: resolved once the node's input shape is known.
struct SamePad {
    node: usize,
    lower: bool,
}

/// Output shapes of the IR nodes made so far, where known at the input shape being read.
#[derive(Default)]
struct IrShapes {
    outputs: Vec<Vec<Vec<usize>>>,
    known: Vec<bool>,
}

impl IrShapes {
    fn known(&self, e: Entry) -> Option<&[usize]> {
        if !self.known.get(e.node).copied().unwrap_or(false) {
            return None;
        }
        self.outputs[e.node].get(e.output).map(Vec::as_slice)
    }
}

struct Importer {
    opset: i64,
    /// The data input's shape (batch first), when known: what `Shape` nodes are folded for.
    data_shape: Option<Vec<usize>>,
    /// The graph input that `data_shape` is the shape of.
    data_name: Option<String>,
    shapes: IrShapes,
    nodes: Vec<Node>,
    args: BTreeMap<String, Tensor>,
    /// Values of graph tensors produced by IR nodes.
    produced: HashMap<String, Entry>,
    /// Constant tensors: initializers and `Constant` outputs.
    consts: HashMap<String, Value>,
    data_inputs: HashSet<String>,
    taken: TakenNames,
    imported: HashMap<String, Imported>,
    /// ONNX tensor names of IR entries, for recording what each node read.
    entry_names: HashMap<Entry, String>,
    transformed: HashSet<String>,
    same_pads: Vec<SamePad>,
}

/// What a converted node becomes.
struct Converted {
    op: Op,
    inputs: Vec<Entry>,
    /// Proto nodes merged into this one after the first (an `Add` folded into a `MatMul`).
    merged: Vec<usize>,
    /// Output tensor names, when they are not the proto node's own.
    outputs: Option<Vec<String>>,
    same_pad: Option<bool>,
    /// Further IR nodes the same proto node becomes (a Split is one Slice per output), each with
    /// its own `outputs`; they read the graph's tensors, not each other.
    also: Vec<Converted>,
}

impl Converted {
    fn new(op: Op, inputs: Vec<Entry>) -> Self {
        Converted {
            op,
            inputs,
            merged: Vec::new(),
            outputs: None,
            same_pad: None,
            also: Vec::new(),
        }
    }
}

impl Importer {
    fn fresh(&mut self, base: &str) -> String {
        self.taken.fresh(base)
    }

    fn push_variable(&mut self, name: String) -> Entry {
        self.nodes.push(Node {
            name: name.clone(),
            op: Op::Variable,
            inputs: Vec::new(),
            attrs: BTreeMap::new(),
        });
        self.settle_shapes(None);
        let e = Entry::new(self.nodes.len() - 1);
        self.entry_names.insert(e, name);
        e
    }

    /// Infers the output shapes of the node just pushed, resolving its `auto_pad = SAME_*` now when
    /// its input shape is known. Returns the padding still pending.
    fn settle_shapes(&mut self, same_pad: Option<bool>) -> Option<bool> {
        let i = self.nodes.len() - 1;
        let node = &self.nodes[i];
        let inputs_known = node.inputs.iter().all(|e| self.shapes.known(*e).is_some());
        let mut pending = same_pad;
        if let (Some(lower), true) = (same_pad, inputs_known) {
            let input = self.shapes.known(node.inputs[0]).unwrap_or_default().to_vec();
            if let Some(pad) = same_padding(&node.op, lower, &input) {
                set_padding(&mut self.nodes[i].op, pad);
                pending = None;
            }
        }
        let node = &self.nodes[i];
        let outputs = match &node.op {
            Op::Variable if self.data_name.as_deref() == Some(node.name.as_str()) => {
                self.data_shape.clone().map(|s| vec![s])
            }
            Op::Variable => self.args.get(&node.name).map(|t| vec![t.shape().to_vec()]),
            Op::Opaque { declared, .. } => declared
                .as_ref()
                .zip(self.data_shape.as_deref())
                .and_then(|(d, shape)| d.resolve(shape)),
            _ if !inputs_known || pending.is_some() => None,
            _ => {
                // Shape rules read weights from a model: lend them the importer's, then take them back.
                let model = Model {
                    graph: Graph {
                        nodes: std::mem::take(&mut self.nodes),
                        heads: Vec::new(),
                    },
                    args: std::mem::take(&mut self.args),
                    aux: BTreeMap::new(),
                };
                let node = &model.graph.nodes[i];
                let result = node.op.output_shapes(&crate::ops::ShapeContext {
                    model: &model,
                    node,
                    outputs: &self.shapes.outputs,
                });
                self.nodes = model.graph.nodes;
                self.args = model.args;
                // A rule that fails here fails again, with its message, in shape inference proper.
                result.ok()
            }
        };
        self.shapes.known.push(outputs.is_some());
        self.shapes.outputs.push(outputs.unwrap_or_default());
        pending
    }

    /// A float constant as it is stored (in `consts` until a variable takes it into `args`).
    fn float_const(&self, name: &str) -> Option<&Tensor> {
        match self.consts.get(name) {
            Some(Value::Float(t)) => Some(t),
            Some(_) => None,
            None => self.args.get(name).filter(|_| self.produced.contains_key(name)),
        }
    }

    /// The IR entry that carries tensor `name` as a value: a node output, the data input, or a float
    /// constant as a variable. `None` for tensors accnn cannot use as values.
    fn value(&mut self, name: &str) -> Option<Entry> {
        if let Some(e) = self.produced.get(name) {
            return Some(*e);
        }
        if self.data_inputs.contains(name) || self.float_const(name).is_some() {
            let tensor = match self.consts.remove(name) {
                Some(Value::Float(t)) => Some(t),
                _ => None,
            };
            self.taken.insert(name.to_string());
            // Stored before the variable is pushed, which reads its shape.
            if let Some(t) = tensor {
                self.args.insert(name.to_string(), t);
            }
            let e = self.push_variable(name.to_string());
            self.produced.insert(name.to_string(), e);
            return Some(e);
        }
        None
    }

    /// [`Self::value`], or an integer or boolean constant widened to a float variable (an integer
    /// exponent, a mask): the operand of an elementwise operator.
    fn operand(&mut self, name: &str) -> Option<Entry> {
        if let Some(e) = self.value(name) {
            return Some(e);
        }
        let Some(Value::Ints { dims, values }) = self.consts.get(name) else {
            return None;
        };
        let tensor = Tensor::new(dims.clone(), values.iter().map(|&v| v as f32).collect()).ok()?;
        Some(self.weight(name, tensor, true))
    }

    /// A weight variable holding `tensor`, computed from the ONNX tensor `source`: `source` itself
    /// when unchanged, else a new variable (the ONNX tensor stays as it was for the writer).
    fn weight(&mut self, source: &str, tensor: Tensor, changed: bool) -> Entry {
        if !changed {
            return self.value(source).expect("weights are float constants");
        }
        self.transformed.insert(source.to_string());
        let name = self.fresh(&format!("{source}_accnn"));
        self.args.insert(name.clone(), tensor);
        self.push_variable(name)
    }

    fn ints_const(&self, name: &str) -> Option<&Vec<i64>> {
        match self.consts.get(name) {
            Some(Value::Ints { values, .. }) => Some(values),
            _ => None,
        }
    }

    fn scalar(&self, name: &str) -> Option<f32> {
        self.float_const(name).filter(|t| t.len() == 1).map(|t| t.data()[0])
    }
}

pub(crate) fn declared_shape(proto: &ModelProto, name: &str) -> Option<Vec<Option<usize>>> {
    let input = proto.graph.as_ref()?.input.iter().find(|i| i.name == name)?;
    recorded::fixed_dims(input)
}

/// Converts a decoded model. `dir` is where external data files live; `data_shape` (batch first)
/// resolves `auto_pad = SAME_*`.
pub(crate) fn import(
    mut proto: ModelProto,
    path: &Path,
    dir: &Path,
    data_shape: Option<&[usize]>,
) -> Result<OnnxModel, GraphError> {
    let opset = proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(1);
    if opset < MIN_OPSET {
        return Err(GraphError::format(
            path,
            format!(
                "opset {opset} is older than {MIN_OPSET}, the oldest accnn reads; convert it with onnx.version_converter"
            ),
        ));
    }
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| GraphError::format(path, "the model has no graph"))?;
    let mut consts: HashMap<String, Value> = HashMap::new();
    let mut initializers: HashMap<String, Initializer> = HashMap::new();
    let had_external_data = graph
        .initializer
        .iter()
        .any(|t| t.data_location == super::proto::tensor_proto::DataLocation::External as i32);
    for t in graph.initializer.iter_mut() {
        inline_external(t, dir, path)?;
        let value = decode(t, path)?;
        initializers.insert(
            t.name.clone(),
            Initializer {
                fingerprint: match &value {
                    Value::Float(f) => Some(fingerprint(f)),
                    _ => None,
                },
            },
        );
        consts.insert(t.name.clone(), value);
    }
    let mut constant_nodes = HashMap::new();
    for (index, n) in graph.node.iter_mut().enumerate() {
        if n.op_type != "Constant" || !n.domain.is_empty() {
            continue;
        }
        let label = n.output.first().cloned().unwrap_or_default();
        let value = constant_value(n, &label, dir, path)?;
        if let Some(v) = value {
            let print = match &v {
                Value::Float(t) => Some(fingerprint(t)),
                _ => None,
            };
            constant_nodes.insert(label.clone(), (index, print));
            consts.insert(label, v);
        }
    }
    let data_inputs: HashSet<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !consts.contains_key(n))
        .collect();
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            consumers.entry(input.clone()).or_default().push(i);
        }
    }
    for o in &graph.output {
        consumers.entry(o.name.clone()).or_default().push(usize::MAX);
    }
    let mut taken = TakenNames::new(consts.keys().cloned());
    taken.extend(data_inputs.iter().cloned());
    for n in &graph.node {
        taken.extend(n.output.iter().cloned());
    }
    let data_name = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .find(|n| data_inputs.contains(n));
    let mut im = Importer {
        opset,
        data_shape: data_shape.map(<[usize]>::to_vec),
        data_name,
        shapes: IrShapes::default(),
        nodes: Vec::new(),
        args: BTreeMap::new(),
        produced: HashMap::new(),
        consts,
        data_inputs,
        taken,
        imported: HashMap::new(),
        entry_names: HashMap::new(),
        transformed: HashSet::new(),
        same_pads: Vec::new(),
    };
    let recorded = recorded::RecordedShapes::new(graph, im.data_name.as_deref());
    let mut merged_away: HashSet<usize> = HashSet::new();
    let nodes = graph.node.clone();
    let constant_indices: HashSet<usize> = constant_nodes.values().map(|&(c, _)| c).collect();
    for (index, n) in nodes.iter().enumerate() {
        if merged_away.contains(&index) || constant_indices.contains(&index) {
            continue;
        }
        let base = if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_else(|| format!("node{index}"))
        } else {
            n.name.clone()
        };
        let label = base.clone();
        let is_graph_output = n
            .output
            .iter()
            .any(|o| consumers.get(o).is_some_and(|c| c.contains(&usize::MAX)));
        let attrs = super::attrs::NodeAttrs { node: n, label: &label };
        if let Some(value) = im.fold(n, &attrs, is_graph_output)? {
            let out = n.output[0].clone();
            let print = match &value {
                Value::Float(t) => Some(fingerprint(t)),
                _ => None,
            };
            constant_nodes.insert(out.clone(), (index, print));
            im.consts.insert(out, value);
            continue;
        }
        let converted = im.convert(n, &label, &consumers, &nodes)?;
        let mut converted = match converted {
            Some(c) => c,
            None => {
                // Not interpreted: kept as it is; its value inputs still order the graph.
                let mut inputs = Vec::new();
                for name in n.input.iter().filter(|s| !s.is_empty()) {
                    if let Some(e) = im.value(name) {
                        inputs.push(e);
                    } else if !im.consts.contains_key(name) {
                        return Err(GraphError::node(
                            &label,
                            format!(
                                "input '{name}' is not produced by an earlier node (the graph is not in topological order, or the input dangles)"
                            ),
                        ));
                    }
                }
                Converted::new(
                    Op::Opaque {
                        op_type: if n.domain.is_empty() {
                            n.op_type.clone()
                        } else {
                            format!("{}.{}", n.domain, n.op_type)
                        },
                        outputs: n.output.len().max(1),
                        declared: recorded.of(&n.output),
                    },
                    inputs,
                )
            }
        };
        let mut also = std::mem::take(&mut converted.also);
        let mut next = Some(converted);
        let mut first = true;
        while let Some(mut converted) = next.take() {
            let base_free = !im.taken.contains(&base) || n.output.contains(&base);
            let name = if first && base_free {
                im.taken.insert(base.clone());
                base.clone()
            } else {
                im.fresh(&base)
            };
            first = false;
            let outputs = converted.outputs.take().unwrap_or_else(|| n.output.clone());
            let inputs_named: Vec<String> = converted
                .inputs
                .iter()
                .map(|e| im.entry_names.get(e).cloned().unwrap_or_default())
                .collect();
            im.nodes.push(Node {
                name: name.clone(),
                op: converted.op.clone(),
                inputs: converted.inputs,
                attrs: BTreeMap::new(),
            });
            let me = im.nodes.len() - 1;
            if let Some(lower) = im.settle_shapes(converted.same_pad) {
                im.same_pads.push(SamePad { node: me, lower });
            }
            let op = im.nodes[me].op.clone();
            for (k, out) in outputs.iter().enumerate() {
                if !out.is_empty() {
                    let e = Entry { node: me, output: k };
                    im.produced.insert(out.clone(), e);
                    im.entry_names.insert(e, out.clone());
                }
            }
            merged_away.extend(converted.merged.iter().copied());
            let mut proto_nodes = vec![index];
            proto_nodes.extend(converted.merged);
            im.imported.insert(
                name,
                Imported {
                    proto_nodes,
                    op,
                    inputs: inputs_named,
                    outputs,
                },
            );
            if !also.is_empty() {
                next = Some(also.remove(0));
            }
        }
    }
    let mut heads = Vec::new();
    for o in &graph.output {
        let e = im.produced.get(&o.name).copied().ok_or_else(|| {
            GraphError::format(path, format!("graph output '{}' is not produced by any node", o.name))
        })?;
        heads.push(e);
    }
    let transformed = im.transformed.clone();
    let mut model = Model {
        graph: Graph { nodes: im.nodes, heads },
        args: im.args,
        aux: BTreeMap::new(),
    };
    model.graph.validate()?;
    resolve_same_pads(&mut model, &im.same_pads, data_shape, path)?;
    for p in &im.same_pads {
        let node = &model.graph.nodes[p.node];
        if let Some(record) = im.imported.get_mut(&node.name) {
            record.op = node.op.clone();
        }
    }
    // The kept proto does not need the weight bytes the IR now holds (they are re-encoded on
    // writing, bit for bit when unchanged); initializers the IR holds transformed keep theirs.
    for t in &mut graph.initializer {
        let untouched = transformed.contains(&t.name) || !model.args.contains_key(&t.name);
        if !untouched
            && matches!(
                dtype_of(t.data_type),
                Some(crate::DType::Float32 | crate::DType::Float16)
            )
        {
            let was_raw = !t.raw_data.is_empty();
            t.float_data = Vec::new();
            t.int32_data = Vec::new();
            // A one-byte marker remembers that the data was raw bytes rather than a typed field.
            t.raw_data = if was_raw {
                prost::bytes::Bytes::from_static(b"-")
            } else {
                Default::default()
            };
        }
    }
    super::tensor::detach_from_file(&mut proto);
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| GraphError::format(path, "the model has no graph"))?;
    let float_type = graph
        .input
        .iter()
        .find(|i| im.data_inputs.contains(&i.name))
        .and_then(|i| match i.r#type.as_ref()?.value.as_ref()? {
            super::proto::type_proto::Value::TensorType(t) => dtype_of(t.elem_type),
            _ => None,
        })
        .unwrap_or(crate::DType::Float32);
    let source = OnnxSource {
        proto,
        opset,
        nodes: im.imported,
        initializers,
        constant_nodes,
        float_type,
        had_external_data,
    };
    Ok(OnnxModel { model, source })
}

/// The value of a `Constant` node, if it is a tensor accnn can read.
fn constant_value(n: &mut NodeProto, label: &str, dir: &Path, path: &Path) -> Result<Option<Value>, GraphError> {
    let Some(attr) = n.attribute.first_mut() else {
        return Ok(None);
    };
    Ok(match attr.name.as_str() {
        "value" => match attr.t.as_mut() {
            Some(t) => {
                inline_external(t, dir, path)?;
                Some(decode(t, path).map_err(|e| GraphError::node(label, e.to_string()))?)
            }
            None => None,
        },
        "value_float" => Some(Value::Float(Tensor::new(vec![], vec![attr.f])?)),
        "value_floats" => Some(Value::Float(Tensor::new(vec![attr.floats.len()], attr.floats.clone())?)),
        "value_int" => Some(Value::Ints {
            dims: vec![],
            values: vec![attr.i],
        }),
        "value_ints" => Some(Value::Ints {
            dims: vec![attr.ints.len()],
            values: attr.ints.clone(),
        }),
        _ => None,
    })
}

/// Turns `auto_pad = SAME_*` into explicit padding for the input shape the model will run at.
fn resolve_same_pads(
    model: &mut Model,
    pending: &[SamePad],
    data_shape: Option<&[usize]>,
    path: &Path,
) -> Result<(), GraphError> {
    for p in pending {
        let name = model.graph.nodes[p.node].name.clone();
        let shape = data_shape.ok_or_else(|| {
            GraphError::node(
                &name,
                format!(
                    "auto_pad SAME needs the input size, which {} leaves symbolic; give the input shape",
                    path.display()
                ),
            )
        })?;
        let shapes = crate::shape::infer_shapes_prefix(model, shape, p.node)?;
        let input = model.graph.nodes[p.node].inputs[0];
        if !shapes.is_known(input.node) {
            // Downstream of an operator accnn does not interpret: the layer stays whole, as read.
            continue;
        }
        let s = shapes.outputs[input.node][input.output].clone();
        if s.len() != 4 {
            return Err(GraphError::node(&name, format!("expects a 4-D input, got {s:?}")));
        }
        let pad = same_padding(&model.graph.nodes[p.node].op, p.lower, &s)
            .ok_or_else(|| GraphError::node(&name, format!("cannot pad a window to its input {s:?}")))?;
        set_padding(&mut model.graph.nodes[p.node].op, pad);
    }
    Ok(())
}

/// The explicit padding `auto_pad = SAME_UPPER` (`SAME_LOWER` when `lower`) means for a convolution
/// or pooling window over `input` (NCHW); `None` for other operators or inputs.
fn same_padding(op: &Op, lower: bool, input: &[usize]) -> Option<Padding2d> {
    let [_, _, h, w] = <[usize; 4]>::try_from(input).ok()?;
    let same = |size: usize, k: usize, stride: usize, dilate: usize| -> (usize, usize) {
        let out = size.div_ceil(stride);
        let span = dilate * (k - 1) + 1;
        let total = ((out - 1) * stride + span).saturating_sub(size);
        let small = total / 2;
        if lower {
            (total - small, small)
        } else {
            (small, total - small)
        }
    };
    let (kernel, stride, dilate) = match op {
        Op::Convolution(c) => (c.kernel, c.stride, c.dilate),
        Op::Pooling(q) => (q.kernel, q.stride, [1, 1]),
        _ => return None,
    };
    if h == 0 || w == 0 || kernel.contains(&0) || stride.contains(&0) {
        return None;
    }
    let (top, bottom) = same(h, kernel[0], stride[0], dilate[0]);
    let (left, right) = same(w, kernel[1], stride[1], dilate[1]);
    Some(Padding2d {
        top,
        bottom,
        left,
        right,
    })
}

fn set_padding(op: &mut Op, pad: Padding2d) {
    match op {
        Op::Convolution(c) => c.pad = pad,
        Op::Pooling(q) => q.pad = pad,
        _ => {}
    }
}
