//! What to accelerate and how: a [`Request`] says the model, BatchNorm folding, where the ranks come
//! from, how the factors are fitted and where the result goes.

use std::path::PathBuf;

use accnn_graph::Model;
use accnn_infer::EngineOptions;
use accnn_infer::data::{Dataset, ImageOptions};
use accnn_plan::{LayerKind, ModelFormat, Objective, Precision, Scope};
use accnn_rank::RankConfig;

/// One run of the pipeline. Build it with [`Request::new`] and the `with_*` methods, or as a literal.
#[derive(Debug)]
pub struct Request {
    pub model: ModelInput,
    /// The input shape without the batch (`C, H, W`). `None`: the shape the model declares (an ONNX
    /// input, MXNet's `__shape__`), else `3, 224, 224`.
    pub data_shape: Option<Vec<usize>>,
    /// Fold every BatchNorm after a convolution into it before decomposing (the default).
    pub fold_batch_norm: bool,
    pub ranks: RankSource,
    pub fit: Fit,
    /// Floating-point precision of the weight SVDs.
    pub precision: Precision,
    /// Data-free fits only: give each decomposed layer back, through its bias, the response to its
    /// input's estimated mean that the truncation lost ([`accnn_plan::BiasCorrection`]; the
    /// default).
    pub bias_correction: bool,
    /// With the bias correction: also give each decomposed convolution that every path to the
    /// output passes through the gain its truncation lost (the default; off, the bias alone is
    /// corrected).
    pub gain_restoration: bool,
    /// Where the new model (and its ranks as `config.json`) are written; `None`: nothing is written.
    pub output: Option<Output>,
}

impl Request {
    /// Accelerate `model` with ranks from `ranks`, data-free, BatchNorm folded, nothing written.
    pub fn new(model: ModelInput, ranks: RankSource) -> Self {
        Request {
            model,
            data_shape: None,
            fold_batch_norm: true,
            ranks,
            fit: Fit::Weights,
            precision: Precision::Auto,
            bias_correction: true,
            gain_restoration: true,
            output: None,
        }
    }

    /// Fit the factors to these calibration images instead of the weights alone.
    pub fn with_calibration(mut self, calibration: Calibration) -> Self {
        self.fit = Fit::Calibration(calibration);
        self
    }

    /// Write the new model to `dest` (an MXNet prefix or an `.onnx` path, in the format read).
    pub fn with_output(mut self, dest: impl Into<String>) -> Self {
        self.output = Some(Output {
            model: dest.into(),
            format: None,
            config: None,
        });
        self
    }

    /// Take `C, H, W` as the input shape.
    pub fn with_data_shape(mut self, shape: &[usize]) -> Self {
        self.data_shape = Some(shape.to_vec());
        self
    }
}

/// The model to accelerate.
#[derive(Debug)]
pub enum ModelInput {
    /// A model file: an ONNX path (`*.onnx`) or an MXNet prefix with the epoch of its params file.
    File { spec: String, epoch: u32 },
    /// A model already in memory, called `name` in messages. It cannot be written back to a file
    /// format ([`Request::output`] must be `None`).
    Memory { name: String, model: Model },
    /// The bytes of an ONNX file, called `name` in messages: the new model can be written to an
    /// `.onnx` path, or encoded in memory with [`crate::Accelerated::onnx_bytes`].
    OnnxBytes { name: String, bytes: Vec<u8> },
}

impl ModelInput {
    /// An ONNX file or an MXNet checkpoint at epoch 1.
    pub fn file(spec: impl Into<String>) -> Self {
        ModelInput::File {
            spec: spec.into(),
            epoch: 1,
        }
    }

    /// The name used in messages: the file spec, or the in-memory model's name.
    pub fn name(&self) -> &str {
        match self {
            ModelInput::File { spec, .. } => spec,
            ModelInput::Memory { name, .. } | ModelInput::OnnxBytes { name, .. } => name,
        }
    }
}

/// Where the ranks come from.
#[derive(Clone, Debug)]
pub enum RankSource {
    /// Chosen for a speed-up `ratio` over the layers in `scope`: the exact optimum of the kept energy
    /// under `cost / ratio`, every width a multiple of `align`.
    Ratio {
        ratio: f64,
        scope: Scope,
        align: usize,
        cost: Cost,
        /// What the plan maximises (`--rank-search`).
        objective: Objective,
    },
    /// The ranks of a `config.json` (`path`, when it came from a file, names it in errors).
    Config { config: RankConfig, path: Option<PathBuf> },
    /// One layer at width `K` (`acc_conv.py` / `acc_fc.py`); `kind` is the kind the caller expects.
    Layer {
        name: String,
        kind: LayerKind,
        width: usize,
    },
}

impl RankSource {
    /// A speed-up ratio over MACs of every convolution and FC layer.
    pub fn ratio(ratio: f64) -> Self {
        RankSource::Ratio {
            ratio,
            scope: Scope::All,
            align: 1,
            cost: Cost::Macs,
            objective: Objective::default(),
        }
    }
}

/// What a ratio divides.
#[derive(Clone, Debug, Default)]
pub enum Cost {
    /// Multiply-accumulates: the theoretical speed-up.
    #[default]
    Macs,
    /// Latency measured with accnn's engine; a decomposition that is not faster is never chosen.
    Latency(LatencyOptions),
}

/// Where and how latency is measured for [`Cost::Latency`].
#[derive(Clone, Debug)]
pub struct LatencyOptions {
    pub batch: usize,
    /// accnn's engine (device, dtype, threads); with [`LatencyRuntime::Onnxruntime`], its `threads`
    /// are onnxruntime's intra-op threads.
    pub engine: EngineOptions,
    /// The runtime layers and models are timed in.
    pub runtime: LatencyRuntime,
    /// Measured layer latencies are kept here between runs (see [`crate::latency::default_cache`]).
    pub cache: Option<PathBuf>,
}

/// The runtime latency is measured in.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LatencyRuntime {
    /// accnn's engine.
    #[default]
    Engine,
    /// onnxruntime, loaded from `library` (`None`: `ORT_DYLIB_PATH`): each layer timed as a model of
    /// its own, the original and the new model as the ONNX files they are (ONNX models only).
    Onnxruntime { library: Option<PathBuf> },
}

/// How the factors are fitted.
#[derive(Debug, Default)]
pub enum Fit {
    /// From the weights alone: the closed-form SVD factors (data-free).
    #[default]
    Weights,
    /// To the network's responses on calibration images: ranks by response energy, and each pair's
    /// second half refitted by least squares on the approximated network's inputs.
    Calibration(Calibration),
}

/// Calibration images and the knobs of data-aware fitting.
#[derive(Debug)]
pub struct Calibration {
    pub images: CalibrationImages,
    /// Output positions sampled per image and convolution.
    pub positions: usize,
    /// Worker threads (0: every core).
    pub threads: usize,
}

impl Calibration {
    /// Calibrate on `images` with the default 16 positions per image, on every core.
    pub fn new(images: CalibrationImages) -> Self {
        Calibration {
            images,
            positions: 16,
            threads: 0,
        }
    }
}

/// Where calibration images come from.
#[derive(Debug)]
pub enum CalibrationImages {
    /// Preprocessed inputs already in memory, `(N, C, H, W)`.
    Dataset(Dataset),
    /// An IDX directory, a `.npz` or a folder of class subfolders of images (read as `eval` reads
    /// them): the first `limit` images of `split`, preprocessed by `image`.
    Files {
        path: PathBuf,
        split: String,
        limit: usize,
        image: ImageOptions,
    },
    /// `count` seeded images of the model's input shape with natural-image (`1/f`) statistics,
    /// standardised per channel ([`accnn_infer::data::synthetic::natural_noise`]): data-aware
    /// fitting without data.
    Synthetic { count: usize, seed: u64 },
}

/// Where the new model goes.
#[derive(Clone, Debug)]
pub struct Output {
    /// An MXNet prefix (`NEW-symbol.json`, `NEW-0001.params`) or an ONNX path.
    pub model: String,
    /// The format written (`None`: the format read). A model read from an MXNet checkpoint may be
    /// written as ONNX; one read from ONNX is written as ONNX.
    pub format: Option<ModelFormat>,
    /// Where the chosen ranks go as `config.json` (`None`: not written).
    pub config: Option<PathBuf>,
}
