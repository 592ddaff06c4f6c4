//! Labelled or unlabelled image sets, as `eval` and `--calibrate` read them.

use std::path::PathBuf;

use accnn_infer::data::{ImageOptions, ImageSource, open_images as open};
use anyhow::Result;
use clap::Args;

/// How pixels become model inputs (a `.npz` is taken as already preprocessed).
#[derive(Args, Debug, Clone)]
pub(crate) struct PreprocessArgs {
    /// input = (pixel / 255 - mean) / std; one value, or one per channel for image folders
    /// (ImageNet: 0.485,0.456,0.406; the committed fixture: 0.286).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub mean: Vec<f32>,
    /// Like --mean (ImageNet: 0.229,0.224,0.225; the committed fixture: 0.353).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub std: Vec<f32>,
    /// Black border added on each side (the committed fixture: 2, 28 -> 32).
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// Image folders: resize the shorter side to this many pixels before cropping (ImageNet: 256).
    #[arg(long, value_name = "PIXELS")]
    pub resize: Option<usize>,
    /// Image folders: centre crop, SIZE or HxW (default: the model's input size).
    #[arg(long, value_name = "SIZE|HxW", value_parser = accnn_infer::data::parse_crop)]
    pub crop: Option<[usize; 2]>,
}

impl PreprocessArgs {
    pub fn options(&self) -> ImageOptions {
        ImageOptions {
            resize: self.resize,
            crop: self.crop,
            mean: self.mean.clone(),
            std: self.std.clone(),
            pad: self.pad,
        }
    }
}

/// Which images to read.
pub(crate) struct DataSource {
    pub path: PathBuf,
    pub split: String,
    pub limit: Option<usize>,
}

/// Opens a directory of MNIST/Fashion-MNIST IDX files, a `.npz` with `x` and `y`, or a folder of class
/// subfolders of JPEG/PNG images, for a model whose input is `data_shape` (`[N, C, H, W]`).
pub(crate) fn open_images(
    source: &DataSource,
    pre: &PreprocessArgs,
    data_shape: &[usize],
) -> Result<Box<dyn ImageSource>> {
    Ok(open(
        &source.path,
        &source.split,
        &pre.options(),
        data_shape,
        source.limit,
    )?)
}
