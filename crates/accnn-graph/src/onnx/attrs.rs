//! Reading and writing `NodeProto` attributes.

use super::proto::attribute_proto::AttributeType;
use super::proto::{AttributeProto, NodeProto};
use crate::error::GraphError;

/// Typed access to a node's attributes, with errors naming the node.
pub(crate) struct NodeAttrs<'a> {
    pub node: &'a NodeProto,
    pub label: &'a str,
}

impl NodeAttrs<'_> {
    fn find(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn err(&self, message: impl Into<String>) -> GraphError {
        GraphError::node(self.label, message)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.find(name).map(|a| a.i)
    }

    /// A float attribute.
    pub fn float(&self, name: &str) -> Option<f32> {
        self.find(name).map(|a| a.f)
    }

    /// An integer-list attribute.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.find(name).map(|a| a.ints.clone())
    }

    /// A float-list attribute.
    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.find(name).map(|a| a.floats.clone())
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Option<String> {
        self.find(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// A non-negative 2-element attribute (`strides`, `dilations`, `kernel_shape`).
    pub fn pair(&self, name: &str, default: [usize; 2]) -> Result<[usize; 2], GraphError> {
        match self.ints(name) {
            None => Ok(default),
            // Windows, strides and dilations: zero would divide by zero in shape inference.
            Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => Ok([v[0] as usize, v[1] as usize]),
            Some(v) => Err(self.err(format!("attribute {name} = {v:?} is not two positive integers"))),
        }
    }

    /// A non-negative 2-element attribute (`output_padding`).
    pub fn offsets(&self, name: &str) -> Result<[usize; 2], GraphError> {
        match self.ints(name) {
            None => Ok([0, 0]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => Ok([v[0] as usize, v[1] as usize]),
            Some(v) => Err(self.err(format!("attribute {name} = {v:?} is not two non-negative integers"))),
        }
    }

    /// `pads` as `[top, left, bottom, right]`.
    pub fn pads(&self) -> Result<[usize; 4], GraphError> {
        match self.ints("pads") {
            None => Ok([0; 4]),
            Some(v) if v.len() == 4 && v.iter().all(|&x| x >= 0) => {
                Ok([v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize])
            }
            Some(v) => Err(self.err(format!("attribute pads = {v:?} is not four non-negative integers"))),
        }
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A tensor attribute (a `Constant` node's `value`), stored as f32.
pub fn tensor(name: &str, value: &crate::Tensor) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(super::tensor::new_tensor("", value, crate::DType::Float32)),
        ..Default::default()
    }
}
