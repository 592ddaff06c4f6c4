//! Errors of the pipeline, in the library's terms. Each variant keeps the values and the underlying
//! error; front ends word them for their own flags.

use std::path::PathBuf;

/// Why [`crate::accelerate`] (or saving its result) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be read.
    #[error("cannot read model '{spec}'")]
    Read {
        spec: String,
        #[source]
        source: accnn_plan::Error,
    },
    /// The model could not be analysed for its input shape (shapes, weights, unsupported nodes).
    #[error("model '{spec}' with input shape {shape:?}")]
    Analyse {
        spec: String,
        /// The input shape without the batch.
        shape: Vec<usize>,
        #[source]
        source: accnn_plan::Error,
    },
    /// The model leaves input dimensions symbolic and records no size for them.
    #[error("model '{spec}': its input dimensions {} are symbolic and the model records no size for them; give the input shape", dims.join(", "))]
    SymbolicInput { spec: String, dims: Vec<String> },
    /// BatchNorm folding failed.
    #[error("model '{spec}': folding BatchNorm")]
    Fold {
        spec: String,
        #[source]
        source: accnn_graph::GraphError,
    },
    /// A rank config that does not fit the model.
    #[error("config {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: accnn_plan::Error,
    },
    /// The single layer asked for does not exist.
    #[error("the model has no convolution or fully-connected layer named '{name}'")]
    NoSuchLayer { name: String },
    /// The single layer asked for is of the other kind.
    #[error("layer '{name}' is a {kind:?} layer")]
    LayerKind { name: String, kind: accnn_plan::LayerKind },
    /// The single layer's width is not valid for it.
    #[error("the rank of the layer")]
    LayerWidth(#[source] accnn_plan::Error),
    /// Calibration images could not be read.
    #[error(transparent)]
    CalibrationData(accnn_infer::InferError),
    /// No calibration images were asked for.
    #[error("the number of calibration images must be positive")]
    NoCalibrationImages,
    /// Synthetic images are images: `N, C, H, W`.
    #[error("synthetic calibration images need an image input (N, C, H, W); the model's input is {shape:?}")]
    SyntheticImages { shape: Vec<usize> },
    #[error("the batch size must be positive")]
    InvalidBatch,
    /// Under a latency budget, no decomposition the timings found makes the model faster.
    #[error(
        "latency ratio {ratio}: at their fastest measured ranks the model would still take {fastest_ms:.2} ms of the {allowed_ms:.2} ms allowed; the largest reachable speed-up is about {max_ratio:.2}x"
    )]
    LatencyOutOfReach {
        ratio: f64,
        fastest_ms: f64,
        allowed_ms: f64,
        max_ratio: f64,
    },
    /// Under a latency budget, the new model measured no faster than the original: not written.
    #[error(
        "the new model measured {measured_ms:.2} ms against the original's {original_ms:.2} ms at batch {batch}: not faster, so nothing was written (timing noise on a small model, or no decomposition pays off on this device)"
    )]
    NotFaster {
        original_ms: f64,
        measured_ms: f64,
        batch: usize,
    },
    #[error("cannot create the latency cache folder {}", path.display())]
    LatencyCache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config output would overwrite an input file, or be one of the model files written.
    #[error("the config output {} would overwrite {}", path.display(), clash.display())]
    ConfigClash { path: PathBuf, clash: PathBuf, input: bool },
    /// Writing the new model failed; nothing was left behind.
    #[error("cannot write model '{dest}'")]
    Write {
        dest: String,
        #[source]
        source: accnn_graph::GraphError,
    },
    /// Fine-tuning stopped (bad data or model, a non-finite loss, a checkpoint not written).
    #[error(transparent)]
    Finetune(accnn_train::TrainError),
    /// The fine-tuning data could not be read.
    #[error(transparent)]
    FinetuneData(accnn_infer::InferError),
    /// Student and teacher are not the same classifier.
    #[error("{0}")]
    FinetuneMismatch(String),
    /// The checkpoint to resume from is missing or unreadable.
    #[error("cannot resume from {}: {message}", path.display())]
    Resume { path: PathBuf, message: String },
    #[error(transparent)]
    Onnxruntime(#[from] accnn_ort::OrtError),
    #[error(transparent)]
    Plan(#[from] accnn_plan::Error),
    #[error(transparent)]
    Calibrate(#[from] accnn_calibrate::CalibrateError),
    #[error(transparent)]
    Infer(#[from] accnn_infer::InferError),
    #[error(transparent)]
    Graph(#[from] accnn_graph::GraphError),
}
