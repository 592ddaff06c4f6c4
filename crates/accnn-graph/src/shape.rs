//! Shape inference over the IR, checking stored weights against what each layer needs.

use crate::error::GraphError;
use crate::ir::{Graph, Model, Op};
use crate::ops::ShapeContext;

/// Output shapes of every node, indexed `[node][output]`.
///
/// An operator accnn does not interpret ([`Op::Opaque`]) has the output shapes its file records
/// for this input size ([`crate::ir::DeclaredShapes`]); where it has none, nodes downstream of it
/// have no known shape: their entries in `outputs` are empty and `unknown` names an opaque node
/// responsible ([`Shapes::blockers`] names all of them).
#[derive(Clone, Debug, PartialEq)]
pub struct Shapes {
    pub outputs: Vec<Vec<Vec<usize>>>,
    pub unknown: Vec<Option<usize>>,
}

impl Shapes {
    /// Shape of output 0 of `node` (empty when unknown).
    pub fn of(&self, node: usize) -> &[usize] {
        self.outputs[node].first().map_or(&[], Vec::as_slice)
    }

    /// Whether `node`'s shapes are known.
    pub fn is_known(&self, node: usize) -> bool {
        self.unknown.get(node).is_some_and(Option::is_none)
    }

    /// Every opaque node that leaves `node`'s shape unknown (all of them, in graph order; empty when
    /// the shape is known).
    pub fn blockers(&self, graph: &Graph, node: usize) -> Vec<usize> {
        let mut seen = std::collections::BTreeSet::new();
        let mut found = std::collections::BTreeSet::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if self.is_known(n) || !seen.insert(n) {
                continue;
            }
            if matches!(graph.nodes[n].op, Op::Opaque { .. }) {
                found.insert(n);
            } else {
                stack.extend(graph.nodes[n].inputs.iter().map(|e| e.node));
            }
        }
        found.into_iter().collect()
    }
}

/// Output size of a sliding window along one axis (floor convention); `None` when the window does
/// not fit, or for a zero kernel, stride or dilation, or sizes that overflow.
pub fn window_output(size: usize, pad_total: usize, kernel: usize, stride: usize, dilate: usize) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilate == 0 {
        return None;
    }
    let span = dilate.checked_mul(kernel - 1)?.checked_add(1)?;
    let padded = size.checked_add(pad_total)?;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

pub use crate::ops::conv::conv_output_hw;
pub use crate::ops::pool::pool_output_hw;
pub use crate::ops::shape_ops::reshape;

/// Infers every node's output shapes from the data input's shape `data_shape` (batch included),
/// checking each stored weight against the shape its layer needs.
pub fn infer_shapes(model: &Model, data_shape: &[usize]) -> Result<Shapes, GraphError> {
    infer_shapes_prefix(model, data_shape, model.graph.nodes.len())
}

/// Like [`infer_shapes`] for the first `count` nodes only: what a node's inputs are, before the
/// node itself is settled (ONNX `auto_pad`).
pub fn infer_shapes_prefix(model: &Model, data_shape: &[usize], count: usize) -> Result<Shapes, GraphError> {
    let graph = &model.graph;
    let data = model.data_input()?;
    let batch = data_shape.first().copied().unwrap_or(1);
    let mut outputs: Vec<Vec<Vec<usize>>> = Vec::with_capacity(graph.nodes.len());
    let mut unknown: Vec<Option<usize>> = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate().take(count) {
        let name = node.name.as_str();
        let upstream = node.inputs.iter().find_map(|e| unknown[e.node]);
        let blocked = match &node.op {
            // An opaque node's shapes are known where the file records them for this input size; its
            // inputs' shapes do not matter then.
            Op::Opaque { declared, .. } => match declared.as_ref().and_then(|d| d.resolve(data_shape)) {
                Some(shapes) => {
                    outputs.push(shapes);
                    unknown.push(None);
                    continue;
                }
                None => Some(i),
            },
            _ => upstream,
        };
        // Nodes downstream of an operator accnn does not interpret have no known shape; layers among
        // them stay whole (see `Shapes::blockers`).
        if let Some(opaque) = blocked {
            outputs.push(vec![Vec::new(); node.op.mxnet_output_count()]);
            unknown.push(Some(opaque));
            continue;
        }
        unknown.push(None);
        let out: Vec<Vec<usize>> = match &node.op {
            Op::Variable => {
                if i == data {
                    vec![data_shape.to_vec()]
                } else if let Some(t) = model.param(name) {
                    vec![t.shape().to_vec()]
                } else {
                    vec![vec![batch]] // a label
                }
            }
            op => op.output_shapes(&ShapeContext {
                model,
                node,
                outputs: &outputs,
            })?,
        };
        outputs.push(out);
    }
    Ok(Shapes { outputs, unknown })
}
