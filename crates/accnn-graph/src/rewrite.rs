//! Graph rewriting: replacing a layer by its low-rank pair.

use std::collections::{BTreeMap, HashMap};

use crate::error::GraphError;
use crate::ir::{ConvAttrs, Entry, FcAttrs, Graph, Model, Node, Op, Padding2d};
use crate::mxnet::op_attrs;
use crate::tensor::Tensor;

/// One layer to replace by two thinner layers; what the halves are follows from the layer's operator.
///
/// - A `(N, C/g, kh, kw)` convolution becomes `NAME_v` with weight `first` `(K, C/g, kh, 1)`, no bias,
///   carrying the vertical stride, padding and dilation, followed by `NAME_h` with weight `second`
///   `(N, K/g, 1, kw)`, the horizontal ones and the bias. Both keep `num_group`.
/// - An `(N, M)` fully-connected layer becomes `NAME_red` with weight `first` `(K, M)` and no bias,
///   followed by `NAME_rec` with weight `second` `(N, K)` and the bias.
///
/// The second half takes the layer's own bias, or `bias` when it is given (a least-squares refit
/// fits a new one); a layer without a bias gets none.
#[derive(Clone, Debug)]
pub struct LayerSplit {
    /// The node replaced, in the model the split is applied to.
    pub node: usize,
    pub first: Tensor,
    pub second: Tensor,
    /// A replacement for the bias of the second half; given for a layer without a bias, the
    /// second half gets one.
    pub bias: Option<Tensor>,
}

impl LayerSplit {
    /// The split of `node` into halves with weights `first` and `second`, keeping the layer's bias.
    pub fn new(node: usize, first: Tensor, second: Tensor) -> Self {
        LayerSplit {
            node,
            first,
            second,
            bias: None,
        }
    }

    /// The rank of the split: the intermediate channels or features.
    pub fn rank(&self) -> usize {
        self.first.shape().first().copied().unwrap_or(0)
    }
}

/// Whether a convolution is pointwise (1x1): its split is a channel SVD, `(K, C, 1, 1)` then
/// `(N, K, 1, 1)`, and the first half takes all of the stride, padding and dilation so that the
/// second runs on the smaller output grid.
pub fn is_pointwise(c: &ConvAttrs) -> bool {
    c.kernel == [1, 1]
}

/// Attributes of the vertical half of a split convolution with `rank` intermediate channels.
pub fn vertical_conv(c: &ConvAttrs, rank: usize) -> ConvAttrs {
    if is_pointwise(c) {
        return ConvAttrs {
            num_filter: rank,
            no_bias: true,
            ..c.clone()
        };
    }
    ConvAttrs {
        kernel: [c.kernel[0], 1],
        stride: [c.stride[0], 1],
        dilate: [c.dilate[0], 1],
        pad: Padding2d {
            top: c.pad.top,
            bottom: c.pad.bottom,
            left: 0,
            right: 0,
        },
        num_filter: rank,
        num_group: c.num_group,
        no_bias: true,
    }
}

/// Attributes of the horizontal half of a split convolution.
pub fn horizontal_conv(c: &ConvAttrs) -> ConvAttrs {
    if is_pointwise(c) {
        return ConvAttrs {
            stride: [1, 1],
            dilate: [1, 1],
            pad: Padding2d::default(),
            ..c.clone()
        };
    }
    ConvAttrs {
        kernel: [1, c.kernel[1]],
        stride: [1, c.stride[1]],
        dilate: [1, c.dilate[1]],
        pad: Padding2d {
            top: 0,
            bottom: 0,
            left: c.pad.left,
            right: c.pad.right,
        },
        num_filter: c.num_filter,
        num_group: c.num_group,
        no_bias: c.no_bias,
    }
}

struct Builder {
    nodes: Vec<Node>,
    names: std::collections::HashSet<String>,
}

impl Builder {
    fn push(
        &mut self,
        name: String,
        op: Op,
        inputs: Vec<Entry>,
        hidden: &BTreeMap<String, String>,
    ) -> Result<Entry, GraphError> {
        if !self.names.insert(name.clone()) {
            return Err(GraphError::node(
                &name,
                "a node of this name already exists; cannot create it",
            ));
        }
        // MXNet spellings of the attributes, for writing MXNet symbols. Layers read from ONNX may
        // have asymmetric padding, which MXNet cannot express; they are never written as MXNet.
        let mut attrs = op_attrs(&op).unwrap_or_default();
        attrs.extend(hidden.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.nodes.push(Node {
            name,
            op,
            inputs,
            attrs,
        });
        Ok(Entry::new(self.nodes.len() - 1))
    }

    fn variable(&mut self, name: String) -> Result<Entry, GraphError> {
        self.push(name, Op::Variable, Vec::new(), &BTreeMap::new())
    }
}

/// Applies the splits and returns the new model; weights no layer uses any more are dropped.
/// Subnormal values in the new weights are flushed to zero.
///
/// The model is consumed so that its weights move into the result instead of being copied (a
/// VGG-16 holds half a gigabyte of them).
pub fn apply_splits(model: Model, splits: Vec<LayerSplit>) -> Result<Model, GraphError> {
    let Model {
        graph: old_graph,
        args,
        aux,
    } = model;
    let old = &old_graph;
    let lookup = Model {
        graph: Graph::default(),
        args,
        aux,
    };
    let mut by_node: HashMap<usize, LayerSplit> = HashMap::new();
    for s in splits {
        let node = s.node;
        if node >= old.nodes.len() {
            return Err(GraphError::Invalid(format!("split refers to missing node #{node}")));
        }
        if by_node.insert(node, s).is_some() {
            return Err(GraphError::node(&old.nodes[node].name, "split twice"));
        }
    }
    for s in by_node.values_mut() {
        s.first.flush_subnormals();
        s.second.flush_subnormals();
        if let Some(b) = &mut s.bias {
            b.flush_subnormals();
        }
    }
    // New weights, added once the old ones are no longer borrowed.
    let mut added: Vec<(String, Tensor)> = Vec::with_capacity(3 * by_node.len());
    let mut b = Builder {
        nodes: Vec::with_capacity(old.nodes.len() + 4 * by_node.len()),
        names: Default::default(),
    };
    b.names.extend(old.nodes.iter().map(|n| n.name.clone()));
    let mut map: Vec<usize> = Vec::with_capacity(old.nodes.len());
    let remap = |map: &[usize], e: &Entry| Entry {
        node: map[e.node],
        output: e.output,
    };
    for (i, node) in old.nodes.iter().enumerate() {
        let Some(split) = by_node.remove(&i) else {
            let inputs = node.inputs.iter().map(|e| remap(&map, e)).collect();
            b.nodes.push(Node { inputs, ..node.clone() });
            map.push(b.nodes.len() - 1);
            continue;
        };
        let name = &node.name;
        let hidden: BTreeMap<String, String> = node
            .attrs
            .iter()
            .filter(|(k, _)| k.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let data = remap(
            &map,
            node.inputs
                .first()
                .ok_or_else(|| GraphError::node(name, "has no data input"))?,
        );
        let bias = node.inputs.get(2).map(|e| old.nodes[e.node].name.clone());
        let LayerSplit {
            first: w1,
            second: w2,
            bias: new_bias,
            ..
        } = split;
        let bias_value = |has_bias: bool| -> Result<Option<Tensor>, GraphError> {
            if !has_bias {
                return Ok(None);
            }
            if let Some(b) = &new_bias {
                return Ok(Some(b.clone()));
            }
            let var = bias
                .as_ref()
                .ok_or_else(|| GraphError::node(name, "has no bias input"))?;
            lookup
                .param(var)
                .cloned()
                .map(Some)
                .ok_or_else(|| GraphError::node(name, format!("bias '{var}' is missing")))
        };
        let (first, second, first_op, second_op, b2) = match &node.op {
            Op::Convolution(c) => {
                let (vertical, horizontal) = (&w1, &w2);
                let rank = vertical.shape().first().copied().unwrap_or(0);
                let expect_v = [rank, vertical.shape().get(1).copied().unwrap_or(0), c.kernel[0], 1];
                let expect_h = [c.num_filter, rank / c.num_group.max(1), 1, c.kernel[1]];
                if rank == 0
                    || rank % c.num_group != 0
                    || vertical.shape() != expect_v
                    || horizontal.shape() != expect_h
                {
                    return Err(GraphError::node(
                        name,
                        format!(
                            "factor shapes {:?} and {:?} do not fit the convolution",
                            vertical.shape(),
                            horizontal.shape()
                        ),
                    ));
                }
                (
                    format!("{name}{}", CONV_PAIR[0]),
                    format!("{name}{}", CONV_PAIR[1]),
                    Op::Convolution(vertical_conv(c, rank)),
                    // A corrected bias may be given to a layer that had none.
                    Op::Convolution(ConvAttrs {
                        no_bias: c.no_bias && new_bias.is_none(),
                        ..horizontal_conv(c)
                    }),
                    bias_value(!c.no_bias || new_bias.is_some())?,
                )
            }
            Op::FullyConnected(f) => {
                let (reduce, reconstruct) = (&w1, &w2);
                let rank = reduce.shape().first().copied().unwrap_or(0);
                if rank == 0 || reduce.shape().len() != 2 || reconstruct.shape() != [f.num_hidden, rank] {
                    return Err(GraphError::node(
                        name,
                        format!(
                            "factor shapes {:?} and {:?} do not fit the layer",
                            reduce.shape(),
                            reconstruct.shape()
                        ),
                    ));
                }
                (
                    format!("{name}{}", FC_PAIR[0]),
                    format!("{name}{}", FC_PAIR[1]),
                    Op::FullyConnected(FcAttrs {
                        num_hidden: rank,
                        no_bias: true,
                        flatten: f.flatten,
                    }),
                    Op::FullyConnected(FcAttrs {
                        num_hidden: f.num_hidden,
                        no_bias: f.no_bias && new_bias.is_none(),
                        flatten: f.flatten,
                    }),
                    bias_value(!f.no_bias || new_bias.is_some())?,
                )
            }
            op => {
                return Err(GraphError::node(
                    name,
                    format!("cannot split a {} node this way", op.mxnet_name()),
                ));
            }
        };
        let w1_name = format!("{first}_weight");
        let w1_var = b.variable(w1_name.clone())?;
        let mid = b.push(first, first_op, vec![data, w1_var], &hidden)?;
        let w2_name = format!("{second}_weight");
        let w2_var = b.variable(w2_name.clone())?;
        let mut inputs = vec![mid, w2_var];
        if let Some(bias) = b2 {
            let bias_name = format!("{second}_bias");
            inputs.push(b.variable(bias_name.clone())?);
            added.push((bias_name, bias));
        }
        let last = b.push(second, second_op, inputs, &hidden)?;
        added.push((w1_name, w1));
        added.push((w2_name, w2));
        map.push(last.node);
    }
    let heads: Vec<Entry> = old.heads.iter().map(|e| remap(&map, e)).collect();
    let mut out = Model {
        graph: Graph { nodes: b.nodes, heads },
        ..lookup
    };
    out.args.extend(added);
    drop_unused_weights(&mut out);
    out.graph.validate()?;
    Ok(out)
}

/// Removes variable nodes nothing consumes any more, with their stored values.
pub(crate) fn drop_unused_weights(model: &mut Model) {
    let uses = model.graph.use_counts();
    let dead: Vec<bool> = model
        .graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| uses[i] == 0 && matches!(n.op, Op::Variable) && model.param(&n.name).is_some())
        .collect();
    if !dead.contains(&true) {
        return;
    }
    let mut map = vec![usize::MAX; dead.len()];
    let mut kept = Vec::with_capacity(dead.len());
    for (i, node) in std::mem::take(&mut model.graph.nodes).into_iter().enumerate() {
        if dead[i] {
            model.args.remove(&node.name);
            model.aux.remove(&node.name);
            continue;
        }
        map[i] = kept.len();
        kept.push(node);
    }
    for node in &mut kept {
        for e in &mut node.inputs {
            e.node = map[e.node];
        }
    }
    for e in &mut model.graph.heads {
        e.node = map[e.node];
    }
    model.graph.nodes = kept;
}

/// The suffixes of the two layers a decomposed convolution becomes: vertical, horizontal.
pub const CONV_PAIR: [&str; 2] = ["_v", "_h"];
/// The suffixes of the two layers a decomposed fully-connected layer becomes: reduce, reconstruct.
pub const FC_PAIR: [&str; 2] = ["_red", "_rec"];

/// The layer that `second_half` (the output layer of a decomposed pair) replaced, by its name.
pub fn replaced_layer(second_half: &str) -> Option<&str> {
    second_half
        .strip_suffix(CONV_PAIR[1])
        .or_else(|| second_half.strip_suffix(FC_PAIR[1]))
}
