//! A direct `f64` interpreter of the accnn IR, written for clarity, not speed: every convolution is
//! the textbook seven-deep loop. Tests use it as an independent oracle for decompositions, rewrites
//! and faster engines. Each operator's rule lives with the operator (`accnn_graph::ops`); this crate
//! walks the graph.
//!
//! ```
//! # use accnn_graph::{Model, Graph, Node, Op, Entry, Tensor, ir::{FcAttrs}};
//! # let node = |name: &str, op, inputs| Node { name: name.into(), op, inputs, attrs: Default::default() };
//! # let mut model = Model::default();
//! # model.graph.nodes = vec![
//! #     node("data", Op::Variable, vec![]),
//! #     node("w", Op::Variable, vec![]),
//! #     node("fc", Op::FullyConnected(FcAttrs { num_hidden: 1, no_bias: true, flatten: true }),
//! #          vec![Entry::new(0), Entry::new(1)]),
//! # ];
//! # model.graph.heads = vec![Entry::new(2)];
//! # model.args.insert("w".into(), Tensor::new(vec![1, 2], vec![2.0, 3.0]).unwrap());
//! let out = accnn_reference::evaluate(&model, &accnn_reference::Array::new(vec![1, 2], vec![1.0, 1.0])).unwrap();
//! assert_eq!(out[0].data, vec![5.0]);
//! ```

use accnn_graph::ops::EvalContext;
use accnn_graph::shape::infer_shapes;
use accnn_graph::{GraphError, Model, Op};

pub use accnn_graph::ops::Array;

/// Runs the model on `input` (the data input's value) and returns the values of its heads. Each
/// node is evaluated by its operator's reference rule ([`Op::reference`]), in `f64`.
pub fn evaluate(model: &Model, input: &Array) -> Result<Vec<Array>, GraphError> {
    let shapes = infer_shapes(model, &input.shape)?;
    let data = model.data_input()?;
    let graph = &model.graph;
    let mut values: Vec<Option<Array>> = vec![None; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let out_shape = shapes.of(i);
        let value = match &node.op {
            Op::Variable if i == data => input.clone(),
            Op::Variable => {
                let v = model
                    .param(&node.name)
                    .map(|t| t.data().iter().map(|&v| v as f64).collect())
                    .unwrap_or_else(|| vec![0.0; out_shape.iter().product()]);
                Array::new(out_shape.to_vec(), v)
            }
            op => op.reference(&EvalContext::new(model, node, &values, out_shape))?,
        };
        values[i] = Some(value);
    }
    Ok(graph
        .heads
        .iter()
        .map(|h| values[h.node].clone().expect("heads are computed"))
        .collect())
}
