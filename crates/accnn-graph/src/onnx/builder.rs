//! Building ONNX models in Rust: for tests, examples and generated benchmark models.

use prost::Message;

use super::proto::tensor_shape_proto::{Dimension, dimension};
use super::proto::type_proto::{self, Value as TypeValue};
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::tensor::new_tensor;
use crate::tensor::{DType, Tensor};

/// Assembles a float32 ONNX model node by node.
pub struct GraphBuilder {
    opset: i64,
    graph: GraphProto,
}

fn value_info(name: &str, dims: Option<&[Option<usize>]>) -> ValueInfoProto {
    typed_value_info(name, 1, dims)
}

/// A tensor's name, element type and dimensions (`None`: a symbolic batch), as graph inputs,
/// outputs and `value_info` record them.
pub(crate) fn typed_value_info(name: &str, elem_type: i32, dims: Option<&[Option<usize>]>) -> ValueInfoProto {
    // Every graph input and output carries a shape, as onnx.checker's full check requires.
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Some(v) => dimension::Value::DimValue(*v as i64),
                    None => dimension::Value::DimParam("batch".into()),
                }),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(type_proto::Tensor { elem_type, shape })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// An empty graph importing the default-domain `opset`.
    pub fn new(opset: i64) -> Self {
        GraphBuilder {
            opset,
            graph: GraphProto {
                name: "accnn".into(),
                ..Default::default()
            },
        }
    }

    /// A float32 graph input of shape `dims`.
    pub fn input(&mut self, name: &str, dims: &[usize]) -> &mut Self {
        let dims: Vec<Option<usize>> = dims.iter().map(|&d| Some(d)).collect();
        self.graph.input.push(value_info(name, Some(&dims)));
        self
    }

    /// A float32 graph input whose first (batch) dimension is symbolic.
    pub fn input_symbolic_batch(&mut self, name: &str, dims: &[usize]) -> &mut Self {
        let dims: Vec<Option<usize>> = std::iter::once(None)
            .chain(dims[1..].iter().map(|&d| Some(d)))
            .collect();
        self.graph.input.push(value_info(name, Some(&dims)));
        self
    }

    /// A float32 initializer.
    pub fn initializer(&mut self, name: &str, value: Tensor) -> &mut Self {
        self.graph.initializer.push(new_tensor(name, &value, DType::Float32));
        self
    }

    /// An int64 initializer (a `Reshape` target, for instance).
    pub fn int_initializer(&mut self, name: &str, dims: &[usize], values: &[i64]) -> &mut Self {
        self.graph.initializer.push(super::proto::TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: super::proto::tensor_proto::DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        self
    }

    /// A node of the default domain, named after its first output.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> &mut Self {
        self.graph.node.push(NodeProto {
            name: format!("{}_{}", op_type, outputs.first().copied().unwrap_or("")),
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
        self
    }

    /// A node of the default domain called `name`.
    pub fn named_node(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> &mut Self {
        self.node(op_type, inputs, outputs, attribute);
        if let Some(n) = self.graph.node.last_mut() {
            n.name = name.to_string();
        }
        self
    }

    /// Marks `name` as a float32 graph output of shape `dims` (`None`: a symbolic dimension).
    pub fn output(&mut self, name: &str, dims: &[Option<usize>]) -> &mut Self {
        self.graph.output.push(value_info(name, Some(dims)));
        self
    }

    /// A graph output declared as `info` says.
    pub(crate) fn raw_output(&mut self, info: ValueInfoProto) -> &mut Self {
        self.graph.output.push(info);
        self
    }

    /// A float32 graph output whose shape the model leaves to shape inference.
    pub fn output_of_any_shape(&mut self, name: &str) -> &mut Self {
        self.graph.output.push(value_info(name, None));
        self
    }

    /// Records the float32 tensor `name`'s shape in `value_info` (`None`: the symbolic batch).
    pub fn value_info(&mut self, name: &str, dims: &[Option<usize>]) -> &mut Self {
        self.graph.value_info.push(value_info(name, Some(dims)));
        self
    }

    /// The model as a `ModelProto`.
    pub fn model(&self) -> ModelProto {
        ModelProto {
            graph: Some(self.graph.clone()),
            ..self.model_header()
        }
    }

    fn model_header(&self) -> ModelProto {
        ModelProto {
            ir_version: match self.opset {
                ..=14 => 7,
                15..=18 => 8,
                19..=20 => 9,
                _ => 10,
            },
            producer_name: "accnn".into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            ..Default::default()
        }
    }

    /// The model as a `ModelProto`, without copying the graph (weights included).
    pub fn into_model(self) -> ModelProto {
        let mut model = ModelProto {
            graph: None,
            ..self.model_header()
        };
        model.graph = Some(self.graph);
        model
    }

    /// The serialised model, as a `.onnx` file holds it.
    pub fn finish(&self) -> Vec<u8> {
        self.model().encode_to_vec()
    }
}
