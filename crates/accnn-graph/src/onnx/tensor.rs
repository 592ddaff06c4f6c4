//! `TensorProto` to and from accnn's [`Tensor`], external data files included.

use std::path::{Component, Path};

use prost::bytes::Bytes;

use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::{StringStringEntryProto, TensorProto};
use crate::error::GraphError;
use crate::tensor::{DType, Tensor, element_count};

/// The value of a `TensorProto` as accnn uses it.
pub(crate) enum Value {
    /// A floating-point tensor, widened or narrowed to `f32`.
    Float(Tensor),
    /// An integer (or boolean) tensor: shapes, axes, indices.
    Ints { dims: Vec<usize>, values: Vec<i64> },
    /// Any other element type: kept as it is, never interpreted.
    Other,
}

fn dims_of(t: &TensorProto, path: &Path) -> Result<Vec<usize>, GraphError> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| GraphError::format(path, format!("tensor '{}' has a negative dimension {d}", t.name)))
        })
        .collect()
}

/// Reads the bytes of an externally stored tensor from `dir`, checking that the location stays
/// inside `dir` and that the range lies inside the file.
fn external_bytes(t: &TensorProto, dir: &Path, path: &Path) -> Result<Bytes, GraphError> {
    let key = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let bad = |m: String| GraphError::format(path, format!("tensor '{}': {m}", t.name));
    let location = key("location").ok_or_else(|| bad("external data without a location".into()))?;
    let relative = Path::new(location);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad(format!(
            "external data location '{location}' must be a plain relative path inside the model's folder"
        )));
    }
    let number = |k: &str| -> Result<Option<u64>, GraphError> {
        key(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("external data {k} '{v}' is not a number")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let file = dir.join(relative);
    let data = std::fs::read(&file).map_err(|e| GraphError::io(&file, e))?;
    let length = number("length")?.unwrap_or((data.len() as u64).saturating_sub(offset));
    let end = offset
        .checked_add(length)
        .filter(|&end| end <= data.len() as u64)
        .ok_or_else(|| {
            bad(format!(
                "external data range {offset}+{length} lies outside {} ({} bytes)",
                file.display(),
                data.len()
            ))
        })?;
    Ok(Bytes::from(data).slice(offset as usize..end as usize))
}

/// Replaces external data by the bytes it points to, so that the tensor stands alone.
pub(crate) fn inline_external(t: &mut TensorProto, dir: &Path, path: &Path) -> Result<(), GraphError> {
    if t.data_location == DataLocation::External as i32 {
        t.raw_data = external_bytes(t, dir, path)?;
        t.data_location = DataLocation::Default as i32;
        t.external_data.clear();
    }
    Ok(())
}

/// Decodes a tensor whose external data (if any) has been inlined.
pub(crate) fn decode(t: &TensorProto, path: &Path) -> Result<Value, GraphError> {
    let dims = dims_of(t, path)?;
    let count = element_count(&dims)?;
    let bad = |m: String| GraphError::format(path, format!("tensor '{}': {m}", t.name));
    let raw = |size: usize| -> Result<Option<&[u8]>, GraphError> {
        if t.raw_data.is_empty() {
            return Ok(None);
        }
        let expected = count.checked_mul(size).ok_or_else(|| bad("size overflows".into()))?;
        if t.raw_data.len() != expected {
            return Err(bad(format!(
                "holds {} bytes of data, but its shape {dims:?} needs {expected}",
                t.raw_data.len()
            )));
        }
        Ok(Some(&t.raw_data[..]))
    };
    let check_len = |n: usize, field: &str| -> Result<(), GraphError> {
        if n != count {
            return Err(bad(format!(
                "{field} holds {n} values, but its shape {dims:?} needs {count}"
            )));
        }
        Ok(())
    };
    let float = |data: Vec<f32>, dtype: DType| -> Result<Value, GraphError> {
        Ok(Value::Float(Tensor::new(dims.clone(), data)?.with_stored_type(dtype)))
    };
    match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => match raw(4)? {
            Some(b) => float(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                DType::Float32,
            ),
            None => {
                check_len(t.float_data.len(), "float_data")?;
                float(t.float_data.clone(), DType::Float32)
            }
        },
        Ok(DataType::Float16) => {
            let bits: Vec<u16> = match raw(2)? {
                Some(b) => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
                None => {
                    check_len(t.int32_data.len(), "int32_data")?;
                    t.int32_data.iter().map(|&v| v as u16).collect()
                }
            };
            float(
                bits.into_iter().map(|b| half::f16::from_bits(b).to_f32()).collect(),
                DType::Float16,
            )
        }
        Ok(DataType::Double) => match raw(8)? {
            Some(b) => float(
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
                    .collect(),
                DType::Float64,
            ),
            None => {
                check_len(t.double_data.len(), "double_data")?;
                float(t.double_data.iter().map(|&v| v as f32).collect(), DType::Float64)
            }
        },
        Ok(DataType::Int64) => {
            let v: Vec<i64> = match raw(8)? {
                Some(b) => b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                    .collect(),
                None => {
                    check_len(t.int64_data.len(), "int64_data")?;
                    t.int64_data.clone()
                }
            };
            Ok(Value::Ints { dims, values: v })
        }
        Ok(DataType::Int32) => {
            let v: Vec<i64> = match raw(4)? {
                Some(b) => b
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4-byte chunk")) as i64)
                    .collect(),
                None => {
                    check_len(t.int32_data.len(), "int32_data")?;
                    t.int32_data.iter().map(|&v| v as i64).collect()
                }
            };
            Ok(Value::Ints { dims, values: v })
        }
        Ok(DataType::Bool) => {
            let v: Vec<i64> = match raw(1)? {
                Some(b) => b.iter().map(|&x| i64::from(x != 0)).collect(),
                None => {
                    check_len(t.int32_data.len(), "int32_data")?;
                    t.int32_data.iter().map(|&v| i64::from(v != 0)).collect()
                }
            };
            Ok(Value::Ints { dims, values: v })
        }
        _ => Ok(Value::Other),
    }
}

/// The ONNX element type that stores `dtype`.
pub(crate) fn data_type_of(dtype: DType) -> DataType {
    match dtype {
        DType::Float32 => DataType::Float,
        DType::Float16 => DataType::Float16,
        DType::Float64 => DataType::Double,
    }
}

/// `dtype` for an ONNX element type accnn can compute in.
pub(crate) fn dtype_of(data_type: i32) -> Option<DType> {
    match DataType::try_from(data_type).ok()? {
        DataType::Float => Some(DType::Float32),
        DataType::Float16 => Some(DType::Float16),
        DataType::Double => Some(DType::Float64),
        _ => None,
    }
}

/// The little-endian bytes of `tensor` as `dtype`.
pub(crate) fn float_bytes(tensor: &Tensor, dtype: DType) -> Vec<u8> {
    match dtype {
        DType::Float32 => tensor.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::Float16 => tensor
            .data()
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect(),
        DType::Float64 => tensor.data().iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
    }
}

/// Encodes `tensor` in `template`'s name, metadata and layout (raw bytes or a typed field), as
/// `dtype`.
pub(crate) fn encode(template: TensorProto, tensor: &Tensor, dtype: DType) -> TensorProto {
    let typed_field = template.raw_data.is_empty() && template.data_location != DataLocation::External as i32;
    let mut t = TensorProto {
        dims: tensor.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type_of(dtype) as i32,
        raw_data: Bytes::new(),
        float_data: Vec::new(),
        int32_data: Vec::new(),
        double_data: Vec::new(),
        external_data: Vec::new(),
        data_location: DataLocation::Default as i32,
        ..template
    };
    // Only a tensor read from a typed field goes back to one; everything else is raw bytes, the
    // form every writer of big models uses.
    match (typed_field, dtype) {
        (true, DType::Float32) => t.float_data = tensor.data().to_vec(),
        (true, DType::Float64) => t.double_data = tensor.data().iter().map(|&v| v as f64).collect(),
        (true, DType::Float16) => {
            t.int32_data = tensor
                .data()
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits() as i32)
                .collect()
        }
        (false, _) => t.raw_data = Bytes::from(float_bytes(tensor, dtype)),
    }
    t
}

/// A new tensor called `name`.
pub(crate) fn new_tensor(name: &str, tensor: &Tensor, dtype: DType) -> TensorProto {
    encode(
        TensorProto {
            name: name.to_string(),
            raw_data: Bytes::from_static(b"-"),
            ..Default::default()
        },
        tensor,
        dtype,
    )
}

/// Moves the raw bytes of `t` to `data` (at an offset aligned to 64 bytes) and points `t` at them.
pub(crate) fn externalise(t: &mut TensorProto, data: &mut Vec<u8>, location: &str) {
    if t.raw_data.is_empty() {
        return;
    }
    let offset = data.len().next_multiple_of(64);
    data.resize(offset, 0);
    data.extend_from_slice(&t.raw_data);
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: k.to_string(),
        value: v,
    };
    t.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", t.raw_data.len().to_string()),
    ];
    t.data_location = DataLocation::External as i32;
    t.raw_data = Bytes::new();
}

/// A cheap 64-bit fingerprint of a tensor's values, to tell whether a rewrite changed a weight.
pub(crate) fn fingerprint(tensor: &Tensor) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ tensor.len() as u64;
    for d in tensor.shape() {
        h = (h ^ *d as u64).wrapping_mul(0x0100_0000_01b3);
    }
    for chunk in tensor.data().chunks(2) {
        let word = chunk.iter().fold(0u64, |w, v| (w << 32) | v.to_bits() as u64);
        h = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    h
}

/// Gives every tensor left in `model` bytes of its own. Decoding shares the file's buffer (one
/// allocation) among all `raw_data`, and one small tensor still pointing into it (a Reshape's
/// shape) would keep the whole file in memory after the weights have been taken out.
pub(crate) fn detach_from_file(model: &mut super::proto::ModelProto) {
    use super::proto::{AttributeProto, GraphProto, NodeProto, SparseTensorProto};
    fn tensor(t: &mut TensorProto) {
        if !t.raw_data.is_empty() {
            t.raw_data = Bytes::copy_from_slice(&t.raw_data);
        }
    }
    fn sparse(s: &mut SparseTensorProto) {
        s.values.iter_mut().chain(s.indices.iter_mut()).for_each(tensor);
    }
    fn attribute(a: &mut AttributeProto) {
        a.t.iter_mut().chain(a.tensors.iter_mut()).for_each(tensor);
        a.sparse_tensor
            .iter_mut()
            .chain(a.sparse_tensors.iter_mut())
            .for_each(sparse);
        a.g.iter_mut().chain(a.graphs.iter_mut()).for_each(graph);
    }
    fn nodes(n: &mut [NodeProto]) {
        n.iter_mut().flat_map(|n| n.attribute.iter_mut()).for_each(attribute);
    }
    fn graph(g: &mut GraphProto) {
        g.initializer.iter_mut().for_each(tensor);
        g.sparse_initializer.iter_mut().for_each(sparse);
        nodes(&mut g.node);
    }
    model.graph.iter_mut().for_each(graph);
    for f in &mut model.functions {
        nodes(&mut f.node);
        f.attribute_proto.iter_mut().for_each(attribute);
    }
}
