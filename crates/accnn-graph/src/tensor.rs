//! Dense host tensors holding model weights.

use crate::error::GraphError;

/// Element type a tensor was stored with on disk.
///
/// accnn computes in `f32`; `Float16` data is widened exactly and `Float64` data is narrowed. The
/// stored type is kept so that writers can say what they changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Float32,
    Float64,
    Float16,
}

impl DType {
    /// Bytes per element on disk.
    pub fn size(self) -> usize {
        match self {
            DType::Float32 => 4,
            DType::Float64 => 8,
            DType::Float16 => 2,
        }
    }
}

/// A dense, row-major `f32` tensor.
///
/// Invariant: `data.len() == shape.iter().product()` (a scalar has an empty shape and one element).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
    stored_as: DType,
}

impl Tensor {
    /// Builds a tensor, checking that the data fills the shape exactly.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, GraphError> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(GraphError::Invalid(format!(
                "tensor of shape {shape:?} needs {expected} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            shape,
            data,
            stored_as: DType::Float32,
        })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
            stored_as: DType::Float32,
        }
    }

    pub(crate) fn with_stored_type(mut self, dtype: DType) -> Self {
        self.stored_as = dtype;
        self
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The element type the tensor had in the file it was read from.
    pub fn stored_as(&self) -> DType {
        self.stored_as
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Sets subnormal values (nonzero, smaller in magnitude than `f32::MIN_POSITIVE`) to zero,
    /// returning how many there were. Tiny factor entries carry no accuracy, and many CPUs compute
    /// with subnormals tens of times slower (one such 1x1 layer ran 8x slower in onnxruntime).
    pub fn flush_subnormals(&mut self) -> usize {
        let mut count = 0;
        for v in &mut self.data {
            if v.is_subnormal() {
                *v = 0.0;
                count += 1;
            }
        }
        count
    }

    /// Indices of the first NaN or infinite element, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.data.iter().position(|v| !v.is_finite())
    }
}

/// Product of the dimensions, with overflow reported as an error.
pub fn element_count(shape: &[usize]) -> Result<usize, GraphError> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| GraphError::Invalid(format!("shape {shape:?} overflows the address space")))
    })
}
