//! Fine-tuning of accnn models on [candle-core](candle_core)'s autograd: a decomposed model learns
//! back the accuracy the decomposition cost, from its original (distillation: Hinton et al.,
//! arXiv 1503.02531), on unlabelled or labelled images.
//!
//! [`Student`] runs a model's graph as differentiable candle ops with the chosen layers' weights
//! trainable; [`Finetuner`] trains it against a teacher run by accnn's inference engine.
//!
//! ```
//! # fn main() -> Result<(), accnn_train::TrainError> {
//! use accnn_train::{FinetuneOptions, Finetuner, TrainObserver, TrainScope};
//! # let teacher = accnn_infer::doc_model();
//! # let student = teacher.clone();
//! # let images = accnn_infer::data::synthetic::natural_noise(8, [3, 8, 8], 1);
//! struct Quiet;
//! impl TrainObserver for Quiet {
//!     fn epoch(&mut self, _: &accnn_train::EpochReport, _: &accnn_graph::Model, _: &accnn_train::TrainState)
//!         -> Result<(), accnn_train::TrainError> { Ok(()) }
//! }
//! let options = FinetuneOptions { batch: 4, scope: TrainScope::All, ..FinetuneOptions::default() };
//! let tuned = Finetuner::new(student, &teacher, &images, None, options)?.run(&mut Quiet)?;
//! # let _ = tuned;
//! # Ok(()) }
//! ```

mod augment;
mod layers;
pub mod loss;
pub mod optim;
mod student;
mod trainer;

pub use loss::LossWeights;
pub use optim::{Optimizer, Schedule};
pub use student::{Parameter, Student, logits_entry};
pub use trainer::{
    EpochReport, FinetuneOptions, Finetuner, StepReport, TrainObserver, TrainScope, TrainState, decomposed_layers,
};

/// Why fine-tuning could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Graph(#[from] accnn_graph::GraphError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Infer(#[from] accnn_infer::InferError),
    #[error("node '{node}': {message}")]
    Node { node: String, message: String },
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Data(String),
    #[error("the loss became NaN or infinite at step {step} (lower --lr)")]
    NonFinite { step: usize },
}

/// Training allocates and frees tensors of many megabytes every step; glibc returns each to the
/// kernel (mmap/munmap), and the page faults and TLB shootdowns that follow took half of a step's
/// time. Keeping freed memory in the heap halves it.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; both values are within glibc's ranges.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
