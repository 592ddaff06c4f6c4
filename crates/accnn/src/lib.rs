//! accnn: make a trained CNN faster and smaller by low-rank decomposition of its layers.
//!
//! One call runs the whole pipeline: [`accelerate`] takes a [`Request`] (the model, BatchNorm
//! folding, where the ranks come from, how the factors are fitted, where the result goes) and
//! returns the new model with its per-layer [`Report`]. Each convolution becomes a vertical and a
//! horizontal one (Tai et al., arXiv 1511.06067), each fully-connected layer two thin ones, with ranks
//! chosen for a speed-up ratio (the exact optimum of Zhang et al.'s kept-energy objective, under a
//! MAC or measured-latency budget), taken from a `config.json`, or given for one layer.
//!
//! ```
//! # fn main() -> Result<(), accnn::Error> {
//! # let model = accnn::example_model();
//! use accnn::{ModelInput, RankSource, Request, accelerate};
//! let request = Request::new(ModelInput::Memory { name: "example".into(), model }, RankSource::ratio(2.0))
//!     .with_data_shape(&[3, 8, 8]);
//! let fast = accelerate(request)?;
//! assert!(fast.report.speedup() >= 1.99);
//! println!("{}", fast.report);
//! # Ok(()) }
//! ```
//!
//! `examples/accelerate_onnx.rs` accelerates an ONNX file with calibration images. The steps are
//! usable on their own from the crates below: `accnn-plan` (analysis, factorisations, plans),
//! `accnn-calibrate` (data-aware fitting), `accnn-infer` (the engine), `accnn-graph` (the IR and
//! the file formats).

mod error;
mod fidelity;
pub mod finetune;
mod inspect;
pub mod latency;
mod observer;
mod pipeline;
mod request;

pub use accnn_infer::data::{Dataset, ImageOptions};
pub use accnn_plan::Error as PlanError;
pub use accnn_plan::{
    Analysis, Layer, LayerId, LayerKind, LayerReport, LayerSet, ModelFormat, Objective, PerLayer, Precision, RankPlan,
    Report, Scope, SkippedLayer, example_model, is_onnx,
};
pub use accnn_rank::RankConfig;
pub use error::Error;
pub use fidelity::Fidelity;
pub use finetune::{FinetuneProgress, FinetuneRequest, Finetuned, ImageFiles, NoProgress, finetune};
pub use observer::{Event, Observer, Silent};
pub use pipeline::{
    Accelerated, CalibrationSummary, LatencyOutcome, LoadedModel, accelerate, accelerate_with, load_model,
};
pub use request::{
    Calibration, CalibrationImages, Cost, Fit, LatencyOptions, LatencyRuntime, ModelInput, Output, RankSource, Request,
};
