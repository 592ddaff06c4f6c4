//! ONNX `ModelProto` to accnn's IR. How each ONNX operator maps onto the IR is in `convert`.

mod convert;

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

struct Importer {
    opset: i64,
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
}

impl Converted {
    fn new(op: Op, inputs: Vec<Entry>) -> Self {
        Converted {
            op,
            inputs,
            merged: Vec::new(),
            outputs: None,
            same_pad: None,
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
        let e = Entry::new(self.nodes.len() - 1);
        self.entry_names.insert(e, name);
        e
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
            let e = self.push_variable(name.to_string());
            if let Some(t) = tensor {
                self.args.insert(name.to_string(), t);
            }
            self.produced.insert(name.to_string(), e);
            return Some(e);
        }
        None
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
            Some(Value::Ints(v)) => Some(v),
            _ => None,
        }
    }

    fn scalar(&self, name: &str) -> Option<f32> {
        self.float_const(name).filter(|t| t.len() == 1).map(|t| t.data()[0])
    }
}

pub(crate) fn declared_shape(proto: &ModelProto, name: &str) -> Option<Vec<Option<usize>>> {
    use super::proto::tensor_shape_proto::dimension::Value as Dim;
    use super::proto::type_proto::Value as Type;
    let input = proto.graph.as_ref()?.input.iter().find(|i| i.name == name)?;
    let Some(Type::TensorType(t)) = input.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                _ => None,
            })
            .collect(),
    )
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
    let mut im = Importer {
        opset,
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
    let mut merged_away: HashSet<usize> = HashSet::new();
    let nodes = graph.node.clone();
    for (index, n) in nodes.iter().enumerate() {
        if merged_away.contains(&index) || constant_nodes.values().any(|&(c, _)| c == index) {
            continue;
        }
        let base = if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_else(|| format!("node{index}"))
        } else {
            n.name.clone()
        };
        let label = base.clone();
        let converted = im.convert(n, &label, &consumers, &nodes)?;
        let converted = match converted {
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
                    },
                    inputs,
                )
            }
        };
        let name = if im.taken.contains(&base) && !n.output.contains(&base) {
            im.fresh(&base)
        } else {
            im.taken.insert(base.clone());
            base
        };
        let outputs = converted.outputs.clone().unwrap_or_else(|| n.output.clone());
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
        if let Some(lower) = converted.same_pad {
            im.same_pads.push(SamePad { node: me, lower });
        }
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
                op: converted.op,
                inputs: inputs_named,
                outputs,
            },
        );
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
        "value_int" => Some(Value::Ints(vec![attr.i])),
        "value_ints" => Some(Value::Ints(attr.ints.clone())),
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
        let s = shapes.outputs[input.node][input.output].clone();
        if s.len() != 4 {
            return Err(GraphError::node(&name, format!("expects a 4-D input, got {s:?}")));
        }
        let same = |size: usize, k: usize, stride: usize, dilate: usize| -> (usize, usize) {
            let out = size.div_ceil(stride);
            let span = dilate * (k - 1) + 1;
            let total = ((out - 1) * stride + span).saturating_sub(size);
            let small = total / 2;
            if p.lower {
                (total - small, small)
            } else {
                (small, total - small)
            }
        };
        let pad = match &model.graph.nodes[p.node].op {
            Op::Convolution(c) => {
                let (t, b) = same(s[2], c.kernel[0], c.stride[0], c.dilate[0]);
                let (l, r) = same(s[3], c.kernel[1], c.stride[1], c.dilate[1]);
                Padding2d {
                    top: t,
                    bottom: b,
                    left: l,
                    right: r,
                }
            }
            Op::Pooling(q) => {
                let (t, b) = same(s[2], q.kernel[0], q.stride[0], 1);
                let (l, r) = same(s[3], q.kernel[1], q.stride[1], 1);
                Padding2d {
                    top: t,
                    bottom: b,
                    left: l,
                    right: r,
                }
            }
            _ => unreachable!("only convolutions and pooling take auto_pad"),
        };
        match &mut model.graph.nodes[p.node].op {
            Op::Convolution(c) => c.pad = pad,
            Op::Pooling(q) => q.pad = pad,
            _ => {}
        }
    }
    Ok(())
}
