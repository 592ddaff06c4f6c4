//! Labelled or unlabelled image sets, as `eval` and `--calibrate` read them.

use std::path::PathBuf;

use accnn_infer::data::{Dataset, Preprocess, load_images};
use anyhow::{Result, bail};
use clap::Args;

/// How IDX pixels become model inputs (a `.npz` is taken as already preprocessed).
#[derive(Args, Debug, Clone)]
pub(crate) struct PreprocessArgs {
    /// IDX preprocessing: input = (pixel / 255 - mean) / std (the committed fixture: 0.286).
    #[arg(long, default_value_t = 0.0)]
    pub mean: f32,
    /// IDX preprocessing (the committed fixture: 0.353).
    #[arg(long, default_value_t = 1.0)]
    pub std: f32,
    /// IDX preprocessing: black border added on each side (the committed fixture: 2, 28 -> 32).
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
}

/// Which images to read.
pub(crate) struct DataSource {
    pub path: PathBuf,
    pub split: String,
    pub limit: Option<usize>,
}

/// Reads a directory of MNIST/Fashion-MNIST IDX files or a `.npz` with `x` and `y`.
pub(crate) fn load_dataset(source: &DataSource, pre: &PreprocessArgs) -> Result<Dataset> {
    if pre.std <= 0.0 {
        bail!("--std must be positive");
    }
    Ok(load_images(
        &source.path,
        &source.split,
        Preprocess {
            mean: pre.mean,
            std: pre.std,
            pad: pre.pad,
        },
        source.limit,
    )?)
}
