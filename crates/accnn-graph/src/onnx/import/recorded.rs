//! The tensor shapes an ONNX file records (`value_info`, graph outputs): what an operator accnn
//! does not interpret is taken to produce.

use std::collections::HashMap;

use super::super::proto::tensor_shape_proto::dimension::Value as Dim;
use super::super::proto::type_proto::Value as Type;
use super::super::proto::{GraphProto, ValueInfoProto};
use crate::ir::{DeclaredDim, DeclaredShapes};

/// The recorded shapes of a graph, relative to its data input.
pub(super) struct RecordedShapes {
    /// The data input's dimensions after the batch (`None`: symbolic).
    input: Vec<Option<usize>>,
    /// Tensor name -> its recorded shape, for shapes whose every dimension is fixed or is the
    /// data input's batch.
    shapes: HashMap<String, Vec<DeclaredDim>>,
}

fn dims(info: &ValueInfoProto) -> Option<Vec<Option<&Dim>>> {
    let Some(Type::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(t.shape.as_ref()?.dim.iter().map(|d| d.value.as_ref()).collect())
}

/// `info`'s dimensions, `None` for each symbolic one; `None` when it records no tensor shape.
pub(super) fn fixed_dims(info: &ValueInfoProto) -> Option<Vec<Option<usize>>> {
    Some(
        dims(info)?
            .into_iter()
            .map(|d| match d {
                Some(Dim::DimValue(v)) if *v > 0 => Some(*v as usize),
                _ => None,
            })
            .collect(),
    )
}

impl RecordedShapes {
    /// What `graph` records, with `data` the name of its data input.
    pub(super) fn new(graph: &GraphProto, data: Option<&str>) -> Self {
        let data = data.and_then(|name| graph.input.iter().find(|i| i.name == name));
        // A leading dimension equal to the data input's batch (the same symbol, or the same fixed
        // size) is the batch: a file exported at batch 1 still describes a run at batch 8.
        let batch = data.and_then(dims).and_then(|d| d.first().copied().flatten().cloned());
        let input = data
            .and_then(fixed_dims)
            .map(|d| d.into_iter().skip(1).collect())
            .unwrap_or_default();
        let mut shapes = HashMap::new();
        for info in graph.value_info.iter().chain(&graph.output) {
            let Some(dims) = dims(info) else { continue };
            let declared: Option<Vec<DeclaredDim>> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Some(d) if i == 0 && batch.as_ref() == Some(d) => Some(DeclaredDim::Batch),
                    Some(Dim::DimValue(v)) if *v > 0 => Some(DeclaredDim::Fixed(*v as usize)),
                    _ => None,
                })
                .collect();
            if let Some(declared) = declared {
                shapes.insert(info.name.clone(), declared);
            }
        }
        RecordedShapes { input, shapes }
    }

    /// The shapes recorded for every one of `outputs`, or `None` if one is missing.
    pub(super) fn of(&self, outputs: &[String]) -> Option<DeclaredShapes> {
        let outputs: Option<Vec<Vec<DeclaredDim>>> = outputs.iter().map(|o| self.shapes.get(o).cloned()).collect();
        Some(DeclaredShapes {
            input: self.input.clone(),
            outputs: outputs.filter(|o| !o.is_empty())?,
        })
    }
}
