//! `--calibrate`: data-aware decomposition on unlabelled calibration images.

use std::path::PathBuf;

use accnn::{Accelerated, Calibration, CalibrationImages, Fit};
use anyhow::{Result, bail};
use clap::Args;

/// The `--calibrate` value that asks for synthetic images.
const SYNTHETIC: &str = "synthetic";

/// Flags of data-aware decomposition, shared by the main command and `conv` / `fc`.
#[derive(Args, Debug)]
pub(crate) struct CalibrationArgs {
    /// Fit the decomposition to the network's responses on these images (IDX directory, .npz or
    /// image folder, as `accnn eval` reads; use training images, never the test set): ranks by
    /// response energy, and each pair refitted by least squares on the approximated network's
    /// inputs. `synthetic`: seeded images with natural-image statistics instead, no data needed
    /// (inputs standardised to mean 0, std 1; write ./synthetic for a file of that name).
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

impl CalibrationArgs {
    /// How the factors are fitted: to these images, or to the weights alone.
    pub fn fit(&self) -> Result<Fit> {
        let Some(path) = &self.calibrate else {
            return Ok(Fit::Weights);
        };
        if self.calib_samples == 0 {
            bail!("--calib-samples must be positive");
        }
        let images = if path.as_os_str() == SYNTHETIC {
            CalibrationImages::Synthetic {
                count: self.calib_samples,
                seed: 0,
            }
        } else {
            CalibrationImages::Files {
                path: path.clone(),
                split: self.calib_split.clone(),
                limit: self.calib_samples,
                image: self.preprocess.options(),
            }
        };
        Ok(Fit::Calibration(Calibration {
            images,
            positions: self.calib_positions,
            threads: 0,
        }))
    }

    /// What the calibration images are, for the report: "images from PATH", or synthetic ones.
    pub fn source(&self) -> String {
        match &self.calibrate {
            Some(p) if p.as_os_str() == SYNTHETIC => "synthetic images (seeded, natural-image statistics)".into(),
            Some(p) => format!("images from {}", p.display()),
            None => String::new(),
        }
    }
}

/// The per-layer table of the least-squares refit.
pub(crate) fn print_fits(result: &Accelerated) -> Result<()> {
    if result.calibration.is_none() {
        return Ok(());
    }
    let fits = &result.fits;
    let width = fits.iter().map(|f| f.name.len()).max().unwrap_or(5).max(5);
    say!(
        "{:<width$}  {:>5}  {:>16}  {:>16}",
        "layer",
        "K",
        "response error",
        "after refit"
    )?;
    for f in fits {
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
    let refitted = fits.iter().filter(|f| f.refit).count();
    say!(
        "reconstruction: {refitted} of {} layers refitted on the approximated network's inputs in {:.1} s (response error: relative squared pre-activation error on the calibration samples)",
        fits.len(),
        result.reconstruction_seconds
    )?;
    Ok(())
}
