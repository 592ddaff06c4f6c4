//! Building a model by hand: test networks, generated benchmarks, single layers to time.

use crate::error::GraphError;
use crate::ir::{ConvAttrs, Entry, FcAttrs, Model, Node, Op};
use crate::mxnet::op_attrs;
use crate::tensor::Tensor;

/// Builds a [`Model`] node by node, in topological order.
///
/// Nodes get the MXNet spelling of their attributes where MXNet can express them, so a built model
/// can be saved as an MXNet checkpoint as well as encoded as ONNX.
///
/// ```
/// use accnn_graph::{ModelBuilder, Tensor};
/// use accnn_graph::ir::{Activation, ConvAttrs};
/// # fn main() -> Result<(), accnn_graph::GraphError> {
/// let mut b = ModelBuilder::new();
/// let x = b.input("data");
/// let weight = Tensor::new(vec![8, 3, 3, 3], vec![0.1; 8 * 27])?;
/// let c = b.conv("conv1", x, ConvAttrs::same([3, 3], 8), weight, Some(Tensor::zeros(vec![8])));
/// let r = b.activation("relu1", c, Activation::Relu);
/// let model = b.build(&[r])?;
/// let shapes = accnn_graph::shape::infer_shapes(&model, &[1, 3, 16, 16])?;
/// assert_eq!(shapes.of(model.graph.find("relu1").unwrap()), [1, 8, 16, 16]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ModelBuilder {
    model: Model,
}

impl ModelBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A data input: a variable without a stored value.
    pub fn input(&mut self, name: &str) -> Entry {
        self.node(name, Op::Variable, &[])
    }

    /// A variable holding `value`.
    pub fn weight(&mut self, name: &str, value: Tensor) -> Entry {
        self.model.args.insert(name.to_string(), value);
        self.node(name, Op::Variable, &[])
    }

    /// A variable holding an auxiliary state (BatchNorm's running statistics).
    pub fn aux(&mut self, name: &str, value: Tensor) -> Entry {
        self.model.aux.insert(name.to_string(), value);
        self.node(name, Op::Variable, &[])
    }

    /// A node applying `op` to `inputs`.
    pub fn node(&mut self, name: &str, op: Op, inputs: &[Entry]) -> Entry {
        let attrs = op_attrs(&op).unwrap_or_default();
        self.model.graph.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
            attrs,
        });
        Entry::new(self.model.graph.nodes.len() - 1)
    }

    /// Sets a file-level attribute of a node as the file spells it (MXNet's `__shape__` of the data
    /// input, say), kept when the model is written.
    pub fn set_attr(&mut self, node: Entry, key: &str, value: &str) {
        if let Some(n) = self.model.graph.nodes.get_mut(node.node) {
            n.attrs.insert(key.to_string(), value.to_string());
        }
    }

    /// A convolution of `x` with `weight` `(num_filter, C / g, kh, kw)` and, unless `attrs.no_bias`,
    /// `bias` (named `NAME_weight` and `NAME_bias`, as MXNet names them).
    pub fn conv(&mut self, name: &str, x: Entry, attrs: ConvAttrs, weight: Tensor, bias: Option<Tensor>) -> Entry {
        let attrs = ConvAttrs {
            no_bias: bias.is_none(),
            ..attrs
        };
        let inputs = self.layer_inputs(name, x, weight, bias);
        self.node(name, Op::Convolution(attrs), &inputs)
    }

    /// A fully-connected layer of `x` with `weight` `(num_hidden, features)` and an optional `bias`.
    pub fn dense(&mut self, name: &str, x: Entry, weight: Tensor, bias: Option<Tensor>, flatten: bool) -> Entry {
        let attrs = FcAttrs {
            num_hidden: weight.shape().first().copied().unwrap_or(0),
            no_bias: bias.is_none(),
            flatten,
        };
        let inputs = self.layer_inputs(name, x, weight, bias);
        self.node(name, Op::FullyConnected(attrs), &inputs)
    }

    /// An elementwise activation of `x`.
    pub fn activation(&mut self, name: &str, x: Entry, activation: crate::ir::Activation) -> Entry {
        self.node(name, Op::Activation(activation), &[x])
    }

    fn layer_inputs(&mut self, name: &str, x: Entry, weight: Tensor, bias: Option<Tensor>) -> Vec<Entry> {
        let mut inputs = vec![x, self.weight(&format!("{name}_weight"), weight)];
        if let Some(b) = bias {
            inputs.push(self.weight(&format!("{name}_bias"), b));
        }
        inputs
    }

    /// The model with outputs `heads`, checked: nodes in topological order, names unique.
    pub fn build(mut self, heads: &[Entry]) -> Result<Model, GraphError> {
        self.model.graph.heads = heads.to_vec();
        self.model.graph.validate()?;
        Ok(self.model)
    }
}
