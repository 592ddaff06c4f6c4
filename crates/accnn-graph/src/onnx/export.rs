//! accnn's IR back to ONNX, on top of the model it was read from.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::attrs;
use super::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use super::stream::OnnxMessage;
use super::tensor::{dtype_of, encode, externalise, fingerprint, new_tensor};
use super::{Imported, OnnxSource};
use crate::error::GraphError;
use crate::ir::{ConvAttrs, Entry, FcAttrs, Model, Node, Op};
use crate::names::TakenNames;
use crate::tensor::Tensor;

/// Protobuf messages cannot exceed 2 GiB; past this size weights must go to an external file.
const PROTOBUF_LIMIT: usize = (1 << 31) - 1;
/// Tensors at least this large go to the external data file when there is one.
const EXTERNAL_MIN_BYTES: usize = 1024;

/// A written ONNX model: the `.onnx` bytes and, when asked for, the external data file's bytes.
pub struct EncodedOnnx {
    pub model: Vec<u8>,
    pub data: Option<Vec<u8>>,
}

/// A written ONNX model whose `.onnx` file is encoded as it is written ([`OnnxMessage`]), and, when
/// asked for, the external data file's bytes.
pub struct OnnxFiles {
    pub model: OnnxMessage,
    pub data: Option<Vec<u8>>,
}

impl OnnxFiles {
    /// Both files in memory.
    pub fn encode(self) -> EncodedOnnx {
        EncodedOnnx {
            model: self.model.to_bytes(),
            data: self.data,
        }
    }
}

/// Tensor names for the IR's entries: the original names wherever a node still computes what it
/// computed, the replaced node's names for the last node of a replacement, fresh names otherwise.
fn name_entries(source: &OnnxSource, model: &Model, graph: &GraphProto) -> Result<HashMap<Entry, String>, GraphError> {
    let nodes = &model.graph.nodes;
    let mut names: HashMap<Entry, String> = HashMap::new();
    let record = |i: usize| -> Option<&Imported> { source.nodes.get(&nodes[i].name) };
    let natural = |e: &Entry| -> Option<String> {
        record(e.node)
            .and_then(|r| r.outputs.get(e.output))
            .filter(|s| !s.is_empty())
            .cloned()
    };
    for (i, n) in nodes.iter().enumerate() {
        if matches!(n.op, Op::Variable) {
            names.insert(Entry::new(i), n.name.clone());
        }
    }
    let alias = |names: &mut HashMap<Entry, String>, e: Entry, name: &str| -> Result<(), GraphError> {
        match names.get(&e) {
            Some(existing) if existing != name => Err(GraphError::node(
                &nodes[e.node].name,
                format!("its output would need two names in ONNX, '{existing}' and '{name}'"),
            )),
            _ => {
                names.insert(e, name.to_string());
                Ok(())
            }
        }
    };
    // A reader accnn left alone tells which tensor name its input must keep.
    for (i, n) in nodes.iter().enumerate() {
        let Some(r) = record(i).filter(|r| r.inputs.len() == n.inputs.len()) else {
            continue;
        };
        for (k, e) in n.inputs.iter().enumerate() {
            if !matches!(nodes[e.node].op, Op::Variable) && natural(e).as_deref() != Some(&r.inputs[k]) {
                alias(&mut names, *e, &r.inputs[k])?;
            }
        }
    }
    if graph.output.len() == model.graph.heads.len() {
        for (o, e) in graph.output.iter().zip(&model.graph.heads) {
            if natural(e).as_deref() != Some(&o.name) {
                alias(&mut names, *e, &o.name)?;
            }
        }
    }
    let mut used = TakenNames::new(names.values().cloned());
    used.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
    used.extend(graph.initializer.iter().map(|t| t.name.clone()));
    used.extend(graph.input.iter().map(|i| i.name.clone()));
    let claimed: HashSet<String> = names.values().cloned().collect();
    for (i, n) in nodes.iter().enumerate() {
        if matches!(n.op, Op::Variable) {
            continue;
        }
        for k in 0..n.op.mxnet_output_count() {
            let e = Entry { node: i, output: k };
            if names.contains_key(&e) {
                continue;
            }
            let name = match natural(&e) {
                Some(name) if !claimed.contains(&name) => name,
                _ => used.fresh(&format!("{}_output{k}", n.name)),
            };
            names.insert(e, name);
        }
    }
    Ok(names)
}

/// New weights a re-emitted node needs beyond the IR's own variables.
type ExtraTensors = Vec<(String, Tensor)>;

/// The attributes of an ONNX `Conv` node computing a convolution of these attributes.
pub(crate) fn conv_attributes(c: &ConvAttrs) -> Vec<super::proto::AttributeProto> {
    let mut a = window_attributes(c.kernel, c.stride, &c.pad);
    a.extend([
        attrs::ints("dilations", &[c.dilate[0] as i64, c.dilate[1] as i64]),
        attrs::int("group", c.num_group as i64),
    ]);
    a
}

/// `kernel_shape`, `strides` and `pads` of a 2-D window (convolution or pooling).
pub(crate) fn window_attributes(
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: &crate::ir::Padding2d,
) -> Vec<super::proto::AttributeProto> {
    let pair = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
    vec![
        attrs::ints("kernel_shape", &pair(kernel)),
        attrs::ints("strides", &pair(stride)),
        attrs::ints(
            "pads",
            &[pad.top as i64, pad.left as i64, pad.bottom as i64, pad.right as i64],
        ),
    ]
}

/// ONNX nodes computing IR node `n`, which accnn created or changed.
fn emit(
    source: &OnnxSource,
    model: &Model,
    n: &Node,
    inputs: &[String],
    output: &str,
    template: Option<NodeProto>,
    fresh: &mut impl FnMut(&str) -> String,
) -> Result<(Vec<NodeProto>, ExtraTensors), GraphError> {
    let base = template.unwrap_or_else(|| NodeProto {
        name: n.name.clone(),
        ..Default::default()
    });
    let node = |op_type: &str, inputs: Vec<String>, output: String, attribute| NodeProto {
        op_type: op_type.to_string(),
        input: inputs,
        output: vec![output],
        attribute,
        domain: String::new(),
        ..base.clone()
    };
    let weight = |k: usize| -> Result<&Tensor, GraphError> {
        let var = &model.graph.nodes[n.inputs[k].node].name;
        model
            .param(var)
            .ok_or_else(|| GraphError::node(&n.name, format!("weight '{var}' is missing")))
    };
    match &n.op {
        Op::Convolution(c) => {
            let attribute = conv_attributes(c);
            Ok((
                vec![node("Conv", inputs.to_vec(), output.to_string(), attribute)],
                Vec::new(),
            ))
        }
        Op::FullyConnected(FcAttrs {
            num_hidden,
            no_bias,
            flatten: true,
        }) => {
            let mut ins = inputs.to_vec();
            let mut extra = Vec::new();
            // Gemm's C is optional from opset 11 on.
            if *no_bias && source.opset < 11 {
                let zero = fresh(&format!("{}_zero_bias", n.name));
                ins.push(zero.clone());
                extra.push((zero, Tensor::zeros(vec![*num_hidden])));
            }
            let attribute = vec![attrs::int("transB", 1)];
            Ok((vec![node("Gemm", ins, output.to_string(), attribute)], extra))
        }
        Op::FullyConnected(FcAttrs { no_bias, .. }) => {
            // MatMul applies to the last axis: its weight is (inputs, outputs).
            let w = weight(1)?;
            let (rows, cols) = (w.shape()[0], w.shape()[1]);
            let mut t = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = w.data()[r * cols + c];
                }
            }
            let transposed = fresh(&format!("{}_transposed", inputs[1]));
            let extra = vec![(transposed.clone(), Tensor::new(vec![cols, rows], t)?)];
            if *no_bias {
                let m = node(
                    "MatMul",
                    vec![inputs[0].clone(), transposed],
                    output.to_string(),
                    vec![],
                );
                return Ok((vec![m], extra));
            }
            let mid = fresh(&format!("{}_matmul", n.name));
            let mut m = node("MatMul", vec![inputs[0].clone(), transposed], mid.clone(), vec![]);
            m.name = format!("{}_matmul", base.name);
            let add = node("Add", vec![mid, inputs[2].clone()], output.to_string(), vec![]);
            Ok((vec![m, add], extra))
        }
        op => Err(GraphError::node(
            &n.name,
            format!(
                "accnn changed this {} node but cannot write it to ONNX",
                op.mxnet_name()
            ),
        )),
    }
}

/// Whether the import kept `t`'s values only in the IR (a float weight the IR held untransformed:
/// its proto lost its data, a one-byte marker left where the data was raw).
fn stripped_at_import(t: &TensorProto) -> bool {
    let float = matches!(
        dtype_of(t.data_type),
        Some(crate::DType::Float32 | crate::DType::Float16)
    );
    let values: i64 = t.dims.iter().product();
    let empty = t.float_data.is_empty() && t.int32_data.is_empty() && t.external_data.is_empty();
    float && values > 0 && empty && (t.raw_data.is_empty() || &t.raw_data[..] == b"-")
}

/// Whether the constant `name` is computed, through constant nodes, from a stored float weight
/// that `model` no longer holds (the import keeps float weights' values only in the IR).
fn reads_lost_weight(
    name: &str,
    source: &OnnxSource,
    model: &Model,
    stored_float: &HashSet<&str>,
    memo: &mut HashMap<String, bool>,
) -> bool {
    if let Some(&known) = memo.get(name) {
        return known;
    }
    // Cycle guard: a name under evaluation counts as not lost.
    memo.insert(name.to_string(), false);
    let graph = source.proto.graph.as_ref();
    let lost = match (source.constant_nodes.get(name), graph) {
        (Some(&(index, _)), Some(g)) => g.node[index].input.iter().any(|i| {
            if source.constant_nodes.contains_key(i) {
                !model.args.contains_key(i) && reads_lost_weight(i, source, model, stored_float, memo)
            } else {
                stored_float.contains(i.as_str()) && !model.args.contains_key(i)
            }
        }),
        _ => false,
    };
    memo.insert(name.to_string(), lost);
    lost
}

/// Writes `model`, read from (and rewritten since) `source`, as ONNX. With `external` (a file name
/// next to the model), tensors of 1 KiB and more go to that file instead of the model.
pub fn encode_onnx(source: &OnnxSource, model: &Model, external: Option<&str>) -> Result<EncodedOnnx, GraphError> {
    onnx_files(source, model, external).map(OnnxFiles::encode)
}

/// [`encode_onnx`], the `.onnx` file left to be encoded as it is written.
pub fn onnx_files(source: &OnnxSource, model: &Model, external: Option<&str>) -> Result<OnnxFiles, GraphError> {
    let original = source
        .proto
        .graph
        .as_ref()
        .ok_or_else(|| GraphError::Invalid("the original model has no graph".into()))?;
    let names = name_entries(source, model, original)?;
    let mut used = TakenNames::new(names.values().cloned());
    used.extend(original.initializer.iter().map(|t| t.name.clone()));
    used.extend(original.node.iter().flat_map(|n| n.output.iter().cloned()));
    let mut fresh = |base: &str| used.fresh(base);
    let mut nodes: Vec<NodeProto> = Vec::new();
    // Where each written node stood in the original (a replacement: where the node it replaces
    // stood), so that the written graph keeps the original's order.
    let mut positions: Vec<usize> = Vec::new();
    let mut last_position = 0;
    let mut extra: ExtraTensors = Vec::new();
    let mut written_protos: HashSet<usize> = HashSet::new();
    for (i, n) in model.graph.nodes.iter().enumerate() {
        if matches!(n.op, Op::Variable) {
            continue;
        }
        let inputs: Vec<String> = n.inputs.iter().map(|e| names[e].clone()).collect();
        let record = source.nodes.get(&n.name);
        if let Some(r) = record {
            let same_outputs = r
                .outputs
                .iter()
                .enumerate()
                .all(|(k, o)| o.is_empty() || names.get(&Entry { node: i, output: k }) == Some(o));
            if r.op == n.op && r.inputs == inputs && same_outputs {
                // A proto node that became several IR nodes (a Split's Slices) is written once.
                let fresh_protos: Vec<usize> = r
                    .proto_nodes
                    .iter()
                    .copied()
                    .filter(|&p| written_protos.insert(p))
                    .collect();
                nodes.extend(fresh_protos.iter().map(|&p| original.node[p].clone()));
                positions.extend(fresh_protos);
                last_position = r.proto_nodes.last().copied().unwrap_or(last_position);
                continue;
            }
        }
        let template = record.map(|r| original.node[r.proto_nodes[0]].clone());
        let position = record.map_or(last_position, |r| r.proto_nodes[0]);
        let output = names[&Entry::new(i)].clone();
        let (made, tensors) = emit(source, model, n, &inputs, &output, template, &mut fresh)?;
        positions.extend(std::iter::repeat_n(position, made.len()));
        nodes.extend(made);
        extra.extend(tensors);
    }
    let mut referenced: HashSet<String> = nodes.iter().flat_map(|n| n.input.iter().cloned()).collect();
    let originally_referenced: HashSet<&str> = original
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    // Constants the import computed (Constant nodes, folded weights and shape subgraphs) are written
    // as the nodes that computed them, with what those nodes read, unless the IR changed the value:
    // then the new value is an initializer, and no node may define the name again.
    let stored_float: HashSet<&str> = original
        .initializer
        .iter()
        .filter(|t| stripped_at_import(t))
        .map(|t| t.name.as_str())
        .collect();
    let mut lost_memo: HashMap<String, bool> = HashMap::new();
    let mut kept: Vec<usize> = Vec::new();
    let mut initializers: Vec<TensorProto> = Vec::new();
    let mut emitted: HashSet<String> = HashSet::new();
    let mut stack: Vec<String> = referenced
        .iter()
        .filter(|n| source.constant_nodes.contains_key(*n))
        .cloned()
        .collect();
    while let Some(name) = stack.pop() {
        let Some((index, print)) = source.constant_nodes.get(&name) else {
            continue;
        };
        if !emitted.insert(name.clone()) {
            continue;
        }
        // A kept node must find its inputs: a float initializer it reads, directly or through other
        // constant nodes, is stored only while the IR uses it (torch shares equal weights through
        // Identity nodes; when the layer that read the original is decomposed, the original goes),
        // so such a node is replaced by its value.
        let inputs_lost = reads_lost_weight(&name, source, model, &stored_float, &mut lost_memo);
        match model.args.get(&name) {
            Some(t) if Some(fingerprint(t)) != *print || inputs_lost => {
                initializers.push(new_tensor(&name, t, source.float_type))
            }
            None if inputs_lost => {
                return Err(GraphError::Invalid(format!(
                    "constant '{name}' is computed from a weight the rewritten model no longer holds"
                )));
            }
            _ => {
                kept.push(*index);
                for input in &original.node[*index].input {
                    referenced.insert(input.clone());
                    if source.constant_nodes.contains_key(input) && !emitted.contains(input) {
                        stack.push(input.clone());
                    }
                }
            }
        }
    }
    let mut all_nodes: Vec<NodeProto> = kept.iter().map(|&i| original.node[i].clone()).collect();
    all_nodes.extend(nodes);
    let mut all_positions = kept;
    all_positions.extend(positions);
    let all_nodes = topological_order(all_nodes, &all_positions);
    for t in &original.initializer {
        let wanted = referenced.contains(&t.name) || !originally_referenced.contains(t.name.as_str());
        if !wanted {
            continue;
        }
        let tensor = match model.args.get(&t.name) {
            Some(value) => {
                let unchanged =
                    source.initializers.get(&t.name).and_then(|i| i.fingerprint) == Some(fingerprint(value));
                let stripped = matches!(
                    dtype_of(t.data_type),
                    Some(crate::DType::Float32 | crate::DType::Float16)
                );
                if unchanged && !stripped {
                    t.clone()
                } else {
                    let dtype = dtype_of(t.data_type).unwrap_or(source.float_type);
                    encode(t.clone(), value, dtype)
                }
            }
            None if stored_float.contains(t.name.as_str()) => {
                return Err(GraphError::Invalid(format!(
                    "weight '{}' is read by the rewritten graph but its values are gone",
                    t.name
                )));
            }
            None => t.clone(),
        };
        emitted.insert(t.name.clone());
        initializers.push(tensor);
    }
    for (name, value) in model
        .args
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .chain(extra.iter().map(|(k, v)| (k.clone(), v)))
    {
        if referenced.contains(&name) && !emitted.contains(&name) {
            initializers.push(new_tensor(&name, value, source.float_type));
            emitted.insert(name);
        }
    }
    let produced: HashSet<&str> = all_nodes
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let original_inits: HashSet<&str> = original.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut graph = GraphProto {
        node: Vec::new(),
        initializer: Vec::new(),
        input: original
            .input
            .iter()
            .filter(|i| !original_inits.contains(i.name.as_str()) || emitted.contains(&i.name))
            .cloned()
            .collect(),
        value_info: original
            .value_info
            .iter()
            .filter(|v| produced.contains(v.name.as_str()))
            .cloned()
            .collect(),
        ..original.clone()
    };
    graph.node = all_nodes;
    let mut data = None;
    if let Some(location) = external {
        let mut bytes = Vec::new();
        for t in &mut initializers {
            if t.raw_data.len() >= EXTERNAL_MIN_BYTES {
                externalise(t, &mut bytes, location);
            }
        }
        data = Some(bytes);
    }
    // Before IR version 4 every initializer must also be a graph input.
    if source.proto.ir_version < 4 {
        let inputs: HashSet<String> = graph.input.iter().map(|i| i.name.clone()).collect();
        for t in initializers.iter().filter(|t| !inputs.contains(&t.name)) {
            let dims: Vec<Option<usize>> = t.dims.iter().map(|&d| Some(d as usize)).collect();
            graph
                .input
                .push(super::builder::typed_value_info(&t.name, t.data_type, Some(&dims)));
        }
    }
    graph.initializer = initializers;
    let mut proto = source.proto.clone();
    proto.graph = Some(graph);
    finish(proto, data)
}

/// The model's files, refused when protobuf cannot hold the model.
pub(crate) fn finish(proto: ModelProto, data: Option<Vec<u8>>) -> Result<OnnxFiles, GraphError> {
    let size = proto.encoded_len();
    if size > PROTOBUF_LIMIT {
        return Err(GraphError::Invalid(format!(
            "the ONNX model would be {size} bytes, over protobuf's 2 GiB limit: write its weights to an external data file"
        )));
    }
    Ok(OnnxFiles {
        model: OnnxMessage::new(proto),
        data,
    })
}

/// `nodes` ordered so that each comes after the producers of its inputs, otherwise by `positions`
/// (their places in the original graph): Kahn's algorithm taking the earliest ready node each time.
fn topological_order(nodes: Vec<NodeProto>, positions: &[usize]) -> Vec<NodeProto> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), i);
        }
    }
    let mut waiting = vec![0usize; nodes.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut from: Vec<usize> = n
            .input
            .iter()
            .filter_map(|s| producer.get(s.as_str()).copied())
            .collect();
        from.sort_unstable();
        from.dedup();
        for p in from.into_iter().filter(|&p| p != i) {
            waiting[i] += 1;
            readers[p].push(i);
        }
    }
    let key = |i: usize| Reverse((positions[i], i));
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> =
        (0..nodes.len()).filter(|&i| waiting[i] == 0).map(key).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(key(r));
            }
        }
    }
    // A cycle cannot come from a DAG; should one appear, its nodes keep their given order at the end.
    let placed: HashSet<usize> = order.iter().copied().collect();
    order.extend((0..nodes.len()).filter(|i| !placed.contains(i)));
    let mut slots: Vec<Option<NodeProto>> = nodes.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
