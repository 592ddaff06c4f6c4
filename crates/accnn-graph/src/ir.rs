//! The model IR: a topologically ordered DAG of operator nodes plus named weight tensors.
//!
//! Weights are graph inputs like in MXNet and ONNX: a convolution node takes its data, weight and bias
//! as three [`Entry`] inputs, the latter two produced by [`Op::Variable`] nodes whose names key into
//! [`Model::args`] (learned parameters) or [`Model::aux`] (running statistics).

use std::collections::BTreeMap;

use crate::error::GraphError;
use crate::tensor::Tensor;

/// Padding of a 2-D window: rows added above and below, columns added left and right.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Padding2d {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding2d {
    /// The same padding on both sides of each axis, as MXNet's `pad=(h, w)`.
    pub fn symmetric(h: usize, w: usize) -> Self {
        Padding2d {
            top: h,
            bottom: h,
            left: w,
            right: w,
        }
    }

    /// `Some((h, w))` when each axis is padded equally on both sides.
    pub fn as_symmetric(&self) -> Option<(usize, usize)> {
        (self.top == self.bottom && self.left == self.right).then_some((self.top, self.left))
    }
}

pub use crate::ops::activation::Activation;
pub use crate::ops::batch_norm::BatchNormAttrs;
pub use crate::ops::conv::ConvAttrs;
pub use crate::ops::conv_transpose::ConvTransposeAttrs;
pub use crate::ops::dense::FcAttrs;
pub use crate::ops::elementwise::BinaryOp;
pub use crate::ops::lrn::LrnAttrs;
pub use crate::ops::normalization::{NormKind, NormalizationAttrs};
pub use crate::ops::pool::{PoolAttrs, PoolConvention, PoolKind};
pub use crate::ops::rearrange::{PadAttrs, PadMode, SpaceDepth};
pub use crate::ops::reduce::{ReduceAttrs, ReduceOp};
pub use crate::ops::resize::{CoordinateTransform, NearestRounding, ResizeAttrs, ResizeMode, ResizeTarget};
pub use crate::ops::shape_ops::SliceAttrs;

/// The operators accnn understands; each has its module under [`crate::ops`]. Anything else is kept
/// as [`Op::Opaque`].
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input or a weight; its value, if any, lives in [`Model::args`] or [`Model::aux`].
    Variable,
    Convolution(ConvAttrs),
    FullyConnected(FcAttrs),
    Activation(Activation),
    Pooling(PoolAttrs),
    /// The axes before `axis` (negative: from the end) into one, the rest into another (MXNet's
    /// Flatten is `axis: 1`).
    Flatten {
        axis: i64,
    },
    Dropout,
    BatchNorm(BatchNormAttrs),
    /// An elementwise binary operator; `broadcast` allows numpy-style broadcasting.
    Binary {
        op: BinaryOp,
        broadcast: bool,
    },
    /// Concatenation along `axis` (negative: from the end).
    Concat {
        axis: i64,
    },
    /// Softmax over `axis` (MXNet `softmax`, default last axis written as -1).
    Softmax {
        axis: i64,
    },
    /// MXNet's training head: softmax over axis 1 at inference; the label input is ignored.
    SoftmaxOutput,
    /// MXNet `Reshape` with its special codes 0 (copy), -1 (infer), -2 (copy rest), -3 (merge two).
    Reshape {
        shape: Vec<i64>,
    },
    /// Output axis `k` is input axis `perm[k]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// Local response normalisation across channels.
    Lrn(LrnAttrs),
    /// A reduction over axes.
    Reduce(ReduceAttrs),
    /// Matrix product of two computed tensors (not a layer: neither side is a stored weight).
    MatMul,
    /// A strided window of the input.
    Slice(SliceAttrs),
    /// Removes size-1 axes (all of them when `None`; negative from the end).
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    /// Inserts size-1 axes at `axes` of the output (negative from its end).
    Unsqueeze {
        axes: Vec<i64>,
    },
    /// A transposed convolution (learned upsampling); run, not decomposed.
    ConvTranspose(ConvTransposeAttrs),
    /// Nearest or linear resampling to a new size.
    Resize(ResizeAttrs),
    /// Layer, instance or group normalisation (statistics of the input itself).
    Normalization(NormalizationAttrs),
    /// The logarithm of Softmax over `axis`.
    LogSoftmax {
        axis: i64,
    },
    /// Pads (or crops) every axis.
    Pad(PadAttrs),
    /// The slices at constant `indices` (shaped `index_dims`) along `axis`.
    Gather {
        axis: i64,
        indices: Vec<i64>,
        index_dims: Vec<usize>,
    },
    /// The input broadcast to `shape` (numpy rules, either side may be 1).
    Expand {
        shape: Vec<i64>,
    },
    /// The input repeated `repeats[k]` times along axis `k`.
    Tile {
        repeats: Vec<usize>,
    },
    /// Channel blocks moved into pixel tiles or back.
    SpaceDepth(SpaceDepth),
    /// Passes its input through.
    Identity,
    /// The second input where the first is non-zero, else the third, all broadcast (ONNX `Where`).
    Where,
    /// An operator accnn does not interpret, kept so that it can be written back as it was read.
    /// Its output shapes are those the file records for it (`declared`), where it records them and
    /// they hold for the data shape at hand; otherwise nothing downstream of it has a known shape.
    /// The engine cannot run it.
    Opaque {
        op_type: String,
        outputs: usize,
        declared: Option<DeclaredShapes>,
    },
}

/// One dimension of a shape a model file records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclaredDim {
    Fixed(usize),
    /// The data input's batch size, whatever it is.
    Batch,
}

/// The output shapes a model file records for an operator accnn does not interpret (ONNX
/// `value_info`), valid for data shapes that agree with `input`: the dimensions after the batch
/// that the file's data input fixes (`None` where the file leaves one symbolic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredShapes {
    pub input: Vec<Option<usize>>,
    pub outputs: Vec<Vec<DeclaredDim>>,
}

impl DeclaredShapes {
    /// The output shapes for a data input of shape `data_shape` (batch first), or `None` when the
    /// file's shapes were recorded for another input size.
    ///
    /// ```
    /// use accnn_graph::ir::{DeclaredDim::*, DeclaredShapes};
    /// let d = DeclaredShapes { input: vec![Some(3), Some(8), Some(8)], outputs: vec![vec![Batch, Fixed(16)]] };
    /// assert_eq!(d.resolve(&[4, 3, 8, 8]), Some(vec![vec![4, 16]]));
    /// assert_eq!(d.resolve(&[4, 3, 16, 16]), None);
    /// ```
    pub fn resolve(&self, data_shape: &[usize]) -> Option<Vec<Vec<usize>>> {
        let (&batch, rest) = data_shape.split_first()?;
        let agrees =
            rest.len() == self.input.len() && rest.iter().zip(&self.input).all(|(d, i)| i.is_none_or(|i| i == *d));
        agrees.then(|| {
            self.outputs
                .iter()
                .map(|dims| {
                    dims.iter()
                        .map(|d| match d {
                            DeclaredDim::Fixed(v) => *v,
                            DeclaredDim::Batch => batch,
                        })
                        .collect()
                })
                .collect()
        })
    }
}

impl Op {
    /// The name MXNet's symbol JSON gives this operator.
    pub fn mxnet_name(&self) -> &'static str {
        match self {
            Op::Variable => "null",
            Op::Convolution(_) => "Convolution",
            Op::FullyConnected(_) => "FullyConnected",
            Op::Activation(Activation::LeakyRelu { .. }) => "LeakyReLU",
            Op::Activation(Activation::Clip { .. }) => "clip",
            Op::Activation(_) => "Activation",
            Op::Pooling(_) => "Pooling",
            Op::Flatten { .. } => "Flatten",
            Op::Dropout => "Dropout",
            Op::BatchNorm(_) => "BatchNorm",
            Op::Binary { op, broadcast } => op.mxnet_name(*broadcast),
            Op::Concat { .. } => "Concat",
            Op::Softmax { .. } => "softmax",
            Op::SoftmaxOutput => "SoftmaxOutput",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "transpose",
            Op::Lrn(_) => "LRN",
            Op::MatMul => "batch_dot",
            Op::Slice(_) => "slice",
            Op::Squeeze { .. } => "squeeze",
            Op::Unsqueeze { .. } => "expand_dims",
            Op::Reduce(r) => match r.op {
                ReduceOp::Sum => "sum",
                ReduceOp::Mean => "mean",
                ReduceOp::Max => "max",
                ReduceOp::Min => "min",
                ReduceOp::Prod => "prod",
                ReduceOp::L2 => "norm",
                ReduceOp::L1 | ReduceOp::SumSquare | ReduceOp::LogSumExp => "_opaque",
            },
            Op::ConvTranspose(_) => "Deconvolution",
            Op::Resize(_) => "UpSampling",
            Op::Normalization(n) => match n.kind {
                NormKind::Layer { .. } => "LayerNorm",
                NormKind::Instance => "InstanceNorm",
                NormKind::Group { .. } => "GroupNorm",
            },
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Pad(_) => "pad",
            Op::Gather { .. } => "take",
            Op::Expand { .. } => "broadcast_to",
            Op::Tile { .. } => "tile",
            Op::SpaceDepth(SpaceDepth::ToSpace { .. }) => "depth_to_space",
            Op::SpaceDepth(SpaceDepth::ToDepth { .. }) => "space_to_depth",
            Op::Identity => "_copy",
            Op::Where => "where",
            Op::Opaque { .. } => "_opaque",
        }
    }

    /// Number of outputs the node has in MXNet (hidden ones included), for `node_row_ptr`.
    pub fn mxnet_output_count(&self) -> usize {
        match self {
            Op::BatchNorm(_) => 3,
            Op::Dropout => 2,
            Op::Opaque { outputs, .. } => *outputs,
            _ => 1,
        }
    }
}

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub node: usize,
    pub output: usize,
}

impl Entry {
    pub fn new(node: usize) -> Self {
        Entry { node, output: 0 }
    }
}

/// An operator application.
///
/// `attrs` holds the attributes exactly as the file spelled them (plus MXNet's hidden `__x__`
/// attributes), so that nodes accnn does not touch are written back as they were read; `op` is
/// their parsed meaning. Nodes made by accnn get `attrs` from [`crate::mxnet::op_attrs`].
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Entry>,
    pub attrs: BTreeMap<String, String>,
}

/// A DAG whose nodes are stored in topological order: every input refers to an earlier node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// The model's outputs.
    pub heads: Vec<Entry>,
}

impl Graph {
    /// Checks the topological-order invariant and output indices; names the offending node.
    pub fn validate(&self) -> Result<(), GraphError> {
        let mut seen = std::collections::HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !seen.insert(node.name.as_str()) && !matches!(node.op, Op::Variable) {
                return Err(GraphError::node(&node.name, "duplicate node name"));
            }
            for input in &node.inputs {
                if input.node >= i {
                    return Err(GraphError::node(
                        &node.name,
                        format!(
                            "input refers to node #{} which is not before it (a cycle or a dangling reference)",
                            input.node
                        ),
                    ));
                }
                if input.output >= self.nodes[input.node].op.mxnet_output_count() {
                    return Err(GraphError::node(
                        &node.name,
                        format!(
                            "input refers to output {} of '{}', which does not exist",
                            input.output, self.nodes[input.node].name
                        ),
                    ));
                }
            }
        }
        for head in &self.heads {
            if head.node >= self.nodes.len() {
                return Err(GraphError::Invalid(format!(
                    "model output refers to missing node #{}",
                    head.node
                )));
            }
        }
        Ok(())
    }

    /// Index of the node called `name` (the last one, if a variable name repeats).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes.iter().rposition(|n| n.name == name)
    }

    /// Whether every path from node `from` to the graph's outputs passes through node `through`:
    /// in a chain every layer does; a layer inside a residual block or an Inception branch does
    /// not (the skip or the other branches carry the signal past it). `true` when `through` is
    /// `from` or when no output can be reached from `from` without `through`.
    ///
    /// ```
    /// use accnn_graph::{ModelBuilder, ir::{Activation, Op}, ops::elementwise::BinaryOp};
    /// let mut b = ModelBuilder::new();
    /// let x = b.input("data");
    /// let r = b.activation("relu", x, Activation::Relu);
    /// let s = b.node("sum", Op::Binary { op: BinaryOp::Add, broadcast: true }, &[x, r]);
    /// let t = b.activation("out", s, Activation::Relu);
    /// let g = b.build(&[t]).unwrap().graph;
    /// let (x, r, s) = (g.find("data").unwrap(), g.find("relu").unwrap(), g.find("sum").unwrap());
    /// assert!(!g.separates(x, r)); // the skip goes round the ReLU
    /// assert!(g.separates(x, s));
    /// ```
    pub fn separates(&self, from: usize, through: usize) -> bool {
        // Topological order: one forward sweep marks what `from` reaches without `through`.
        let mut reached = vec![false; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            reached[i] = i != through && (i == from || node.inputs.iter().any(|e| reached[e.node]));
        }
        !self.heads.iter().any(|h| reached[h.node])
    }

    /// How many times each node's outputs are consumed (heads included).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.nodes.len()];
        for node in &self.nodes {
            for input in &node.inputs {
                counts[input.node] += 1;
            }
        }
        for head in &self.heads {
            counts[head.node] += 1;
        }
        counts
    }

    /// The entries computed before node `cut` that nodes from `cut` on (or the heads) read: what a
    /// run resumed at `cut` needs, in node order. Variables are included; a caller that feeds
    /// weights otherwise filters them out.
    pub fn live_at(&self, cut: usize) -> Vec<Entry> {
        let mut live: Vec<Entry> = self
            .nodes
            .iter()
            .skip(cut)
            .flat_map(|n| n.inputs.iter())
            .chain(self.heads.iter())
            .filter(|e| e.node < cut)
            .copied()
            .collect();
        live.sort_by_key(|e| (e.node, e.output));
        live.dedup();
        live
    }
}

/// A graph plus its weights: everything a checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub graph: Graph,
    /// Learned parameters (MXNet `arg:` entries).
    pub args: BTreeMap<String, Tensor>,
    /// Auxiliary states such as BatchNorm running statistics (MXNet `aux:` entries).
    pub aux: BTreeMap<String, Tensor>,
}

impl Model {
    /// The value of a variable node, from `args` or `aux`.
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.args.get(name).or_else(|| self.aux.get(name))
    }

    /// Names of variable nodes that have no stored value: the model's data (and label) inputs.
    pub fn free_inputs(&self) -> Vec<usize> {
        self.graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Variable) && self.param(&n.name).is_none())
            .map(|(i, _)| i)
            .collect()
    }

    /// The node index of the data input: a free variable named `data`, else the only free variable
    /// that is not a label of a `SoftmaxOutput`.
    pub fn data_input(&self) -> Result<usize, GraphError> {
        let labels: Vec<usize> = self
            .graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::SoftmaxOutput))
            .filter_map(|n| n.inputs.get(1).map(|e| e.node))
            .collect();
        let free: Vec<usize> = self.free_inputs().into_iter().filter(|i| !labels.contains(i)).collect();
        if let Some(&i) = free.iter().find(|&&i| self.graph.nodes[i].name == "data") {
            return Ok(i);
        }
        match free.as_slice() {
            [only] => Ok(*only),
            [] => Err(GraphError::Invalid(
                "the model has no data input (every variable has a stored value)".into(),
            )),
            many => Err(GraphError::Invalid(format!(
                "the model has several inputs without stored values ({}); accnn supports one data input",
                many.iter()
                    .map(|&i| self.graph.nodes[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Warnings for weights holding NaN or infinite values, one per tensor, naming the layers that
    /// read it: "layer 'c2': weight 'c2_weight' holds NaN (first at element 5 of 360)".
    pub fn non_finite_params(&self) -> Vec<String> {
        self.args
            .iter()
            .chain(self.aux.iter())
            .filter_map(|(name, t)| {
                let i = t.first_non_finite()?;
                let readers: Vec<String> = self
                    .graph
                    .find(name)
                    .map(|var| {
                        self.graph
                            .nodes
                            .iter()
                            .filter(|n| n.inputs.iter().any(|e| e.node == var))
                            .map(|n| format!("'{}'", n.name))
                            .collect()
                    })
                    .unwrap_or_default();
                let what = if t.data()[i].is_nan() {
                    "NaN"
                } else {
                    "an infinite value"
                };
                let layer = match readers.len() {
                    0 => String::new(),
                    1 => format!("layer {}: ", readers[0]),
                    _ => format!("layers {}: ", readers.join(", ")),
                };
                Some(format!(
                    "{layer}weight '{name}' holds {what} (first at element {i} of {})",
                    t.len()
                ))
            })
            .collect()
    }
}
