//! Folding inference-mode BatchNorm into the convolution before it.
//!
//! `BN(conv(x, W) + b) = conv(x, W * s) + b * s + t`, with BatchNorm's per-channel affine map
//! `x * s + t` ([`crate::ir::BatchNormAttrs::scale_shift`]: `s = gamma / sqrt(var + eps)`,
//! `t = beta - mean * s`), so the pair becomes one convolution. Decomposing the folded convolution
//! approximates what the network computes; decomposing the convolution alone would spend rank on
//! channels the BatchNorm then scales down.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::names::TakenNames;

use crate::error::GraphError;
use crate::ir::{BatchNormAttrs, Entry, Model, Node, Op};
use crate::tensor::Tensor;

/// One BatchNorm that was folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedBatchNorm {
    pub batch_norm: String,
    pub convolution: String,
}

/// Folds every BatchNorm (channel axis 1) whose input is a convolution nothing else reads, and whose
/// mean and variance outputs nothing reads. Other BatchNorms stay as they are.
///
/// The convolution keeps its name; its weight is rescaled in place when no other layer shares it
/// (else a new `NAME_folded_weight` is made), and it gains a bias `NAME_bias` if it had none.
/// Consumers of the BatchNorm read the convolution instead.
pub fn fold_batch_norms(model: Model) -> Result<(Model, Vec<FoldedBatchNorm>), GraphError> {
    let Model {
        graph,
        mut args,
        mut aux,
    } = model;
    let uses = graph.use_counts();
    let mut side_outputs_read = HashSet::new();
    for e in graph.nodes.iter().flat_map(|n| n.inputs.iter()).chain(&graph.heads) {
        if e.output > 0 {
            side_outputs_read.insert(e.node);
        }
    }
    // Convolution node -> BatchNorm node folded into it.
    let mut fold_into: HashMap<usize, usize> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let Op::BatchNorm(BatchNormAttrs { axis: 1, .. }) = node.op else {
            continue;
        };
        let Some(&input) = node.inputs.first() else { continue };
        let producer = &graph.nodes[input.node];
        if input.output == 0
            && matches!(producer.op, Op::Convolution(_))
            && uses[input.node] == 1
            && !side_outputs_read.contains(&i)
            && node.inputs.len() == 5
        {
            fold_into.insert(input.node, i);
        }
    }
    if fold_into.is_empty() {
        return Ok((Model { graph, args, aux }, Vec::new()));
    }
    let lookup = |name: &str, args: &BTreeMap<String, Tensor>, aux: &BTreeMap<String, Tensor>| {
        args.get(name).or_else(|| aux.get(name)).cloned()
    };
    let mut taken = TakenNames::new(graph.nodes.iter().map(|n| n.name.clone()));
    taken.extend(args.keys().cloned());
    taken.extend(aux.keys().cloned());
    let mut nodes: Vec<Node> = Vec::with_capacity(graph.nodes.len());
    let mut map: Vec<usize> = vec![usize::MAX; graph.nodes.len()];
    let mut folded = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let remap = |e: &Entry, map: &[usize]| Entry {
            node: map[e.node],
            output: e.output,
        };
        if let Op::BatchNorm(_) = node.op
            && let Some(conv) = fold_into.iter().find_map(|(&c, &b)| (b == i).then_some(c))
        {
            // Readers of the BatchNorm read the (already emitted, folded) convolution.
            map[i] = map[conv];
            continue;
        }
        let Some(&bn_index) = fold_into.get(&i) else {
            let inputs = node.inputs.iter().map(|e| remap(e, &map)).collect();
            nodes.push(Node { inputs, ..node.clone() });
            map[i] = nodes.len() - 1;
            continue;
        };
        let bn = &graph.nodes[bn_index];
        let Op::BatchNorm(attrs) = &bn.op else {
            unreachable!("fold_into maps to BatchNorm nodes")
        };
        let Op::Convolution(conv) = &node.op else {
            unreachable!("fold_into is keyed by convolutions")
        };
        let param = |k: usize, what: &str| -> Result<Tensor, GraphError> {
            let var = &graph.nodes[bn.inputs[k].node].name;
            lookup(var, &args, &aux).ok_or_else(|| GraphError::node(&bn.name, format!("{what} '{var}' is missing")))
        };
        let (gamma, beta, mean, var) = (
            param(1, "gamma")?,
            param(2, "beta")?,
            param(3, "moving mean")?,
            param(4, "moving variance")?,
        );
        let channels = conv.num_filter;
        for (t, what) in [(&gamma, "gamma"), (&beta, "beta"), (&mean, "mean"), (&var, "variance")] {
            if t.len() != channels {
                return Err(GraphError::node(
                    &bn.name,
                    format!("{what} has {} values for {channels} channels", t.len()),
                ));
            }
        }
        let wide = |t: &Tensor| t.data().iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (scale, shift) = attrs.scale_shift(&wide(&gamma), &wide(&beta), &wide(&mean), &wide(&var));
        let weight_entry = *node
            .inputs
            .get(1)
            .ok_or_else(|| GraphError::node(&node.name, "has no weight input"))?;
        let weight_name = graph.nodes[weight_entry.node].name.clone();
        let mut weight = lookup(&weight_name, &args, &aux)
            .ok_or_else(|| GraphError::node(&node.name, format!("weight '{weight_name}' is missing")))?;
        let per_filter = weight.len() / channels.max(1);
        for (k, chunk) in weight.data_mut().chunks_mut(per_filter.max(1)).enumerate() {
            for w in chunk {
                *w = (*w as f64 * scale[k]) as f32;
            }
        }
        let old_bias: Option<(Entry, String)> = (!conv.no_bias)
            .then(|| node.inputs.get(2).map(|e| (*e, graph.nodes[e.node].name.clone())))
            .flatten();
        let base_bias = match &old_bias {
            Some((_, name)) => lookup(name, &args, &aux)
                .ok_or_else(|| GraphError::node(&node.name, format!("bias '{name}' is missing")))?,
            None => Tensor::zeros(vec![channels]),
        };
        let bias_data: Vec<f32> = (0..channels)
            .map(|k| (base_bias.data()[k] as f64 * scale[k] + shift[k]) as f32)
            .collect();
        let bias = Tensor::new(vec![channels], bias_data)?;
        let variable = |name: String, nodes: &mut Vec<Node>| {
            nodes.push(Node {
                name,
                op: Op::Variable,
                inputs: Vec::new(),
                attrs: BTreeMap::new(),
            });
            Entry::new(nodes.len() - 1)
        };
        // Shared weights keep their value for the other readers: the folded one gets a new name.
        let weight_input = if uses[weight_entry.node] == 1 {
            args.insert(weight_name, weight);
            remap(&weight_entry, &map)
        } else {
            let name = taken.fresh(&format!("{}_folded_weight", node.name));
            args.insert(name.clone(), weight);
            variable(name, &mut nodes)
        };
        let bias_input = match old_bias {
            Some((entry, name)) if uses[entry.node] == 1 => {
                args.insert(name, bias);
                remap(&entry, &map)
            }
            _ => {
                let name = taken.fresh(&format!("{}_bias", node.name));
                args.insert(name.clone(), bias);
                variable(name, &mut nodes)
            }
        };
        let data = remap(
            node.inputs
                .first()
                .ok_or_else(|| GraphError::node(&node.name, "has no data input"))?,
            &map,
        );
        let mut new_conv = conv.clone();
        new_conv.no_bias = false;
        let mut node_attrs = node.attrs.clone();
        if node_attrs.contains_key("no_bias") {
            node_attrs.insert("no_bias".into(), "False".into());
        }
        nodes.push(Node {
            name: node.name.clone(),
            op: Op::Convolution(new_conv),
            inputs: vec![data, weight_input, bias_input],
            attrs: node_attrs,
        });
        map[i] = nodes.len() - 1;
        folded.push(FoldedBatchNorm {
            batch_norm: bn.name.clone(),
            convolution: node.name.clone(),
        });
    }
    let heads = graph
        .heads
        .iter()
        .map(|e| Entry {
            node: map[e.node],
            output: e.output,
        })
        .collect();
    let mut out = Model {
        graph: crate::ir::Graph { nodes, heads },
        args: std::mem::take(&mut args),
        aux: std::mem::take(&mut aux),
    };
    crate::rewrite::drop_unused_weights(&mut out);
    out.graph.validate()?;
    Ok((out, folded))
}
