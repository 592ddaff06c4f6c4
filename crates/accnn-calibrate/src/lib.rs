//! Data-aware decomposition: keep accuracy without fine-tuning by fitting the low-rank layers to
//! the responses the network produces on a few hundred unlabelled calibration images.
//!
//! Two passes, after Zhang et al. (arXiv 1411.4229, 1505.06798):
//! 1. [`collect`]: run the original network once; for every layer, accumulate the second moment
//!    `Σ` of its input patches and keep its pre-activation outputs at sampled positions. The
//!    factorisation of each layer is then the response-weighted SVD
//!    ([`WhitenedConvSvd`]), whose singular values are response energies: rank selection budgets
//!    what the layer contributes to the network's activations, not to its weights.
//! 2. [`reconstruct`]: in network order, replace each planned layer by its pair, with the second
//!    half (and the bias) refitted by ridge least squares so that the pair, fed the inputs of the
//!    *already approximated* network, reproduces the *original* network's responses ("asymmetric"
//!    reconstruction: errors of earlier layers are corrected, not accumulated).
//!
//! Responses are fitted before the nonlinearity: the fit is then linear with an exact closed form,
//! and a ReLU after a closer pre-activation is closer too.
//!
//! ```no_run
//! # fn main() -> Result<(), accnn_calibrate::CalibrateError> {
//! # let (model, data): (accnn_graph::Model, accnn_infer::data::Dataset) = unimplemented!();
//! use accnn_plan::{Analysis, Scope, plan_for_ratio};
//! use accnn_calibrate::{CalibrateOptions, collect, factorise, reconstruct};
//! let analysis = Analysis::new(&model, &[1, 1, 32, 32])?;
//! let options = CalibrateOptions::default();
//! let wanted = analysis.reducible();
//! let mut stats = collect(&model, &analysis, &data, &wanted, &options)?;
//! let svds = factorise(&model, &analysis, &mut stats, &wanted, &options, &mut |_, _| {})?;
//! let plan = plan_for_ratio(&analysis, &svds, 3.0, Scope::All)?;
//! let fitted = reconstruct(model, &analysis, &svds, &plan, &stats, &data, &options, &mut |_, _, _| {})?;
//! # let _ = fitted; Ok(()) }
//! ```

mod patches;
mod reconstruct;

use std::time::Instant;

use accnn_decompose::{SecondMoment, WhitenedConvSvd};
use accnn_graph::ir::ConvAttrs;
use accnn_graph::{Entry, Model, Op, Tensor};
use accnn_infer::data::Dataset;
use accnn_infer::{Engine, EngineOptions};
use accnn_plan::{Analysis, Factorisation, LayerId, LayerKind, LayerSet, PerLayer};

use patches::{Sampler, vertical_patches};
pub use reconstruct::{LayerFit, MIN_SAMPLES_PER_FEATURE, Reconstruction, reconstruct};

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Plan(#[from] accnn_plan::Error),
    #[error(transparent)]
    Graph(#[from] accnn_graph::GraphError),
    #[error(transparent)]
    Infer(#[from] accnn_infer::InferError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("layer '{layer}': {message}")]
    Layer { layer: String, message: String },
    #[error("{0}")]
    Data(String),
}

/// Knobs of calibration.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Output positions sampled per image and convolution (all of them when the grid is smaller).
    pub positions: usize,
    /// Ridge of the whitening and of the least squares, relative to the mean eigenvalue.
    pub ridge: f64,
    /// Images per engine run.
    pub batch: usize,
    /// Worker threads (0: every core).
    pub threads: usize,
    /// Layers whose moment would be wider than this keep the weight SVD but still get the
    /// least-squares refit: a convolution's moment is `C·kh` wide (its vertical input patches), a
    /// dense layer's as wide as its outputs (the moment of its responses).
    pub max_moment_dim: usize,
    /// Memory (bytes) for the approximated network's activations at the last refitted layer, over
    /// the whole calibration set: where they fit, the next layer's inputs are computed from them
    /// instead of from the images (each layer then runs once per image, not once per later layer).
    pub resume_bytes: usize,
}

impl CalibrateOptions {
    /// The defaults, with batches of about 4 M input values for images of `shape` (`C, H, W`):
    /// 64 small images, 13 at 3x224x224, whose activations stay within a few hundred MB.
    pub fn for_input(shape: &[usize]) -> Self {
        let per_image: usize = shape.iter().product();
        CalibrateOptions {
            batch: (4_000_000 / per_image.max(1)).clamp(1, 64),
            ..Default::default()
        }
    }
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            positions: 16,
            ridge: 1e-3,
            batch: 64,
            threads: 0,
            max_moment_dim: 4608,
            resume_bytes: 768 << 20,
        }
    }
}

/// The statistics a layer's response-weighted factorisation is computed from.
enum Moment {
    /// Second moment of a convolution's vertical input patches.
    Inputs(SecondMoment),
    /// Second moment of a dense layer's outputs less its bias.
    Responses {
        moment: SecondMoment,
        bias: Option<Vec<f32>>,
    },
}

/// What the pass over the original network gathered for one layer.
pub struct LayerResponses {
    /// `None`: the layer keeps the weight SVD.
    moment: Option<Moment>,
    /// Pre-activation outputs at the sampled positions, row by row.
    targets: Vec<f32>,
    outputs: usize,
}

/// What [`collect`] keeps alive per batch, at most: every chosen layer's input and output.
const COLLECT_BYTES: usize = 256 << 20;

/// Calibration statistics of the layers they were collected for.
pub struct Statistics {
    layers: PerLayer<LayerResponses>,
    pub seconds: f64,
}

/// An engine computing `outputs` of `model`, activations unfused (responses are fitted before
/// the nonlinearity).
fn engine(model: &Model, options: &CalibrateOptions, outputs: &[Entry]) -> Result<Engine, CalibrateError> {
    let engine_options = EngineOptions {
        threads: options.threads,
        fuse_activations: false,
        ..Default::default()
    };
    Ok(Engine::for_outputs(model, engine_options, outputs)?)
}

/// Calls `f` with `t`'s values in row-major order: borrowed in place when `t` is a contiguous f32
/// tensor on the CPU, copied otherwise. The statistics pass reads every layer's input and output
/// of every batch: copied, VGG-16 at 224 wrote 216 MB of fresh pages a batch of two images.
fn with_values<R>(t: &candle_core::Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, CalibrateError> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&data[start..end]));
        }
    }
    let copy = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&copy))
}

fn batches(
    data: &Dataset,
    batch: usize,
) -> impl Iterator<Item = (usize, candle_core::Result<candle_core::Tensor>)> + '_ {
    let n = data.len();
    let step = batch.max(1);
    (0..n).step_by(step).map(move |start| {
        let end = (start + step).min(n);
        let (images, _) = data.slice(start..end);
        let mut shape = data.shape;
        shape[0] = end - start;
        (
            start,
            candle_core::Tensor::from_vec(images, shape.to_vec(), &candle_core::Device::Cpu),
        )
    })
}

fn conv_of(model: &Model, node: usize) -> Option<&ConvAttrs> {
    match &model.graph.nodes[node].op {
        Op::Convolution(c) => Some(c),
        _ => None,
    }
}

/// Runs the original `model` on `data` and gathers, for every layer `wanted` selects, its input
/// moment and its sampled pre-activation outputs.
pub fn collect(
    model: &Model,
    analysis: &Analysis,
    data: &Dataset,
    wanted: &LayerSet,
    options: &CalibrateOptions,
) -> Result<Statistics, CalibrateError> {
    let started = Instant::now();
    if data.is_empty() {
        return Err(CalibrateError::Data("the calibration set is empty".into()));
    }
    let chosen: Vec<LayerId> = wanted.iter().collect();
    let mut layers = PerLayer::new();
    for &i in &chosen {
        let layer = &analysis[i];
        let max = options.max_moment_dim;
        let moment = match (layer.kind, conv_of(model, layer.node)) {
            (LayerKind::Convolution, Some(c)) if c.num_group == 1 => {
                let d = layer.input_shape[1] * c.kernel[0];
                (d <= max).then(|| Moment::Inputs(SecondMoment::new(d)))
            }
            (LayerKind::FullyConnected, _) => {
                let m = layer.weight_shape.first().copied().unwrap_or(0);
                let node = &model.graph.nodes[layer.node];
                let bias = node
                    .inputs
                    .get(2)
                    .and_then(|e| model.param(&model.graph.nodes[e.node].name))
                    .map(|t| t.data().to_vec());
                (m <= max).then(|| Moment::Responses {
                    moment: SecondMoment::new(m),
                    bias,
                })
            }
            _ => None,
        };
        layers.insert(
            i,
            LayerResponses {
                moment,
                targets: Vec::new(),
                // A dense layer's outputs are its weight's rows: its output may be `N, T, O`
                // (MatMul over a sequence), where axis 1 is not the output width.
                outputs: match layer.kind {
                    LayerKind::FullyConnected => layer.weight_shape.first().copied().unwrap_or(0),
                    LayerKind::Convolution => layer.output_shape.get(1).copied().unwrap_or(0),
                },
            },
        );
    }
    // Each layer's input and its own output, in one run per batch.
    let mut entries: Vec<Entry> = Vec::new();
    for &i in &chosen {
        let node = &model.graph.nodes[analysis[i].node];
        entries.push(node.inputs[0]);
        entries.push(Entry::new(analysis[i].node));
    }
    let engine = engine(model, options, &entries)?;
    // Every layer's input and output of a batch are alive at once: the batch is capped so they
    // stay within about 256 MB (13 images of 224x224 would hold 1.4 GB in VGG-16).
    let per_image: usize = chosen
        .iter()
        .map(|&i| {
            analysis[i].input_shape.iter().skip(1).product::<usize>()
                + analysis[i].output_shape.iter().skip(1).product::<usize>()
        })
        .sum();
    let batch = options.batch.min((COLLECT_BYTES / (4 * per_image.max(1))).max(1));
    for (start, batch) in batches(data, batch) {
        let values = engine.run_collect(&batch?, &entries)?;
        for (k, &i) in chosen.iter().enumerate() {
            let layer = &analysis[i];
            let (xt, yt) = (&values[2 * k], &values[2 * k + 1]);
            let y_dims = yt.dims().to_vec();
            let record = layers.get_mut(i).expect("chosen layers have records");
            with_values(xt, |x| {
                with_values(yt, |y| match conv_of(model, layer.node) {
                    Some(c) => {
                        let sampler = Sampler::new(i.index(), options.positions, y_dims[2], y_dims[3]);
                        let in_dims = &layer.input_shape;
                        let (ch, h, w) = (in_dims[1], in_dims[2], in_dims[3]);
                        let per_image_in = ch * h * w;
                        let per_image_out = y_dims[1] * y_dims[2] * y_dims[3];
                        let mut rows = Vec::new();
                        for b in 0..y_dims[0] {
                            let image = &x[b * per_image_in..(b + 1) * per_image_in];
                            for (r, col) in sampler.positions(start + b) {
                                for o in 0..y_dims[1] {
                                    record
                                        .targets
                                        .push(y[b * per_image_out + (o * y_dims[2] + r) * y_dims[3] + col]);
                                }
                                if record.moment.is_some() {
                                    for tap in 0..c.kernel[1] {
                                        rows.extend(vertical_patches(image, [ch, h, w], c, r, col, tap));
                                    }
                                }
                            }
                        }
                        if let Some(Moment::Inputs(m)) = &mut record.moment {
                            m.add(&rows);
                        }
                    }
                    None => {
                        // Every row of a dense layer's output is a sample.
                        record.targets.extend_from_slice(y);
                        if let Some(Moment::Responses { moment, bias }) = &mut record.moment {
                            let rows: Vec<f64> = y
                                .chunks(record.outputs)
                                .flat_map(|row| {
                                    row.iter().enumerate().map(|(o, &v)| {
                                        let b = bias.as_ref().map_or(0.0, |b| b[o]);
                                        (v - b) as f64
                                    })
                                })
                                .collect();
                            moment.add(&rows);
                        }
                    }
                })
            })??;
        }
    }
    Ok(Statistics {
        layers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Factorisations for the layers `wanted` selects: response-weighted where statistics allow, the
/// weight SVD otherwise (grouped convolutions, layers whose moment would be too wide). Layers are
/// factorised concurrently, as [`accnn_plan::factorise_layers`] does (the widest eigensolvers one at a
/// time); `progress` hears of each layer
/// as it finishes, on the calling thread.
///
/// Each layer's moment is taken out of `stats` and freed once its layer is factorised (what
/// [`reconstruct`] needs, the sampled responses, stays): VGG-16's fc6 and fc7 hold 134 MB each, and
/// the last layers' eigensolvers would otherwise run beside every finished layer's moment.
pub fn factorise(
    model: &Model,
    analysis: &Analysis,
    stats: &mut Statistics,
    wanted: &LayerSet,
    options: &CalibrateOptions,
    progress: &mut impl FnMut(LayerId, &str),
) -> Result<PerLayer<Factorisation>, CalibrateError> {
    let moments: PerLayer<std::sync::Mutex<Option<Moment>>> = {
        let mut moments = PerLayer::new();
        for i in wanted.iter() {
            if let Some(r) = stats.layers.get_mut(i) {
                moments.insert(i, std::sync::Mutex::new(r.moment.take()));
            }
        }
        moments
    };
    let wide = std::sync::Mutex::new(());
    let one = |i: LayerId| -> Result<Factorisation, CalibrateError> {
        let layer = &analysis[i];
        let moment = moments
            .get(i)
            .and_then(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        let Some(moment) = moment else {
            return Ok(Factorisation::new(model, layer, Default::default())?);
        };
        let weight = layer_weight(model, layer)?;
        let s = &layer.weight_shape;
        let shape = match layer.kind {
            LayerKind::Convolution => accnn_decompose::KernelShape {
                filters: s[0],
                channels: s[1],
                height: s[2],
                width: s[3],
            },
            LayerKind::FullyConnected => accnn_decompose::KernelShape {
                filters: s[0],
                channels: s[1],
                height: 1,
                width: 1,
            },
        };
        // One wide eigensolver at a time: each holds about seven copies of its moment (VGG-16's fc6
        // and fc7, 4096 wide: 0.9 GB apiece), and they would otherwise finish side by side.
        let _wide = (moment_dim(&moment) >= WIDE_MOMENT)
            .then(|| wide.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let svd = match moment {
            Moment::Inputs(m) => WhitenedConvSvd::new(weight.data(), shape, &m, options.ridge),
            Moment::Responses { moment, .. } => {
                WhitenedConvSvd::from_responses(weight.data(), shape, moment, options.ridge)
            }
        };
        let svd = svd.map_err(|e| CalibrateError::Layer {
            layer: layer.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Factorisation::Response { svd, kind: layer.kind })
    };
    accnn_plan::factorise_concurrently(analysis, wanted, one, progress)
}

/// Moment width from which layers' eigensolvers run one at a time.
const WIDE_MOMENT: usize = 2048;

fn moment_dim(moment: &Moment) -> usize {
    match moment {
        Moment::Inputs(m) | Moment::Responses { moment: m, .. } => m.dim(),
    }
}

fn layer_weight<'m>(model: &'m Model, layer: &accnn_plan::Layer) -> Result<&'m Tensor, CalibrateError> {
    let node = &model.graph.nodes[layer.node];
    let name = &model.graph.nodes[node.inputs[1].node].name;
    model.param(name).ok_or_else(|| CalibrateError::Layer {
        layer: layer.name.clone(),
        message: format!("weight '{name}' is missing"),
    })
}
