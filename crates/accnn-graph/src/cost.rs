//! Multiply-accumulate and parameter counts of the layers accnn can decompose.

use crate::ir::{Model, Op};
use crate::shape::Shapes;

/// The kind of a layer whose cost is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Convolution,
    FullyConnected,
}

/// Cost of one convolution or fully-connected layer for one input image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerCost {
    pub node: usize,
    pub name: String,
    pub kind: LayerKind,
    pub macs: u64,
    pub params: u64,
}

pub use crate::ops::conv::conv_macs;
pub use crate::ops::dense::fc_macs;

/// Per-image costs of every convolution and fully-connected layer whose shapes are known, in graph
/// order.
pub fn layer_costs(model: &Model, shapes: &Shapes) -> Vec<LayerCost> {
    let graph = &model.graph;
    let param_count = |node: usize, k: usize| -> u64 {
        graph.nodes[node]
            .inputs
            .get(k)
            .and_then(|e| model.param(&graph.nodes[e.node].name))
            .map_or(0, |t| t.len() as u64)
    };
    let mut out = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let Some(input) = node.inputs.first().map(|e| &shapes.outputs[e.node][e.output]) else {
            continue;
        };
        if !shapes.is_known(i) {
            continue;
        }
        let output = shapes.of(i);
        let kind = match &node.op {
            Op::Convolution(_) => LayerKind::Convolution,
            Op::FullyConnected(_) => LayerKind::FullyConnected,
            _ => continue,
        };
        let macs = node.op.macs(input, output);
        out.push(LayerCost {
            node: i,
            name: node.name.clone(),
            kind,
            macs,
            params: param_count(i, 1) + param_count(i, 2),
        });
    }
    out
}
