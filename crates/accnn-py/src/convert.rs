//! Python data in and out: models, arrays and errors.

use accnn::ModelInput;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::AccnnError;

/// A model as the Python half passes it: a file (ONNX path or MXNet prefix with its epoch) or the
/// bytes of an ONNX file, called `name` in messages.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct ModelArg {
    path: Option<String>,
    data: Option<Py<PyBytes>>,
    epoch: u32,
    name: String,
}

impl ModelArg {
    /// The library's input: the file, or a copy of the bytes (the GIL is released while it is used).
    pub(crate) fn input(&self, py: Python<'_>) -> PyResult<ModelInput> {
        match (&self.path, &self.data) {
            (Some(spec), _) => Ok(ModelInput::File {
                spec: spec.clone(),
                epoch: self.epoch,
            }),
            (None, Some(bytes)) => Ok(ModelInput::OnnxBytes {
                name: self.name.clone(),
                bytes: bytes.as_bytes(py).to_vec(),
            }),
            (None, None) => Err(AccnnError::new_err(
                "a model is a path, ONNX bytes or an onnx.ModelProto",
            )),
        }
    }
}

/// A float32 array as its native-endian bytes and its shape (numpy's `tobytes()` and `shape`).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct ArrayArg {
    data: Py<PyBytes>,
    shape: Vec<usize>,
}

impl ArrayArg {
    /// The values, checked against the shape, and the shape as `N, C, H, W`.
    pub(crate) fn images(&self, py: Python<'_>, what: &str) -> PyResult<(Vec<f32>, [usize; 4])> {
        let shape: [usize; 4] = self.shape.as_slice().try_into().map_err(|_| {
            AccnnError::new_err(format!(
                "{what}: expected an array of shape (N, C, H, W), got {:?}",
                self.shape
            ))
        })?;
        let bytes = self.data.as_bytes(py);
        let count: usize = shape.iter().product();
        if bytes.len() != count * 4 {
            return Err(AccnnError::new_err(format!(
                "{what}: {} bytes do not hold a float32 array of shape {shape:?}",
                bytes.len()
            )));
        }
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((values, shape))
    }
}

/// The library's error as `AccnnError`, worded as the `accnn` command words it.
pub(crate) fn library_error(e: accnn::Error) -> PyErr {
    AccnnError::new_err(format!("{:#}", accnn_cli::explain(e)))
}

/// Any other error as `AccnnError`, with its causes on the same line (as the command prints them).
pub(crate) fn error<E: std::error::Error + Send + Sync + 'static>(e: E) -> PyErr {
    AccnnError::new_err(format!("{:#}", anyhow::Error::new(e)))
}
