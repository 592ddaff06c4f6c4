//! MXNet symbol JSON (`PREFIX-symbol.json`).
//!
//! Two dialects exist in the wild. The 2016 one (MXNet 0.7-0.9, the original accnn's era) puts operator
//! parameters under `"param"` and user attributes under `"attr"`, writes inputs as `[node, output]`
//! and has `backward_source_id`. MXNet 1.x puts both under `"attrs"`, writes inputs as
//! `[node, output, version]` and adds `node_row_ptr`. Both are read; 1.x is written.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::GraphError;
use crate::ir::{Entry, Graph, Node, Op};
use crate::mxnet::ops::{op_attrs, parse_op};

/// MXNet version stamp written into the symbol (1.9.1).
const MXNET_VERSION: i64 = 10901;

fn entry(value: &Value, path: &Path, ctx: &str) -> Result<Entry, GraphError> {
    let arr = value.as_array().filter(|a| (2..=3).contains(&a.len())).ok_or_else(|| {
        GraphError::format(
            path,
            format!("{ctx}: an input must be [node, output] or [node, output, version]"),
        )
    })?;
    let index = |v: &Value| v.as_u64().and_then(|x| usize::try_from(x).ok());
    match (index(&arr[0]), index(&arr[1])) {
        (Some(node), Some(output)) => Ok(Entry { node, output }),
        _ => Err(GraphError::format(
            path,
            format!("{ctx}: input indices must be non-negative integers"),
        )),
    }
}

fn string_map(value: Option<&Value>, path: &Path, ctx: &str) -> Result<BTreeMap<String, String>, GraphError> {
    let mut out = BTreeMap::new();
    let Some(value) = value else { return Ok(out) };
    let obj = value
        .as_object()
        .ok_or_else(|| GraphError::format(path, format!("{ctx}: attributes must be an object")))?;
    for (k, v) in obj {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(GraphError::format(
                    path,
                    format!("{ctx}: attribute '{k}' must be a string"),
                ));
            }
        };
        out.insert(k.clone(), text);
    }
    Ok(out)
}

/// Parses symbol JSON text; `path` is only used in error messages.
pub fn parse_symbol(text: &str, path: &Path) -> Result<Graph, GraphError> {
    let root: Value = serde_json::from_str(text).map_err(|e| GraphError::format(path, format!("invalid JSON: {e}")))?;
    let nodes = root
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| GraphError::format(path, "no \"nodes\" array: not an MXNet symbol file"))?;
    let mut graph = Graph::default();
    for (i, raw) in nodes.iter().enumerate() {
        let ctx = format!("node #{i}");
        let name = raw
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::format(path, format!("{ctx} has no name")))?
            .to_string();
        let op_name = raw
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::format(path, format!("node '{name}' has no op")))?;
        // 1.x: "attrs"; 0.x: "param" (operator parameters) + "attr" (user attributes).
        let mut attrs = string_map(raw.get("attrs"), path, &ctx)?;
        attrs.extend(string_map(raw.get("param"), path, &ctx)?);
        for (k, v) in string_map(raw.get("attr"), path, &ctx)? {
            // Old user attributes such as `lr_mult` become MXNet 1.x hidden attributes `__lr_mult__`.
            let key = if k.starts_with("__") { k } else { format!("__{k}__") };
            attrs.insert(key, v);
        }
        let inputs = raw
            .get("inputs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| entry(e, path, &format!("node '{name}'")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let op_attrs: BTreeMap<String, String> = attrs
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let op = parse_op(&name, op_name, &op_attrs).map_err(|e| GraphError::format(path, e.to_string()))?;
        graph.nodes.push(Node {
            name,
            op,
            inputs,
            attrs,
        });
    }
    let heads = root
        .get("heads")
        .and_then(Value::as_array)
        .ok_or_else(|| GraphError::format(path, "no \"heads\" array"))?;
    graph.heads = heads
        .iter()
        .map(|h| entry(h, path, "heads"))
        .collect::<Result<_, _>>()?;
    if graph.heads.is_empty() {
        return Err(GraphError::format(path, "the symbol has no outputs"));
    }
    graph.validate().map_err(|e| GraphError::format(path, e.to_string()))?;
    Ok(graph)
}

/// Serialises a graph as MXNet 1.x symbol JSON (what `mx.sym.load` and `load_checkpoint` read).
pub fn symbol_json(graph: &Graph) -> String {
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    let mut arg_nodes = Vec::new();
    let mut row_ptr = vec![0usize];
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut obj = Map::new();
        obj.insert("op".into(), json!(node.op.mxnet_name()));
        obj.insert("name".into(), json!(node.name));
        // Attributes are written as read, except that a node read as a shorthand op (`relu`,
        // `sigmoid`, `tanh`) is written as `Activation` and needs the act_type it implied.
        let mut attrs = node.attrs.clone();
        if node.op.mxnet_name() == "Activation"
            && let Some(act_type) = op_attrs(&node.op).ok().and_then(|mut a| a.remove("act_type"))
        {
            attrs.insert("act_type".into(), act_type);
        }
        if !attrs.is_empty() {
            obj.insert("attrs".into(), json!(attrs));
        }
        let inputs: Vec<Value> = node.inputs.iter().map(|e| json!([e.node, e.output, 0])).collect();
        obj.insert("inputs".into(), Value::Array(inputs));
        nodes.push(Value::Object(obj));
        if matches!(node.op, Op::Variable) {
            arg_nodes.push(i);
        }
        row_ptr.push(row_ptr.last().copied().unwrap_or(0) + node.op.mxnet_output_count());
    }
    let heads: Vec<Value> = graph.heads.iter().map(|e| json!([e.node, e.output, 0])).collect();
    let root = json!({
        "nodes": nodes,
        "arg_nodes": arg_nodes,
        "node_row_ptr": row_ptr,
        "heads": heads,
        "attrs": {"mxnet_version": ["int", MXNET_VERSION]},
    });
    let mut text = serde_json::to_string_pretty(&root).expect("a JSON value always serialises");
    text.push('\n');
    text
}
