//! Multiply-accumulate and parameter counts of the layers accnn can decompose.

use crate::ir::{ConvAttrs, FcAttrs, Model, Op};
use crate::shape::Shapes;
use crate::tensor::element_count;

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

/// MACs of a convolution producing an output of `out_hw` from `in_channels` channels, per image.
pub fn conv_macs(c: &ConvAttrs, in_channels: usize, out_hw: (usize, usize)) -> u64 {
    let per_output = (in_channels / c.num_group) as u64 * (c.kernel[0] * c.kernel[1]) as u64;
    c.num_filter as u64 * out_hw.0 as u64 * out_hw.1 as u64 * per_output
}

/// MACs of a fully-connected layer applied to `rows` vectors of `features` values.
pub fn fc_macs(f: &FcAttrs, rows: usize, features: usize) -> u64 {
    rows as u64 * features as u64 * f.num_hidden as u64
}

/// Per-image costs of every convolution and fully-connected layer, in graph order.
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
        let output = shapes.of(i);
        let (kind, macs) = match &node.op {
            Op::Convolution(c) => (LayerKind::Convolution, conv_macs(c, input[1], (output[2], output[3]))),
            Op::FullyConnected(f) => {
                let (rows, features) = if f.flatten {
                    (1, element_count(&input[1..]).unwrap_or(0))
                } else {
                    (
                        element_count(&input[1..input.len() - 1]).unwrap_or(0),
                        input[input.len() - 1],
                    )
                };
                (LayerKind::FullyConnected, fc_macs(f, rows, features))
            }
            _ => continue,
        };
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
