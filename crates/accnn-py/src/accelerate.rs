//! `accelerate`: the library's pipeline, once, with its report as plain Python data.

use std::path::PathBuf;

use accnn::{
    Accelerated, Calibration, CalibrationImages, Cost, Dataset, Fit, ImageOptions, LatencyOptions, LatencyRuntime,
    Objective, Output, Precision, RankConfig, RankSource, Request, Scope,
};
use accnn_infer::EngineOptions;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::AccnnError;
use crate::convert::{ArrayArg, ModelArg, library_error};
use crate::progress::{Progress, Show};

/// Every option of `accnn.accelerate`, filled in by the Python half (which holds the defaults).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct AccelerateOptions {
    model: ModelArg,
    ratio: Option<f64>,
    /// A config.json's text, and the file it came from, if it did.
    config_text: Option<String>,
    config_path: Option<String>,
    cost: String,
    conv_only: bool,
    align: usize,
    rank_search: Option<String>,
    precision: String,
    fold_bn: bool,
    bias_correction: bool,
    gain_restoration: bool,
    data_shape: Option<Vec<usize>>,
    calibrate_path: Option<String>,
    calibrate_array: Option<ArrayArg>,
    calib_samples: usize,
    calib_split: String,
    calib_positions: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    pad: usize,
    resize: Option<usize>,
    crop: Option<[usize; 2]>,
    latency_batch: usize,
    threads: usize,
    latency_cache: Option<String>,
    /// "accnn" or "onnxruntime": where cost="latency" times.
    runtime: String,
    ort_library: Option<String>,
    save_model: Option<String>,
    /// "onnx" or "mxnet": the format save_model is written in (default: the input's).
    save_format: Option<String>,
    config_out: Option<String>,
    /// Return the new model as ONNX bytes too.
    want_bytes: bool,
    progress: Option<bool>,
}

fn invalid(message: String) -> PyErr {
    AccnnError::new_err(message)
}

impl AccelerateOptions {
    fn request(&self, py: Python<'_>) -> PyResult<Request> {
        let ranks = match (&self.config_text, self.ratio) {
            (Some(text), _) => {
                if self.cost != "macs" {
                    return Err(invalid(
                        "cost='latency' chooses ranks for a ratio; with a config the ranks are given".into(),
                    ));
                }
                let path = self.config_path.as_ref().map(PathBuf::from);
                let shown = path.clone().unwrap_or_else(|| PathBuf::from("config"));
                let config = RankConfig::parse(text, &shown).map_err(crate::convert::error)?;
                RankSource::Config { config, path }
            }
            (None, Some(ratio)) => RankSource::Ratio {
                ratio,
                scope: if self.conv_only { Scope::ConvOnly } else { Scope::All },
                align: self.align,
                objective: match &self.rank_search {
                    Some(name) => name
                        .parse::<Objective>()
                        .map_err(|e| invalid(format!("rank_search '{name}': {e}")))?,
                    None => Objective::default(),
                },
                cost: match self.cost.as_str() {
                    "macs" => Cost::Macs,
                    "latency" => Cost::Latency(LatencyOptions {
                        batch: self.latency_batch,
                        runtime: match self.runtime.as_str() {
                            "accnn" => LatencyRuntime::Engine,
                            "onnxruntime" => LatencyRuntime::Onnxruntime {
                                library: self.ort_library.as_ref().map(PathBuf::from),
                            },
                            other => {
                                return Err(invalid(format!("runtime '{other}': expected 'accnn' or 'onnxruntime'")));
                            }
                        },
                        engine: EngineOptions {
                            threads: self.threads,
                            ..Default::default()
                        },
                        cache: self
                            .latency_cache
                            .as_ref()
                            .map(PathBuf::from)
                            .or_else(accnn::latency::default_cache),
                    }),
                    other => return Err(invalid(format!("cost '{other}': expected 'macs' or 'latency'"))),
                },
            },
            (None, None) => return Err(invalid("give a ratio or a config".into())),
        };
        let precision = match self.precision.as_str() {
            "auto" => Precision::Auto,
            "f32" => Precision::F32,
            "f64" => Precision::F64,
            other => return Err(invalid(format!("precision '{other}': expected 'auto', 'f32' or 'f64'"))),
        };
        let format = match self.save_format.as_deref() {
            None => None,
            Some("onnx") => Some(accnn::ModelFormat::Onnx),
            Some("mxnet") => Some(accnn::ModelFormat::Mxnet),
            Some(other) => return Err(invalid(format!("save_format '{other}': expected 'onnx' or 'mxnet'"))),
        };
        Ok(Request {
            model: self.model.input(py)?,
            data_shape: self.data_shape.clone(),
            fold_batch_norm: self.fold_bn,
            ranks,
            fit: self.fit(py)?,
            precision,
            bias_correction: self.bias_correction,
            gain_restoration: self.gain_restoration,
            output: self.save_model.as_ref().map(|dest| Output {
                model: dest.clone(),
                format,
                config: self.config_out.as_ref().map(PathBuf::from),
            }),
        })
    }

    fn fit(&self, py: Python<'_>) -> PyResult<Fit> {
        let images = match (&self.calibrate_array, &self.calibrate_path) {
            (Some(array), _) => {
                let (images, shape) = array.images(py, "calibrate")?;
                let labels = vec![0; shape[0]];
                CalibrationImages::Dataset(Dataset { shape, images, labels })
            }
            (None, Some(path)) if path == "synthetic" => CalibrationImages::Synthetic {
                count: self.calib_samples,
                seed: 0,
            },
            (None, Some(path)) => CalibrationImages::Files {
                path: PathBuf::from(path),
                split: self.calib_split.clone(),
                limit: self.calib_samples,
                image: ImageOptions {
                    resize: self.resize,
                    crop: self.crop,
                    mean: self.mean.clone(),
                    std: self.std.clone(),
                    pad: self.pad,
                },
            },
            (None, None) => return Ok(Fit::Weights),
        };
        Ok(Fit::Calibration(Calibration {
            images,
            positions: self.calib_positions,
            threads: self.threads,
        }))
    }
}

/// Accelerates a model; returns the new model's ONNX bytes (when asked for) and the report as a dict.
#[pyfunction]
pub(crate) fn accelerate<'py>(
    py: Python<'py>,
    options: AccelerateOptions,
) -> PyResult<(Option<Bound<'py, PyBytes>>, Bound<'py, PyDict>)> {
    let request = options.request(py)?;
    let mut progress =
        Progress::new(Show::from_flag(options.progress)).with_memory(accnn_cli::PhaseMemory::for_request(&request));
    let want_bytes = options.want_bytes;
    let (result, bytes) = py
        .detach(|| {
            let result = accnn::accelerate_with(request, &mut progress)?;
            let bytes = if want_bytes { Some(result.onnx_bytes()?) } else { None };
            Ok::<_, accnn::Error>((result, bytes))
        })
        .map_err(library_error)?;
    let report = report(py, &result, &progress)?;
    Ok((bytes.map(|b| PyBytes::new(py, &b)), report))
}

/// Everything the report says, as plain data (the Python half wraps it in dataclasses).
fn report<'py>(py: Python<'py>, result: &Accelerated, progress: &Progress) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let layers = PyList::empty(py);
    for l in &result.report.layers {
        let layer = PyDict::new(py);
        layer.set_item("name", &l.name)?;
        layer.set_item("kind", kind_name(l.kind))?;
        layer.set_item("rank", l.width)?;
        layer.set_item("max_rank", l.max_width)?;
        layer.set_item("macs_before", l.macs_before)?;
        layer.set_item("macs_after", l.macs_after)?;
        layer.set_item("params_before", l.params_before)?;
        layer.set_item("params_after", l.params_after)?;
        layer.set_item("energy", l.energy)?;
        let fit = result.fits.iter().find(|f| f.name == l.name);
        layer.set_item("fit_error_before", fit.map(|f| f.error_before))?;
        layer.set_item("fit_error_after", fit.map(|f| f.error_after))?;
        layer.set_item("refit", fit.map(|f| f.refit))?;
        layers.append(layer)?;
    }
    out.set_item("layers", layers)?;
    let (macs_before, macs_after) = result.report.macs();
    let (params_before, params_after) = result.report.params();
    out.set_item("speedup", result.report.speedup())?;
    out.set_item("conv_speedup", result.report.conv_speedup())?;
    out.set_item("macs_before", macs_before)?;
    out.set_item("macs_after", macs_after)?;
    out.set_item("params_before", params_before)?;
    out.set_item("params_after", params_after)?;
    out.set_item("chosen_by", result.report.chosen_by.as_deref())?;
    out.set_item("bias_corrected", result.report.bias_corrected)?;
    out.set_item("gain_restored", result.report.gain_restored)?;
    out.set_item("config_json", result.config().to_json())?;
    out.set_item(
        "folded",
        result
            .folded
            .iter()
            .map(|f| (f.batch_norm.clone(), f.convolution.clone()))
            .collect::<Vec<_>>(),
    )?;
    out.set_item("skipped", &progress.skipped)?;
    out.set_item("warnings", &progress.warnings)?;
    match &result.fidelity {
        Ok(f) => {
            let fidelity = PyDict::new(py);
            fidelity.set_item("inputs", f.inputs)?;
            fidelity.set_item("synthetic", f.synthetic)?;
            fidelity.set_item("relative_error", f.relative_error)?;
            fidelity.set_item("top1_agreement", f.top1_agreement)?;
            out.set_item("fidelity", fidelity)?;
            out.set_item("fidelity_skipped", py.None())?;
        }
        Err(why) => {
            out.set_item("fidelity", py.None())?;
            out.set_item("fidelity_skipped", why)?;
        }
    }
    match &result.latency {
        Some(l) => {
            let latency = PyDict::new(py);
            latency.set_item("batch", l.batch)?;
            latency.set_item("original_ms", l.original * 1e3)?;
            latency.set_item("predicted_ms", l.predicted * 1e3)?;
            latency.set_item("measured_ms", l.measured * 1e3)?;
            out.set_item("latency", latency)?;
        }
        None => out.set_item("latency", py.None())?,
    }
    match &result.calibration {
        Some(c) => out.set_item("calibration_images", c.images)?,
        None => out.set_item("calibration_images", py.None())?,
    }
    out.set_item("plan_seconds", result.plan_seconds)?;
    out.set_item(
        "written",
        result
            .written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    )?;
    out.set_item("table", result.report.to_string())?;
    Ok(out)
}

/// A layer kind as config.json's sections name it.
pub(crate) fn kind_name(kind: accnn::LayerKind) -> &'static str {
    match kind {
        accnn::LayerKind::Convolution => "conv",
        accnn::LayerKind::FullyConnected => "fc",
    }
}
