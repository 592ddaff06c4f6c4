//! The engine from Python: `inspect`, `run`, `evaluate` and `benchmark`.

use std::path::Path;

use accnn::{Dataset, ImageOptions, LoadedModel};
use accnn_infer::data::ImageSource;
use accnn_infer::eval::{agreement, predict, score};
use accnn_infer::timing::compare;
use accnn_infer::{Engine, EngineOptions};
use candle_core::{Device, Tensor};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::AccnnError;
use crate::accelerate::kind_name;
use crate::convert::{ArrayArg, ModelArg, error, library_error};
use crate::progress::{Progress, Show};

/// Reads a model as it is (BatchNorm not folded) for `data_shape` (`C, H, W`; `None`: declared).
fn load(py: Python<'_>, model: &ModelArg, data_shape: Option<&[usize]>) -> PyResult<LoadedModel> {
    let input = model.input(py)?;
    let shape = data_shape.map(<[usize]>::to_vec);
    py.detach(|| accnn::load_model(input, shape.as_deref(), false))
        .map_err(library_error)
}

fn engine(model: &LoadedModel, threads: usize) -> PyResult<Engine> {
    let options = EngineOptions {
        threads,
        ..Default::default()
    };
    Engine::new(&model.model, options).map_err(|e| AccnnError::new_err(format!("model '{}': {e}", model.name)))
}

/// Every node and layer of a model, and the table `accnn inspect` prints.
#[pyfunction]
#[pyo3(signature = (model, data_shape=None))]
pub(crate) fn inspect<'py>(
    py: Python<'py>,
    model: ModelArg,
    data_shape: Option<Vec<usize>>,
) -> PyResult<Bound<'py, PyDict>> {
    let loaded = load(py, &model, data_shape.as_deref())?;
    let out = PyDict::new(py);
    out.set_item("name", &loaded.name)?;
    out.set_item("data_shape", loaded.analysis.data_shape.clone())?;
    let layers = PyList::empty(py);
    for l in &loaded.analysis.layers {
        let layer = PyDict::new(py);
        layer.set_item("name", &loaded.model.graph.nodes[l.node].name)?;
        layer.set_item("kind", kind_name(l.kind))?;
        layer.set_item("weight_shape", l.weight_shape.clone())?;
        layer.set_item("macs", l.macs)?;
        layer.set_item("params", l.params)?;
        layer.set_item("max_rank", l.max_width())?;
        layers.append(layer)?;
    }
    out.set_item("layers", layers)?;
    out.set_item("macs", loaded.analysis.layers.iter().map(|l| l.macs).sum::<u64>())?;
    out.set_item(
        "params",
        loaded.model.args.values().map(|t| t.len() as u64).sum::<u64>(),
    )?;
    out.set_item("warnings", &loaded.warnings)?;
    out.set_item("table", loaded.inspection())?;
    Ok(out)
}

/// The model's outputs on `x` (float32 `N, C, H, W`), each as its bytes and shape.
#[pyfunction]
#[pyo3(signature = (model, x, threads=0))]
pub(crate) fn run<'py>(
    py: Python<'py>,
    model: ModelArg,
    x: ArrayArg,
    threads: usize,
) -> PyResult<Vec<(Bound<'py, PyBytes>, Vec<usize>)>> {
    let (values, shape) = x.images(py, "x")?;
    let loaded = load(py, &model, Some(&shape[1..]))?;
    let engine = engine(&loaded, threads)?;
    let outputs = py
        .detach(|| {
            let input = Tensor::from_vec(values, shape.to_vec(), &Device::Cpu)?;
            engine
                .forward(&input)?
                .iter()
                .map(|t| {
                    let dims = t.dims().to_vec();
                    let values = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    Ok((values, dims))
                })
                .collect::<Result<Vec<_>, accnn_infer::InferError>>()
        })
        .map_err(error)?;
    Ok(outputs
        .into_iter()
        .map(|(values, dims)| {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
            (PyBytes::new(py, &bytes), dims)
        })
        .collect())
}

/// Labelled images for `evaluate`: arrays, or files as `accnn eval --data` reads them.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct EvalData {
    x: Option<ArrayArg>,
    y: Option<Vec<u32>>,
    path: Option<String>,
    split: String,
    limit: Option<usize>,
    mean: Vec<f32>,
    std: Vec<f32>,
    pad: usize,
    resize: Option<usize>,
    crop: Option<[usize; 2]>,
    data_shape: Option<Vec<usize>>,
}

impl EvalData {
    /// The images, for a model read at the shape they (or `data_shape`) give.
    fn open(&self, py: Python<'_>, model: &ModelArg) -> PyResult<(LoadedModel, Box<dyn ImageSource>)> {
        match (&self.x, &self.path) {
            (Some(x), _) => {
                let (images, shape) = x.images(py, "x")?;
                let labels = self
                    .y
                    .clone()
                    .ok_or_else(|| AccnnError::new_err("y: labels are needed with an array x"))?;
                if labels.len() != shape[0] {
                    return Err(AccnnError::new_err(format!(
                        "y: {} labels for {} images",
                        labels.len(),
                        shape[0]
                    )));
                }
                let loaded = load(py, model, Some(&shape[1..]))?;
                Ok((loaded, Box::new(Dataset { shape, images, labels })))
            }
            (None, Some(path)) => {
                let loaded = load(py, model, self.data_shape.as_deref())?;
                let options = ImageOptions {
                    resize: self.resize,
                    crop: self.crop,
                    mean: self.mean.clone(),
                    std: self.std.clone(),
                    pad: self.pad,
                };
                let images = accnn_infer::data::open_images(
                    Path::new(path),
                    &self.split,
                    &options,
                    &loaded.analysis.data_shape,
                    self.limit,
                )
                .map_err(|e| AccnnError::new_err(format!("--data {:#}", anyhow::Error::new(e))))?;
                Ok((loaded, images))
            }
            (None, None) => Err(AccnnError::new_err("give images: an array x with labels y, or a path")),
        }
    }
}

/// Top-1 and top-5 accuracy, and agreement with `reference` when given.
#[pyfunction]
#[pyo3(signature = (model, data, reference=None, batch=256, threads=0, progress=None))]
pub(crate) fn evaluate<'py>(
    py: Python<'py>,
    model: ModelArg,
    data: EvalData,
    reference: Option<ModelArg>,
    batch: usize,
    threads: usize,
    progress: Option<bool>,
) -> PyResult<Bound<'py, PyDict>> {
    let _held = accnn_cli::hold_freed_memory();
    let (loaded, images) = data.open(py, &model)?;
    if images.count() == 0 {
        return Err(AccnnError::new_err("no images to evaluate on"));
    }
    let reference = match &reference {
        Some(r) => Some(load(py, r, Some(&loaded.analysis.data_shape[1..]))?),
        None => None,
    };
    let engines = (
        engine(&loaded, threads)?,
        reference.as_ref().map(|r| engine(r, threads)).transpose()?,
    );
    let images = images.as_ref();
    let mut progress = Progress::new(Show::from_flag(progress));
    let mut run_one = |engine: &Engine, name: &str| {
        let total = images.count();
        let mut done = 0;
        let predictions = predict(engine, images, batch, |n| {
            done += n;
            let bar = || accnn_cli::count_bar(total, name);
            progress.advance(bar, done, total, &format!("{name}: {done}/{total} images"));
        });
        progress.finish();
        predictions
    };
    let (predictions, reference_predictions) = py
        .detach(|| {
            let p = run_one(&engines.0, &loaded.name)?;
            let r = match (&engines.1, &reference) {
                (Some(e), Some(r)) => Some(run_one(e, &r.name)?),
                _ => None,
            };
            Ok::<_, accnn_infer::InferError>((p, r))
        })
        .map_err(error)?;
    let scores = score(&predictions, images.labels());
    let out = PyDict::new(py);
    out.set_item("model", &loaded.name)?;
    out.set_item("images", scores.count)?;
    out.set_item("top1", scores.top1)?;
    out.set_item("top5", scores.top5)?;
    match reference_predictions {
        Some(r) => {
            out.set_item("reference_top1", score(&r, images.labels()).top1)?;
            out.set_item("agreement", agreement(&predictions, &r))?;
        }
        None => {
            out.set_item("reference_top1", py.None())?;
            out.set_item("agreement", py.None())?;
        }
    }
    Ok(out)
}

/// Latency of `a` and `b` measured alternately at each batch size: medians and quartiles in ms.
#[pyfunction]
#[pyo3(signature = (a, b, batches, rounds=10, warmup=2, threads=0, data_shape=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn benchmark<'py>(
    py: Python<'py>,
    a: ModelArg,
    b: ModelArg,
    batches: Vec<usize>,
    rounds: usize,
    warmup: usize,
    threads: usize,
    data_shape: Option<Vec<usize>>,
) -> PyResult<Bound<'py, PyDict>> {
    if rounds == 0 || batches.is_empty() || batches.contains(&0) {
        return Err(AccnnError::new_err("rounds and every batch size must be positive"));
    }
    let _held = accnn_cli::hold_freed_memory();
    let base = load(py, &a, data_shape.as_deref())?;
    let other = load(py, &b, Some(&base.analysis.data_shape[1..]))?;
    let macs = |l: &LoadedModel| l.analysis.layers.iter().map(|l| l.macs).sum::<u64>();
    let theoretical = macs(&base) as f64 / macs(&other).max(1) as f64;
    let (ea, eb) = (engine(&base, threads)?, engine(&other, threads)?);
    let data_shape = base.analysis.data_shape.clone();
    let rows = py
        .detach(|| {
            batches
                .iter()
                .map(|&batch| {
                    let mut shape = data_shape.clone();
                    shape[0] = batch;
                    let input = Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?;
                    Ok((batch, compare(&ea, &eb, &input, warmup, rounds)?))
                })
                .collect::<Result<Vec<_>, accnn_infer::InferError>>()
        })
        .map_err(error)?;
    let out = PyDict::new(py);
    out.set_item("a", &base.name)?;
    out.set_item("b", &other.name)?;
    out.set_item("theoretical_speedup", theoretical)?;
    let results = PyList::empty(py);
    for (batch, c) in rows {
        let row = PyDict::new(py);
        row.set_item("batch", batch)?;
        let (a_q1, a_q3) = c.a.iqr();
        let (b_q1, b_q3) = c.b.iqr();
        row.set_item("a_ms", c.a.median() * 1e3)?;
        row.set_item("a_iqr_ms", (a_q1 * 1e3, a_q3 * 1e3))?;
        row.set_item("b_ms", c.b.median() * 1e3)?;
        row.set_item("b_iqr_ms", (b_q1 * 1e3, b_q3 * 1e3))?;
        row.set_item("speedup", c.speedup())?;
        results.append(row)?;
    }
    out.set_item("results", results)?;
    Ok(out)
}
