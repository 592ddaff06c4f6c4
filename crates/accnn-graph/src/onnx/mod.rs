//! ONNX models, read into accnn's IR and written back.
//!
//! Reading keeps the original `ModelProto` next to the IR. Writing starts from it: every node,
//! initializer, input, output, value_info, opset import and metadata entry accnn did not change is
//! written back as it was read (initializers re-encoded bit for bit from the IR); only the nodes a
//! rewrite replaced (decomposed layers, convolutions with a folded BatchNorm) are written anew, with
//! the output tensor names of the nodes they replace, so that everything downstream stays valid.
//!
//! Operators accnn does not interpret become [`crate::Op::Opaque`] nodes and pass
//! through untouched, with the output shapes the file's `value_info` records for them; see
//! [`read_onnx`] for what is interpreted.
//!
//! ```
//! use accnn_graph::onnx::{self, GraphBuilder};
//! use accnn_graph::Tensor;
//! # fn main() -> Result<(), accnn_graph::GraphError> {
//! let mut b = GraphBuilder::new(13);
//! b.input("x", &[1, 4]);
//! b.initializer("w", Tensor::new(vec![3, 4], vec![0.5; 12])?);
//! b.node("Gemm", &["x", "w"], &["y"], vec![onnx::attr_int("transB", 1)]);
//! b.output("y", &[Some(1), Some(3)]);
//! let bytes = b.finish();
//! let read = onnx::decode_onnx(&bytes, std::path::Path::new("model.onnx"), None)?;
//! assert_eq!(read.model.graph.nodes.len(), 3); // x, w and the layer
//! let written = onnx::encode_onnx(&read.source, &read.model, None)?;
//! assert_eq!(written.model.len(), bytes.len());
//! # Ok(()) }
//! ```

mod attrs;
mod builder;
mod export;
mod import;
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod proto;
mod standalone;
mod stream;
mod tensor;
pub mod zoo;

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

pub use attrs::{
    float as attr_float, int as attr_int, ints as attr_ints, string as attr_string, tensor as attr_tensor,
};
pub use builder::GraphBuilder;
pub use export::{EncodedOnnx, OnnxFiles, encode_onnx, onnx_files};
pub use import::MIN_OPSET;
pub use standalone::{STANDALONE_OPSET, encode_standalone, standalone_files};
pub use stream::OnnxMessage;

use crate::error::GraphError;
use crate::ir::{Model, Op};
use crate::tensor::DType;

/// An ONNX model read into the IR, with what the writer needs to give it back.
pub struct OnnxModel {
    pub model: Model,
    pub source: OnnxSource,
}

/// The original model behind an [`OnnxModel`]: its proto and where each IR node came from.
pub struct OnnxSource {
    proto: proto::ModelProto,
    opset: i64,
    nodes: HashMap<String, Imported>,
    initializers: HashMap<String, Initializer>,
    /// Output tensor name -> index of the `Constant` node producing it, and its value's fingerprint.
    constant_nodes: HashMap<String, (usize, Option<u64>)>,
    /// Element type of the data input: the type new weights are written in.
    float_type: DType,
    had_external_data: bool,
}

impl OnnxSource {
    /// The default-domain opset the model imports.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// The declared shape of graph input `name` (`None` for symbolic dimensions).
    pub fn input_shape(&self, name: &str) -> Option<Vec<Option<usize>>> {
        import::declared_shape(&self.proto, name)
    }

    /// Whether the model kept any initializer in an external data file.
    pub fn had_external_data(&self) -> bool {
        self.had_external_data
    }

    /// The model as read (weights the IR holds are left out).
    pub fn original(&self) -> &proto::ModelProto {
        &self.proto
    }
}

/// Where an IR node came from.
struct Imported {
    /// Proto nodes it stands for (two for a `MatMul` + `Add`).
    proto_nodes: Vec<usize>,
    /// The op as imported: a different op now means the node was rewritten.
    op: Op,
    /// ONNX tensor names of its IR inputs as imported.
    inputs: Vec<String>,
    /// ONNX tensor names of its outputs.
    outputs: Vec<String>,
}

struct Initializer {
    /// Fingerprint of the decoded value, to tell whether a rewrite changed it.
    fingerprint: Option<u64>,
}

/// Reads an ONNX file. `data_shape` (batch first) is needed only for `auto_pad = SAME_*` layers
/// when the model's input shape is symbolic; the model's own input shape is used otherwise.
///
/// Interpreted as IR operators (opsets 9 to 21; each checked against ONNX's own backend node
/// tests by `cargo xtask node-tests`): Conv (pads, strides, dilations, group, auto_pad), ConvTranspose
/// (output_padding, output_shape), Gemm (alpha, beta, transB), MatMul (a constant weight, with a
/// following bias Add, becomes a layer), BatchNormalization, LayerNormalization,
/// InstanceNormalization, GroupNormalization, LRN, MaxPool, AveragePool, GlobalAveragePool,
/// GlobalMaxPool, Resize and Upsample (nearest, linear, cubic), the activations (Relu, LeakyRelu,
/// Clip, Sigmoid, HardSigmoid, HardSwish, Tanh, Softplus, Softsign, Elu, Selu, Mish, Erf, Gelu,
/// Exp, Log, Neg, Abs, Sqrt, Reciprocal), the elementwise Add, Sub, Mul, Div, Pow, Sum, Min, Max
/// (broadcasting), the comparisons (Equal, Less, LessOrEqual, Greater, GreaterOrEqual) and logical
/// And, Or, Xor, Not (booleans as 0 and 1), Where, Concat, Flatten, Reshape, Transpose, Slice,
/// Squeeze, Unsqueeze, the Reduce* family, Softmax, Dropout and Identity. Integer and boolean
/// constants feeding the elementwise operators (an integer exponent, a mask) are widened to floats.
///
/// Constant subgraphs are computed as the model is read (Constant, ConstantOfShape, Shape, Size,
/// Cast, Gather, Expand, Range, Where, Not and the operators above on constants), so the shape
/// arithmetic of today's exporters settles into constants. Initializers in external data files are
/// read.
pub fn read_onnx(path: &Path, data_shape: Option<&[usize]>) -> Result<OnnxModel, GraphError> {
    let bytes = std::fs::read(path).map_err(|e| GraphError::io(path, e))?;
    decode_bytes(prost::bytes::Bytes::from(bytes), path, data_shape)
}

/// [`read_onnx`] on bytes already in memory; `path` names the file in errors and locates external
/// data.
/// [`decode_onnx`] of bytes the caller hands over: weights are read from them in place, not copied.
pub fn decode_onnx_owned(bytes: Vec<u8>, path: &Path, data_shape: Option<&[usize]>) -> Result<OnnxModel, GraphError> {
    decode_bytes(prost::bytes::Bytes::from(bytes), path, data_shape)
}

pub fn decode_onnx(bytes: &[u8], path: &Path, data_shape: Option<&[usize]>) -> Result<OnnxModel, GraphError> {
    decode_bytes(prost::bytes::Bytes::copy_from_slice(bytes), path, data_shape)
}

/// Weight bytes stay shared with `bytes` until the IR converts them.
fn decode_bytes(
    bytes: prost::bytes::Bytes,
    path: &Path,
    data_shape: Option<&[usize]>,
) -> Result<OnnxModel, GraphError> {
    let proto = proto::ModelProto::decode(bytes)
        .map_err(|e| GraphError::format(path, format!("not a valid ONNX model: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let shape = match data_shape {
        Some(s) => Some(s.to_vec()),
        None => model_input_shape(&proto),
    };
    import::import(proto, path, dir, shape.as_deref())
}

/// The data input's declared shape with a batch of 1, when every other dimension is fixed, or when
/// only the image height and width are symbolic and the model records its image size (ultralytics'
/// `imgsz` metadata).
fn model_input_shape(proto: &proto::ModelProto) -> Option<Vec<usize>> {
    let graph = proto.graph.as_ref()?;
    let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph.input.iter().find(|i| !inits.contains(i.name.as_str()))?;
    let dims = import::declared_shape(proto, &input.name)?;
    if let ([_, Some(c), None, None], Some([h, w])) = (dims.as_slice(), metadata_image_size(proto)) {
        return Some(vec![1, *c, h, w]);
    }
    let mut shape = vec![1];
    for d in dims.iter().skip(1) {
        shape.push((*d)?);
    }
    Some(shape)
}

/// The image size a model records in its metadata: `imgsz` as `640`, `[640, 640]` or `(480, 640)`.
fn metadata_image_size(proto: &proto::ModelProto) -> Option<[usize; 2]> {
    let text = &proto.metadata_props.iter().find(|p| p.key == "imgsz")?.value;
    let sizes: Vec<usize> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().ok().filter(|&v| v > 0))
        .collect::<Option<_>>()?;
    match sizes.as_slice() {
        [s] => Some([*s, *s]),
        [h, w] => Some([*h, *w]),
        _ => None,
    }
}

/// The data input's dimensions after the batch that are symbolic, by name (`dim_param`, else
/// `dimension K`): empty when the shape is fixed or the model records its image size.
pub fn symbolic_input_dims(source: &OnnxSource) -> Vec<String> {
    use proto::tensor_shape_proto::dimension::Value as Dim;
    use proto::type_proto::Value as Type;
    if model_input_shape(&source.proto).is_some() {
        return Vec::new();
    }
    let Some(graph) = source.proto.graph.as_ref() else {
        return Vec::new();
    };
    let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let Some(input) = graph.input.iter().find(|i| !inits.contains(i.name.as_str())) else {
        return Vec::new();
    };
    let Some(Type::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Vec::new();
    };
    let Some(shape) = t.shape.as_ref() else {
        return vec![format!("the shape of input '{}'", input.name)];
    };
    shape
        .dim
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(k, d)| match &d.value {
            Some(Dim::DimValue(v)) if *v > 0 => None,
            Some(Dim::DimParam(p)) if !p.is_empty() => Some(p.clone()),
            _ => Some(format!("dimension {k}")),
        })
        .collect()
}

/// A tensor stored alone in a `TensorProto` file (ONNX's backend test data, `input_0.pb`), as `f32`:
/// integers and booleans (as 0 and 1) are widened.
pub fn read_tensor_file(path: &Path) -> Result<crate::Tensor, GraphError> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| GraphError::io(path, e))?;
    let proto = proto::TensorProto::decode(&bytes[..]).map_err(|e| GraphError::format(path, e.to_string()))?;
    match tensor::decode(&proto, path)? {
        tensor::Value::Float(t) => Ok(t),
        // Booleans (comparisons' outputs) and integers read as accnn's engine holds them: floats.
        tensor::Value::Ints { dims, values } => {
            crate::Tensor::new(dims, values.into_iter().map(|v| v as f32).collect())
        }
        tensor::Value::Other => Err(GraphError::format(path, "not a numeric tensor")),
    }
}

/// The data input's shape without the batch, as declared in the model, if fully known (image size
/// from the `imgsz` metadata where only height and width are symbolic).
pub fn declared_input_shape(source: &OnnxSource) -> Option<Vec<usize>> {
    model_input_shape(&source.proto).map(|s| s[1..].to_vec())
}
