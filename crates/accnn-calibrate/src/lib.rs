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
//! let stats = collect(&model, &analysis, &data, &wanted, &options)?;
//! let svds = factorise(&model, &analysis, &stats, &wanted, &options)?;
//! let plan = plan_for_ratio(&analysis, &svds, 3.0, Scope::All)?;
//! let fitted = reconstruct(model, &analysis, &svds, &plan, &stats, &data, &options)?;
//! # let _ = fitted; Ok(()) }
//! ```

mod patches;

use std::time::Instant;

use accnn_decompose::{LeastSquares, SecondMoment, WhitenedConvSvd};
use accnn_graph::ir::ConvAttrs;
use accnn_graph::rewrite::{LayerSplit, apply_splits};
use accnn_graph::{Entry, Model, Op, Tensor};
use accnn_infer::data::Dataset;
use accnn_infer::{Engine, EngineOptions};
use accnn_plan::{Analysis, Factorisation, LayerId, LayerKind, LayerSet, PerLayer, RankPlan, Report, plan_report};

use patches::{Sampler, vertical_patches};

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
    /// Dense layers with more inputs than this keep the weight SVD (their input moment would not
    /// fit in memory: VGG-16's fc6 has 25,088 inputs) but still get the least-squares refit.
    pub max_whitened_inputs: usize,
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
            max_whitened_inputs: 4608,
        }
    }
}

/// What the pass over the original network gathered for one layer.
pub struct LayerResponses {
    /// Second moment of the layer's input patches (`None`: the layer keeps the weight SVD).
    moment: Option<SecondMoment>,
    /// Pre-activation outputs at the sampled positions, row by row.
    targets: Vec<f32>,
    outputs: usize,
}

/// Calibration statistics of the layers they were collected for.
pub struct Statistics {
    layers: PerLayer<LayerResponses>,
    pub seconds: f64,
}

fn engine(model: &Model, options: &CalibrateOptions) -> Result<Engine, CalibrateError> {
    Ok(Engine::new(
        model,
        EngineOptions {
            threads: options.threads,
            fuse_activations: false,
            ..Default::default()
        },
    )?)
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
    let engine = engine(model, options)?;
    let chosen: Vec<LayerId> = wanted.iter().collect();
    let mut layers = PerLayer::new();
    for &i in &chosen {
        let layer = &analysis[i];
        let whiten_dim = match (layer.kind, conv_of(model, layer.node)) {
            (LayerKind::Convolution, Some(c)) if c.num_group == 1 => Some(layer.input_shape[1] * c.kernel[0]),
            (LayerKind::FullyConnected, _) => {
                let m = layer.weight_shape.get(1).copied().unwrap_or(0);
                (m <= options.max_whitened_inputs).then_some(m)
            }
            _ => None,
        };
        layers.insert(
            i,
            LayerResponses {
                moment: whiten_dim.map(SecondMoment::new),
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
    for (start, batch) in batches(data, options.batch) {
        let values = engine.run_collect(&batch?, &entries)?;
        for (k, &i) in chosen.iter().enumerate() {
            let layer = &analysis[i];
            let (x, y) = (values[2 * k].flatten_all()?.to_vec1::<f32>()?, &values[2 * k + 1]);
            let y_dims = y.dims().to_vec();
            let y = y.flatten_all()?.to_vec1::<f32>()?;
            let record = layers.get_mut(i).expect("chosen layers have records");
            match conv_of(model, layer.node) {
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
                    if let Some(m) = &mut record.moment {
                        m.add(&rows);
                    }
                }
                None => {
                    // Every row of a dense layer's input is a sample.
                    record.targets.extend_from_slice(&y);
                    if let Some(moment) = &mut record.moment {
                        let rows: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                        moment.add(&rows);
                    }
                }
            }
        }
    }
    Ok(Statistics {
        layers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Factorisations for the layers `wanted` selects: response-weighted where statistics allow, the
/// weight SVD otherwise (grouped convolutions, very wide dense layers).
pub fn factorise(
    model: &Model,
    analysis: &Analysis,
    stats: &Statistics,
    wanted: &LayerSet,
    options: &CalibrateOptions,
) -> Result<PerLayer<Factorisation>, CalibrateError> {
    let mut out = PerLayer::new();
    for i in wanted.iter() {
        let layer = &analysis[i];
        let moment = stats.layers.get(i).and_then(|r| r.moment.as_ref());
        let f = match moment {
            Some(moment) => {
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
                let svd = WhitenedConvSvd::new(weight.data(), shape, moment, options.ridge).map_err(|e| {
                    CalibrateError::Layer {
                        layer: layer.name.clone(),
                        message: e.to_string(),
                    }
                })?;
                Factorisation::Response { svd, kind: layer.kind }
            }
            None => Factorisation::new(model, layer, Default::default())?,
        };
        out.insert(i, f);
    }
    Ok(out)
}

fn layer_weight<'m>(model: &'m Model, layer: &accnn_plan::Layer) -> Result<&'m Tensor, CalibrateError> {
    let node = &model.graph.nodes[layer.node];
    let name = &model.graph.nodes[node.inputs[1].node].name;
    model.param(name).ok_or_else(|| CalibrateError::Layer {
        layer: layer.name.clone(),
        message: format!("weight '{name}' is missing"),
    })
}

/// What reconstruction did to one layer: relative squared response error on the calibration
/// samples (`‖y − ŷ‖² / ‖y‖²`, pre-activation, inputs from the approximated network) with the
/// factors as the SVD gave them and after the least-squares refit.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerFit {
    pub name: String,
    pub width: usize,
    pub error_before: f64,
    pub error_after: f64,
    /// Whether the second half was refitted: it is not when there were fewer than
    /// [`MIN_SAMPLES_PER_FEATURE`] samples per unknown of the regression.
    pub refit: bool,
    pub samples: u64,
    pub features: usize,
}

/// Samples per regression unknown below which a layer keeps its factorisation's second half.
pub const MIN_SAMPLES_PER_FEATURE: u64 = 4;

/// The approximated model, its report, and one [`LayerFit`] per decomposed layer.
pub struct Reconstruction {
    pub model: Model,
    pub report: Report,
    pub fits: Vec<LayerFit>,
    pub seconds: f64,
}

/// Replaces the planned layers one by one in network order, refitting each pair's second half on
/// the approximated network's inputs against the original network's responses.
pub fn reconstruct(
    model: Model,
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    plan: &RankPlan,
    stats: &Statistics,
    data: &Dataset,
    options: &CalibrateOptions,
) -> Result<Reconstruction, CalibrateError> {
    let started = Instant::now();
    let report = plan_report(analysis, svds, plan)?;
    let mut planned = plan.layers.clone();
    planned.sort_by_key(|p| analysis[p.layer].node);
    let mut current = model;
    let mut fits = Vec::new();
    for p in planned {
        let layer = &analysis[p.layer];
        let svd = svds.get(p.layer).ok_or_else(|| CalibrateError::Layer {
            layer: layer.name.clone(),
            message: "no factorisation was computed".into(),
        })?;
        let mut split = svd.split(&current, layer, p.rank)?;
        let groups = conv_of(&current, split.node).map_or(1, |c| c.num_group);
        if let (Some(r), 1) = (stats.layers.get(p.layer), groups) {
            let refit = refit_layer(&current, p.layer.index(), layer, &split, r, data, options)?;
            split.second = refit.second;
            split.bias = refit.bias;
            fits.push(refit.fit);
        }
        current = apply_splits(current, vec![split])?;
    }
    Ok(Reconstruction {
        model: current,
        report,
        fits,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A refitted second half: its weight, its bias (when the layer has one) and how well it fits.
struct Refit {
    second: Tensor,
    bias: Option<Tensor>,
    fit: LayerFit,
}

/// Least-squares refit of one layer's second half (and bias) on the current network's inputs.
fn refit_layer(
    current: &Model,
    index: usize,
    layer: &accnn_plan::Layer,
    split: &LayerSplit,
    responses: &LayerResponses,
    data: &Dataset,
    options: &CalibrateOptions,
) -> Result<Refit, CalibrateError> {
    let node = split.node;
    let engine = engine(current, options)?;
    let input = current.graph.nodes[node].inputs[0];
    let bias_name = current.graph.nodes[node]
        .inputs
        .get(2)
        .map(|e| current.graph.nodes[e.node].name.clone());
    let old_bias: Option<Vec<f32>> = bias_name
        .as_ref()
        .and_then(|n| current.param(n))
        .map(|t| t.data().to_vec());
    let has_bias = old_bias.is_some();
    let n_out = responses.outputs;
    let (first, second) = (&split.first, &split.second);
    let rank = first.shape()[0];
    let first_len = first.len() / rank;
    // The first half as a `d x K` matrix: one product turns a block of input patches into the
    // vertical responses the second half reads.
    let first_t = faer::Mat::<f64>::from_fn(first_len, rank, |i, k| first.data()[k * first_len + i] as f64);
    let conv = conv_of(current, node).cloned();
    let taps = conv.as_ref().map_or(1, |c| c.kernel[1]);
    let features = rank * taps + usize::from(has_bias);
    let mut ls = LeastSquares::new(features, n_out);
    let mut row = 0usize;
    for (start, batch) in batches(data, options.batch) {
        let x = engine.run_collect(&batch?, &[input])?.remove(0);
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let mut feats: Vec<f64> = Vec::new();
        let mut targets: Vec<f64> = Vec::new();
        let push_row = |z: &[f64], feats: &mut Vec<f64>| {
            feats.extend_from_slice(z);
            if has_bias {
                feats.push(1.0);
            }
        };
        match &conv {
            Some(c) => {
                let s = &layer.input_shape;
                let (ch, h, w) = (s[1], s[2], s[3]);
                let per_image = ch * h * w;
                let images = x.len() / per_image;
                let (ho, wo) = (layer.output_shape[2], layer.output_shape[3]);
                let sampler = Sampler::new(index, options.positions, ho, wo);
                let mut patches: Vec<f64> = Vec::new();
                for b in 0..images {
                    let image = &x[b * per_image..(b + 1) * per_image];
                    for (r, col) in sampler.positions(start + b) {
                        for tap in 0..taps {
                            patches.extend(vertical_patches(image, [ch, h, w], c, r, col, tap));
                        }
                        targets.extend(
                            responses.targets[row * n_out..(row + 1) * n_out]
                                .iter()
                                .map(|&t| t as f64),
                        );
                        row += 1;
                    }
                }
                let samples = patches.len() / (first_len * taps);
                let p = faer::MatRef::from_row_major_slice(&patches, samples * taps, first_len);
                let z = p * first_t.as_ref();
                for s in 0..samples {
                    // Features ordered (k, tap).
                    let f: Vec<f64> = (0..rank * taps).map(|i| z[(s * taps + i % taps, i / taps)]).collect();
                    push_row(&f, &mut feats);
                }
            }
            None => {
                for r in x.chunks(first_len) {
                    let z: Vec<f64> = (0..rank)
                        .map(|k| {
                            let v = &first.data()[k * first_len..(k + 1) * first_len];
                            v.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
                        })
                        .collect();
                    push_row(&z, &mut feats);
                    targets.extend(
                        responses.targets[row * n_out..(row + 1) * n_out]
                            .iter()
                            .map(|&t| t as f64),
                    );
                    row += 1;
                }
            }
        }
        ls.add(&feats, &targets);
    }
    // The SVD's own second half in the same feature layout, to report the error it leaves.
    let svd_b = faer::Mat::<f64>::from_fn(features, n_out, |f, n| {
        if f < rank * taps {
            let (k, tap) = (f / taps, f % taps);
            second.data()[(n * rank + k) * taps + tap] as f64
        } else {
            old_bias.as_ref().map_or(0.0, |b| b[n] as f64)
        }
    });
    let energy = ls.target_energy().max(f64::MIN_POSITIVE);
    let error_before = ls.residual(&svd_b) / energy;
    // With too few samples per unknown the regression would fit the calibration set, not the layer:
    // the factorisation's own second half is kept.
    let samples = ls.count();
    if samples < MIN_SAMPLES_PER_FEATURE * features as u64 {
        let fit = LayerFit {
            name: layer.name.clone(),
            width: rank,
            error_before,
            error_after: error_before,
            refit: false,
            samples,
            features,
        };
        return Ok(Refit {
            second: second.clone(),
            bias: None,
            fit,
        });
    }
    let fitted = ls.solve(options.ridge * 1e-3).map_err(|e| CalibrateError::Layer {
        layer: layer.name.clone(),
        message: e.to_string(),
    })?;
    let fit = LayerFit {
        name: layer.name.clone(),
        width: rank,
        error_before,
        error_after: ls.residual(&fitted) / energy,
        refit: true,
        samples,
        features,
    };
    let mut data_h = vec![0f32; second.len()];
    for n in 0..n_out {
        for k in 0..rank {
            for tap in 0..taps {
                data_h[(n * rank + k) * taps + tap] = fitted[(k * taps + tap, n)] as f32;
            }
        }
    }
    let horizontal = Tensor::new(second.shape().to_vec(), data_h)?;
    let bias = if has_bias {
        Some(Tensor::new(
            vec![n_out],
            (0..n_out).map(|n| fitted[(rank * taps, n)] as f32).collect(),
        )?)
    } else {
        None
    };
    Ok(Refit {
        second: horizontal,
        bias,
        fit,
    })
}
