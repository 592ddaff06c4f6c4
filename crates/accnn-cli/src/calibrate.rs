//! `--calibrate`: data-aware decomposition on unlabelled calibration images.

use std::path::PathBuf;

use accnn::{Analysis, Factorisation, RankPlan, Report};
use accnn_calibrate::{CalibrateOptions, Statistics};
use accnn_graph::Model;
use accnn_infer::data::Dataset;
use anyhow::{Result, bail};
use clap::Args;

use crate::data::{DataSource, open_images};

/// Flags of data-aware decomposition, shared by the main command and `conv` / `fc`.
#[derive(Args, Debug)]
pub(crate) struct CalibrationArgs {
    /// Fit the decomposition to the network's responses on these images (IDX directory or .npz, as
    /// `accnn eval` reads; use training images, never the test set): ranks by response energy, and
    /// each pair refitted by least squares on the approximated network's inputs.
    #[arg(long, value_name = "DATA")]
    pub calibrate: Option<PathBuf>,
    /// Calibration images to use.
    #[arg(long, default_value_t = 512, requires = "calibrate")]
    pub calib_samples: usize,
    /// Which IDX files of a directory to read: train or t10k.
    #[arg(long, default_value = "train", requires = "calibrate")]
    pub calib_split: String,
    /// Output positions sampled per image and convolution.
    #[arg(long, default_value_t = 16, requires = "calibrate")]
    pub calib_positions: usize,
    #[command(flatten)]
    pub preprocess: crate::data::PreprocessArgs,
}

/// Calibration images and what the pass over the original network gathered.
pub(crate) struct Calibration {
    pub data: Dataset,
    pub stats: Statistics,
    pub options: CalibrateOptions,
}

impl CalibrationArgs {
    pub fn options(&self, input: &[usize]) -> CalibrateOptions {
        CalibrateOptions {
            positions: self.calib_positions.max(1),
            ..CalibrateOptions::for_input(input)
        }
    }
}

/// Loads the calibration set and runs the original network over it for the `wanted` layers.
pub(crate) fn prepare(
    args: &CalibrationArgs,
    model: &Model,
    analysis: &Analysis,
    wanted: &[bool],
) -> Result<Option<Calibration>> {
    let Some(path) = &args.calibrate else {
        return Ok(None);
    };
    if args.calib_samples == 0 {
        bail!("--calib-samples must be positive");
    }
    let data = open_images(
        &DataSource {
            path: path.clone(),
            split: args.calib_split.clone(),
            limit: Some(args.calib_samples),
        },
        &args.preprocess,
        &analysis.data_shape,
    )
    .and_then(|images| Ok(images.to_dataset()?))
    .map_err(|e| anyhow::anyhow!("--calibrate {e:#}"))?;
    let options = args.options(&data.shape[1..]);
    let stats = accnn_calibrate::collect(model, analysis, &data, wanted, &options)?;
    say!(
        "calibration: {} images from {}, statistics in {:.1} s",
        data.len(),
        path.display(),
        stats.seconds
    )?;
    Ok(Some(Calibration { data, stats, options }))
}

/// Response-weighted factorisations of the `wanted` layers.
pub(crate) fn factorise(
    calibration: &Calibration,
    model: &Model,
    analysis: &Analysis,
    wanted: &[bool],
) -> Result<Vec<Option<Factorisation>>> {
    Ok(accnn_calibrate::factorise(
        model,
        analysis,
        &calibration.stats,
        wanted,
        &calibration.options,
    )?)
}

/// Applies `plan` layer by layer with the least-squares refit, and prints each layer's fit.
pub(crate) fn apply(
    calibration: &Calibration,
    model: Model,
    analysis: &Analysis,
    svds: &[Option<Factorisation>],
    plan: &RankPlan,
) -> Result<(Model, Report)> {
    let r = accnn_calibrate::reconstruct(
        model,
        analysis,
        svds,
        plan,
        &calibration.stats,
        &calibration.data,
        &calibration.options,
    )?;
    let width = r.fits.iter().map(|f| f.name.len()).max().unwrap_or(5).max(5);
    say!(
        "{:<width$}  {:>5}  {:>16}  {:>16}",
        "layer",
        "K",
        "response error",
        "after refit"
    )?;
    for f in &r.fits {
        if f.refit {
            say!(
                "{:<width$}  {:>5}  {:>15.3}%  {:>15.3}%",
                f.name,
                f.width,
                100.0 * f.error_before,
                100.0 * f.error_after
            )?;
        } else {
            say!(
                "{:<width$}  {:>5}  {:>15.3}%  kept: {} samples for {} unknowns (raise --calib-samples or --calib-positions)",
                f.name,
                f.width,
                100.0 * f.error_before,
                f.samples,
                f.features
            )?;
        }
    }
    let refitted = r.fits.iter().filter(|f| f.refit).count();
    say!(
        "reconstruction: {refitted} of {} layers refitted on the approximated network's inputs in {:.1} s (response error: relative squared pre-activation error on the calibration samples)",
        r.fits.len(),
        r.seconds
    )?;
    Ok((r.model, r.report))
}
