//! A chain of convolution and fully-connected layers written as an ONNX model from scratch, for
//! timing single layers in another runtime (the layers and pairs of `--cost latency`).

use super::builder::GraphBuilder;
use super::export::conv_attributes;
use crate::error::GraphError;
use crate::ir::{FcAttrs, Model, Op};

/// The ONNX bytes (opset 13) of `model`: a data input of `input` dimensions (batch first, the batch
/// written symbolic) followed by a chain of convolutions and flattening fully-connected layers, each reading
/// the one before and its own weight (and bias). Anything else is refused, naming the node.
pub fn encode_chain(model: &Model, input: &[usize]) -> Result<Vec<u8>, GraphError> {
    let mut b = GraphBuilder::new(13);
    let data = model.data_input()?;
    let nodes = &model.graph.nodes;
    b.input_symbolic_batch(&nodes[data].name, input);
    // The chain's last node and its ONNX output name.
    let mut last = data;
    let mut previous = nodes[data].name.clone();
    let weight = |node: usize, k: usize| -> Result<(String, &crate::Tensor), GraphError> {
        let n = &nodes[node];
        let var = n
            .inputs
            .get(k)
            .map(|e| nodes[e.node].name.clone())
            .ok_or_else(|| GraphError::node(&n.name, "has no weight"))?;
        let t = model
            .param(&var)
            .ok_or_else(|| GraphError::node(&n.name, format!("weight '{var}' is missing")))?;
        Ok((var, t))
    };
    // The layer's input, then its weight (and bias) as initializers.
    let layer_inputs = |b: &mut GraphBuilder, previous: &str, node: usize, no_bias: bool| {
        let mut inputs = vec![previous.to_string()];
        for k in 1..if no_bias { 2 } else { 3 } {
            let (name, t) = weight(node, k)?;
            b.initializer(&name, t.clone());
            inputs.push(name);
        }
        Ok::<_, GraphError>(inputs)
    };
    for (i, n) in nodes.iter().enumerate() {
        let reads_previous = n.inputs.first().is_some_and(|e| e.node == last);
        match &n.op {
            Op::Variable => continue,
            Op::Convolution(c) if reads_previous => {
                let inputs = layer_inputs(&mut b, &previous, i, c.no_bias)?;
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let out = format!("{}_output", n.name);
                let attributes = conv_attributes(c);
                b.named_node(&n.name, "Conv", &refs, &[&out], attributes);
                (last, previous) = (i, out);
            }
            Op::FullyConnected(FcAttrs {
                no_bias, flatten: true, ..
            }) if reads_previous => {
                let inputs = layer_inputs(&mut b, &previous, i, *no_bias)?;
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let out = format!("{}_output", n.name);
                b.named_node(&n.name, "Gemm", &refs, &[&out], vec![super::attrs::int("transB", 1)]);
                (last, previous) = (i, out);
            }
            op => {
                return Err(GraphError::node(
                    &n.name,
                    format!(
                        "a layer chain holds convolutions and FC layers, one after another, not {}",
                        op.mxnet_name()
                    ),
                ));
            }
        }
    }
    b.output_of_any_shape(&previous);
    Ok(b.finish())
}
