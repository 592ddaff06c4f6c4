//! The operators, one module per operator or family: its attributes, output shapes, MACs and
//! reference (`f64`) evaluation. The format readers ([`crate::mxnet`], [`crate::onnx`]) map their
//! nodes onto these; the engine (`accnn-infer`) lowers them; shape inference ([`crate::shape`]) and
//! the reference interpreter (`accnn-reference`) walk a graph calling [`Op::output_shapes`] and
//! [`Op::reference`].
//!
//! | module | operators |
//! |---|---|
//! | [`conv`] | `Convolution` |
//! | [`conv_transpose`] | `ConvTranspose` (transposed convolution, not decomposed) |
//! | [`resize`] | `Resize` (nearest and linear resampling; ONNX `Resize`, `Upsample`) |
//! | [`dense`] | `FullyConnected` |
//! | [`pool`] | `Pooling` (max, average, sum; global) |
//! | [`activation`] | elementwise unary functions: ReLU, sigmoid, tanh, softplus, softsign, leaky ReLU, clip |
//! | [`elementwise`] | binary operators with broadcasting: add, subtract, multiply, divide, power, min, max |
//! | [`batch_norm`] | `BatchNorm` |
//! | [`normalization`] | layer, instance and group normalisation |
//! | [`softmax`] | `Softmax`, `LogSoftmax`, `SoftmaxOutput` |
//! | [`rearrange`] | `Pad`, `Gather` (constant indices), `Expand`, `Tile`, `SpaceDepth` (DepthToSpace, SpaceToDepth) |
//! | [`matmul`] | `MatMul` of two computed tensors (batched, broadcasting) |
//! | [`reduce`] | reductions over axes: sum, mean, max, min, product, L1, L2, sum of squares, log-sum-exp |
//! | [`lrn`] | `LRN` (local response normalisation across channels) |
//! | [`shape_ops`] | `Concat`, `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Transpose`, `Slice`, `Identity`, `Dropout` |
//! | [`layout`] | (index arithmetic shared by the operators that move values, and constant folding) |
//!
//! [`samples`] is one small model per operator: the conformance set that the reference and the
//! engine are checked on, operator by operator.

pub mod activation;
pub mod batch_norm;
mod context;
pub mod conv;
pub mod conv_transpose;
pub mod dense;
pub mod elementwise;
pub mod layout;
pub mod lrn;
pub mod matmul;
pub mod normalization;
pub mod pool;
pub mod rearrange;
pub mod reduce;
pub mod resize;
mod samples;
pub mod shape_ops;
pub mod softmax;

pub use context::{Array, EvalContext, ShapeContext};
pub use samples::{OpSample, samples};

use crate::error::GraphError;
use crate::ir::Op;

/// The axis `axis` names in a tensor of `rank` dimensions (negative: from the end), if in range.
pub fn resolve_axis(axis: i64, rank: usize) -> Option<usize> {
    let resolved = if axis < 0 { rank as i64 + axis } else { axis };
    (0..rank as i64).contains(&resolved).then_some(resolved as usize)
}

impl Op {
    /// The shapes of the node's outputs, from its inputs' shapes; stored weights are checked against
    /// what the operator needs. Variables and opaque operators have no rule here: shape inference
    /// gives variables their stored or input shape, and opaque nodes none.
    pub fn output_shapes(&self, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
        match self {
            Op::Convolution(c) => conv::output_shapes(c, cx),
            Op::FullyConnected(f) => dense::output_shapes(f, cx),
            Op::Pooling(p) => pool::output_shapes(p, cx),
            Op::BatchNorm(b) => batch_norm::output_shapes(b, cx),
            Op::Activation(_) => activation::output_shapes(cx),
            Op::Softmax { .. } | Op::SoftmaxOutput => softmax::output_shapes(cx),
            Op::Binary { op, broadcast } => elementwise::output_shapes(*op, *broadcast, cx),
            Op::Concat { axis } => shape_ops::concat_shapes(*axis, cx),
            Op::Reshape { shape } => shape_ops::reshape_shapes(shape, cx),
            Op::Flatten { axis } => shape_ops::flatten_shapes(*axis, cx),
            Op::Transpose { perm } => shape_ops::transpose_shapes(perm, cx),
            Op::Lrn(l) => lrn::output_shapes(l, cx),
            Op::Reduce(r) => reduce::output_shapes(r, cx),
            Op::MatMul => matmul::output_shapes(cx),
            Op::Squeeze { axes } => shape_ops::squeeze_shapes(axes.as_deref(), cx),
            Op::Unsqueeze { axes } => shape_ops::unsqueeze_shapes(axes, cx),
            Op::Slice(s) => shape_ops::slice_shapes(s, cx),
            Op::ConvTranspose(c) => conv_transpose::output_shapes(c, cx),
            Op::Resize(r) => resize::output_shapes(r, cx),
            Op::Normalization(n) => normalization::output_shapes(n, cx),
            Op::LogSoftmax { .. } => softmax::output_shapes(cx),
            Op::Pad(p) => rearrange::pad_shapes(p, cx),
            Op::Gather {
                axis,
                indices,
                index_dims,
            } => rearrange::gather_shapes(*axis, indices, index_dims, cx),
            Op::Expand { shape } => rearrange::expand_shapes(shape, cx),
            Op::Tile { repeats } => rearrange::tile_shapes(repeats, cx),
            Op::SpaceDepth(s) => rearrange::space_depth_shapes(*s, cx),
            Op::Identity => shape_ops::passthrough_shapes(1, cx),
            Op::Where => elementwise::where_shapes(cx),
            Op::Dropout => shape_ops::passthrough_shapes(2, cx),
            Op::Variable | Op::Opaque { .. } => Err(cx.error("has no shape rule of its own")),
        }
    }

    /// The node's first output computed in `f64` from its inputs' values: the oracle faster
    /// engines are checked against.
    pub fn reference(&self, cx: &EvalContext) -> Result<Array, GraphError> {
        match self {
            Op::Convolution(c) => conv::reference(c, cx),
            Op::FullyConnected(f) => dense::reference(f, cx),
            Op::Pooling(p) => pool::reference(p, cx),
            Op::BatchNorm(b) => batch_norm::reference(b, cx),
            Op::Activation(a) => activation::reference(*a, cx),
            Op::Softmax { axis } => softmax::reference(*axis, cx),
            Op::LogSoftmax { axis } => softmax::reference(*axis, cx).map(|mut y| {
                y.data.iter_mut().for_each(|v| *v = v.ln());
                y
            }),
            Op::Pad(p) => rearrange::pad_reference(p, cx),
            Op::Gather {
                axis,
                indices,
                index_dims,
            } => rearrange::gather_reference(*axis, indices, index_dims, cx),
            Op::Expand { shape } => rearrange::expand_reference(shape, cx),
            Op::Tile { repeats } => rearrange::tile_reference(repeats, cx),
            Op::SpaceDepth(s) => rearrange::space_depth_reference(*s, cx),
            Op::SoftmaxOutput => softmax::reference(1, cx),
            Op::Binary { op, .. } => elementwise::reference(*op, cx),
            Op::Where => elementwise::where_reference(cx),
            Op::Concat { axis } => shape_ops::concat_reference(*axis, cx),
            Op::Transpose { perm } => shape_ops::transpose_reference(perm, cx),
            Op::Lrn(l) => lrn::reference(l, cx),
            Op::Reduce(r) => reduce::reference(r, cx),
            Op::MatMul => matmul::reference(cx),
            Op::Slice(s) => shape_ops::slice_reference(s, cx),
            Op::ConvTranspose(c) => conv_transpose::reference(c, cx),
            Op::Resize(r) => resize::reference(r, cx),
            Op::Normalization(n) => normalization::reference(n, cx),
            Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
            | Op::Dropout => shape_ops::same_values(cx),
            Op::Variable => Err(GraphError::Invalid(
                "variables hold values; they are not evaluated".into(),
            )),
            Op::Opaque { op_type, .. } => Err(GraphError::UnsupportedOp {
                node: cx.node.name.clone(),
                op: op_type.clone(),
            }),
        }
    }

    /// Multiply-accumulates per image of a node with this operator, reading `input` (its first
    /// input's shape) and producing `output`: counted for convolutions and fully-connected layers,
    /// the layers accnn decomposes; zero for every other operator.
    pub fn macs(&self, input: &[usize], output: &[usize]) -> u64 {
        match self {
            Op::Convolution(c) if input.len() == 4 && output.len() == 4 => {
                conv::conv_macs(c, input[1], (output[2], output[3]))
            }
            Op::FullyConnected(f) => f
                .rows_and_features(input)
                .map_or(0, |(rows, features)| dense::fc_macs(f, rows, features)),
            _ => 0,
        }
    }
}
