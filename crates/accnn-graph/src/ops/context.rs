//! What an operator sees of its node: input shapes and stored weights (for shape inference), input
//! values (for reference evaluation).

use crate::error::GraphError;
use crate::ir::{Model, Node};

/// A dense row-major `f64` array: the values of the reference interpreter.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    /// Panics when `data` does not fill `shape`: arrays are made by code, not read from files.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "array data does not fill its shape"
        );
        Array { shape, data }
    }
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// A node during shape inference: its inputs' shapes and the model's stored weights.
pub struct ShapeContext<'a> {
    pub(crate) model: &'a Model,
    pub(crate) node: &'a Node,
    /// Output shapes of the nodes before this one, `[node][output]`.
    pub(crate) outputs: &'a [Vec<Vec<usize>>],
}

impl<'a> ShapeContext<'a> {
    /// The node's name, for errors.
    pub fn name(&self) -> &'a str {
        &self.node.name
    }

    /// An error about this node.
    pub fn error(&self, message: impl Into<String>) -> GraphError {
        GraphError::node(&self.node.name, message)
    }

    /// How many inputs the node has.
    pub fn input_count(&self) -> usize {
        self.node.inputs.len()
    }

    /// The shape of input `k`.
    pub fn input(&self, k: usize) -> Result<&'a [usize], GraphError> {
        let e = self
            .node
            .inputs
            .get(k)
            .ok_or_else(|| self.error(format!("missing input #{k}")))?;
        Ok(&self.outputs[e.node][e.output])
    }

    /// The shape of input `k` as `[N, C, H, W]`.
    pub fn nchw(&self, k: usize) -> Result<[usize; 4], GraphError> {
        let s = self.input(k)?;
        <[usize; 4]>::try_from(s).map_err(|_| self.error(format!("expects a 4-D NCHW input, got shape {s:?}")))
    }

    /// Checks that input `k` is a stored weight of shape `expected`; `what` names it in errors.
    pub fn expect_param(&self, k: usize, expected: &[usize], what: &str) -> Result<(), GraphError> {
        let e = self
            .node
            .inputs
            .get(k)
            .ok_or_else(|| self.error(format!("missing {what} input")))?;
        let var = &self.model.graph.nodes[e.node];
        let Some(t) = self.model.param(&var.name) else {
            return Err(self.error(format!("{what} '{}' is not in the params file", var.name)));
        };
        if t.shape() != expected {
            return Err(self.error(format!(
                "{what} '{}' has shape {:?} in the params file, but the layer needs {expected:?}",
                var.name,
                t.shape()
            )));
        }
        Ok(())
    }
}

/// A node during reference evaluation: its inputs' values and the model's stored weights.
pub struct EvalContext<'a> {
    pub(crate) model: &'a Model,
    pub(crate) node: &'a Node,
    /// Values of the nodes before this one (`None`: not computed, e.g. a weight).
    pub(crate) values: &'a [Option<Array>],
    pub(crate) output_shape: &'a [usize],
}

impl<'a> EvalContext<'a> {
    /// The context of `node` of `model`, whose predecessors' values are `values` (indexed by node)
    /// and whose first output has `output_shape`.
    pub fn new(model: &'a Model, node: &'a Node, values: &'a [Option<Array>], output_shape: &'a [usize]) -> Self {
        EvalContext {
            model,
            node,
            values,
            output_shape,
        }
    }

    /// An error about this node.
    pub fn error(&self, message: impl Into<String>) -> GraphError {
        GraphError::node(&self.node.name, message)
    }

    /// The value of input `k`.
    pub fn arg(&self, k: usize) -> Result<&'a Array, GraphError> {
        self.node
            .inputs
            .get(k)
            .and_then(|e| self.values[e.node].as_ref())
            .ok_or_else(|| GraphError::node(&self.node.name, format!("input #{k} has no value")))
    }

    /// The stored weight at input `k` in `f64` (empty when it is not stored).
    pub fn param(&self, k: usize) -> Vec<f64> {
        self.node
            .inputs
            .get(k)
            .and_then(|e| self.model.param(&self.model.graph.nodes[e.node].name))
            .map(|t| t.data().iter().map(|&v| v as f64).collect())
            .unwrap_or_default()
    }

    /// How many inputs the node has.
    pub fn input_count(&self) -> usize {
        self.node.inputs.len()
    }

    /// The shape inference gave this node's first output.
    pub fn output_shape(&self) -> &'a [usize] {
        self.output_shape
    }

    /// An array of the node's output shape holding `data`.
    pub fn output(&self, data: Vec<f64>) -> Array {
        Array::new(self.output_shape.to_vec(), data)
    }
}
