//! Measured latency of single layers, whole and decomposed: the cost model of hardware-aware rank
//! selection. FLOPs are not time: a decomposed pair at a rank that GEMM kernels handle badly can be
//! slower than the layer it replaces.
//!
//! [`latency_plan`] times every budgeted layer whole and at up to 16 ranks (through a JSON cache keyed
//! by device, dtype, batch, threads and layer shape) and maximises the kept energy under
//! `measured model latency / ratio`, predicting the new model's latency.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use accnn::{Analysis, Factorisation, LayerCosts, LayerKind, RankPlan, Scope};
use accnn_graph::ir::{ConvAttrs, FcAttrs};
use accnn_graph::rewrite::{horizontal_conv, vertical_conv};
use accnn_graph::{Entry, Model, Node, Op, Tensor as Weights};
use candle_core::{DType, Device, Tensor};

use crate::{Engine, EngineOptions, InferError};

/// A layer to time: a convolution on `input` (`C, H, W`) or a dense layer of `inputs` features.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    Conv { attrs: ConvAttrs, input: [usize; 3] },
    Dense { inputs: usize, outputs: usize },
}

impl LayerSpec {
    /// A stable text key of the layer's shape and attributes, for caches.
    pub fn key(&self) -> String {
        match self {
            LayerSpec::Conv { attrs: a, input } => format!(
                "conv c{}x{}x{} n{} k{}x{} s{}x{} d{}x{} p{},{},{},{} g{}",
                input[0],
                input[1],
                input[2],
                a.num_filter,
                a.kernel[0],
                a.kernel[1],
                a.stride[0],
                a.stride[1],
                a.dilate[0],
                a.dilate[1],
                a.pad.top,
                a.pad.left,
                a.pad.bottom,
                a.pad.right,
                a.num_group
            ),
            LayerSpec::Dense { inputs, outputs } => format!("dense {inputs}x{outputs}"),
        }
    }
}

/// A model of `layers` applied in sequence to one input, with small random weights.
fn chain(layers: Vec<(Op, Vec<usize>)>) -> Model {
    let mut model = Model::default();
    let mut push = |name: String, op: Op, inputs: Vec<usize>| {
        model.graph.nodes.push(Node {
            name,
            op,
            inputs: inputs.into_iter().map(Entry::new).collect(),
            attrs: Default::default(),
        });
        model.graph.nodes.len() - 1
    };
    let mut x = push("data".into(), Op::Variable, vec![]);
    let mut weights = Vec::new();
    for (i, (op, shape)) in layers.into_iter().enumerate() {
        let w = push(format!("w{i}"), Op::Variable, vec![]);
        weights.push((format!("w{i}"), shape));
        x = push(format!("l{i}"), op, vec![x, w]);
    }
    model.graph.heads = vec![Entry::new(x)];
    for (name, shape) in weights {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|i| ((i * 7919 % 97) as f32 - 48.0) * 1e-3).collect();
        model
            .args
            .insert(name, Weights::new(shape, data).expect("shape matches"));
    }
    model
}

/// The layer itself (`rank: None`) or its decomposed pair at `rank` per group.
fn layer_model(spec: &LayerSpec, rank: Option<usize>) -> Model {
    match spec {
        LayerSpec::Conv { attrs, input } => {
            let c = ConvAttrs {
                no_bias: true,
                ..attrs.clone()
            };
            let g = c.num_group;
            let layers = match rank {
                None => vec![(
                    Op::Convolution(c.clone()),
                    vec![c.num_filter, input[0] / g, c.kernel[0], c.kernel[1]],
                )],
                Some(k) => {
                    let v = vertical_conv(&c, k * g);
                    let mut h = horizontal_conv(&c);
                    h.no_bias = true;
                    vec![
                        (Op::Convolution(v), vec![k * g, input[0] / g, c.kernel[0], 1]),
                        (Op::Convolution(h), vec![c.num_filter, k, 1, c.kernel[1]]),
                    ]
                }
            };
            chain(layers)
        }
        LayerSpec::Dense { inputs, outputs } => {
            let fc = |n: usize| {
                Op::FullyConnected(FcAttrs {
                    num_hidden: n,
                    no_bias: true,
                    flatten: true,
                })
            };
            let layers = match rank {
                None => vec![(fc(*outputs), vec![*outputs, *inputs])],
                Some(k) => vec![(fc(k), vec![k, *inputs]), (fc(*outputs), vec![*outputs, k])],
            };
            chain(layers)
        }
    }
}

/// Typical wall time of one run of `engine` on `input`: after a warm-up run, at least `rounds` runs
/// and at least 50 ms of them (small layers take many), and the first quartile of those times, which
/// other work on a shared machine disturbs less than the median.
pub fn typical_seconds(engine: &Engine, input: &Tensor, rounds: usize) -> Result<f64, InferError> {
    let input = &engine.prepare(input)?;
    engine.forward(input)?;
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < rounds.max(1) || (started.elapsed().as_secs_f64() < 0.05 && times.len() < 1000) {
        let t = Instant::now();
        engine.forward(input)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(crate::timing::Latency { samples: times }.iqr().0)
}

/// Seconds one run of `spec` takes at `batch`, whole (`rank: None`) or decomposed at `rank` per group.
pub fn time_layer(
    spec: &LayerSpec,
    rank: Option<usize>,
    batch: usize,
    options: EngineOptions,
    rounds: usize,
) -> Result<f64, InferError> {
    let model = layer_model(spec, rank);
    let engine = Engine::new(&model, options)?;
    let shape: Vec<usize> = match spec {
        LayerSpec::Conv { input, .. } => vec![batch, input[0], input[1], input[2]],
        LayerSpec::Dense { inputs, .. } => vec![batch, *inputs],
    };
    let x = Tensor::ones(shape, DType::F32, &Device::Cpu)?;
    typical_seconds(&engine, &x, rounds)
}

/// At most this many ranks are timed per layer.
const PROBES_PER_LAYER: usize = 16;
const ROUNDS: usize = 5;

struct Cache {
    path: Option<PathBuf>,
    entries: BTreeMap<String, f64>,
    dirty: bool,
}

impl Cache {
    fn open(path: Option<PathBuf>) -> Self {
        let entries = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Cache {
            path,
            entries,
            dirty: false,
        }
    }

    fn get_or(&mut self, key: String, measure: impl FnOnce() -> Result<f64, InferError>) -> Result<f64, InferError> {
        if let Some(v) = self.entries.get(&key) {
            return Ok(*v);
        }
        let v = measure()?;
        self.entries.insert(key, v);
        self.dirty = true;
        Ok(v)
    }

    fn save(&self) -> Result<(), InferError> {
        let (Some(path), true) = (&self.path, self.dirty) else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| InferError::Data {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let text = serde_json::to_vec_pretty(&self.entries).map_err(|e| InferError::Plan(e.to_string()))?;
        accnn_graph::io::write_files_atomically(&[(path.as_path(), &text)])?;
        Ok(())
    }
}

fn layer_spec(model: &Model, analysis: &Analysis, i: usize) -> Option<LayerSpec> {
    let layer = &analysis.layers[i];
    match (&model.graph.nodes[layer.node].op, layer.kind) {
        (Op::Convolution(c), LayerKind::Convolution) => {
            let s = &layer.input_shape;
            Some(LayerSpec::Conv {
                attrs: c.clone(),
                input: [s[1], s[2], s[3]],
            })
        }
        (Op::FullyConnected(_), LayerKind::FullyConnected) => Some(LayerSpec::Dense {
            inputs: layer.weight_shape[1],
            outputs: layer.weight_shape[0],
        }),
        _ => None,
    }
}

/// Ranks to time: multiples of the alignment (per group), at most [`PROBES_PER_LAYER`] of them, all
/// with fewer MACs than the whole layer.
fn probe_ranks(layer: &accnn::Layer, align: usize) -> Vec<usize> {
    let unit = if align.is_multiple_of(layer.groups) {
        (align / layer.groups).max(1)
    } else {
        align.max(1)
    };
    let useful = (1..=layer.max_rank)
        .take_while(|&k| layer.macs_at(Some(k)) < layer.macs)
        .last()
        .unwrap_or(0);
    let steps = useful / unit;
    if steps == 0 {
        return Vec::new();
    }
    let stride = steps.div_ceil(PROBES_PER_LAYER) * unit;
    (1..).map(|j| j * stride).take_while(|&k| k <= useful).collect()
}

/// Whole-model latency of `model` at `batch` (see [`typical_seconds`]).
pub fn model_seconds(
    model: &Model,
    data_shape: &[usize],
    batch: usize,
    options: EngineOptions,
) -> Result<f64, InferError> {
    let engine = Engine::new(model, options)?;
    let mut shape = data_shape.to_vec();
    shape[0] = batch;
    let x = Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?;
    typical_seconds(&engine, &x, ROUNDS)
}

/// The latency plan and its prediction of the new model's latency.
#[derive(Clone, Debug)]
pub struct LatencyPlan {
    pub plan: RankPlan,
    pub original_seconds: f64,
    pub predicted_seconds: f64,
}

/// Times every budgeted layer whole and at its probe ranks (through the cache), then maximises the
/// kept energy under `original latency / ratio`.
#[allow(clippy::too_many_arguments)]
pub fn latency_plan(
    model: &Model,
    analysis: &Analysis,
    svds: &[Option<Factorisation>],
    ratio: f64,
    scope: Scope,
    align: usize,
    batch: usize,
    options: EngineOptions,
    cache: Option<&Path>,
) -> Result<LatencyPlan, InferError> {
    if batch == 0 {
        return Err(InferError::Plan("the batch size must be positive".into()));
    }
    let mut cache = Cache::open(cache.map(Path::to_path_buf));
    // Timings belong to the device, precision and kernels that made them: a new kernel generation
    // starts a new table.
    let prefix = format!(
        "{}|{}|{}|batch{batch}|threads{}",
        options.target,
        options.kernels(),
        options.dtype.as_str(),
        options.workers()
    );
    let original = model_seconds(model, &analysis.data_shape, batch, options)?;
    let ns = |s: f64| (s * 1e9).round() as u64;
    let mut costs: Vec<Option<LayerCosts>> = vec![None; analysis.layers.len()];
    let mut whole_total = 0.0;
    for (i, layer) in analysis.layers.iter().enumerate() {
        if !scope.includes(layer.kind) || svds.get(i).and_then(Option::as_ref).is_none() {
            continue;
        }
        let Some(spec) = layer_spec(model, analysis, i) else {
            continue;
        };
        let key = spec.key();
        let whole = cache.get_or(format!("{prefix}|{key}|whole"), || {
            time_layer(&spec, None, batch, options, ROUNDS)
        })?;
        let mut ranks = Vec::new();
        for k in probe_ranks(layer, align) {
            let t = cache.get_or(format!("{prefix}|{key}|rank{k}"), || {
                time_layer(&spec, Some(k), batch, options, ROUNDS)
            })?;
            ranks.push((k, ns(t)));
        }
        whole_total += whole;
        costs[i] = Some(LayerCosts {
            whole: ns(whole),
            ranks,
        });
    }
    cache.save()?;
    // What the budgeted layers do not cover (pooling, activations, unbudgeted layers) stays as it is.
    let fixed = (original - whole_total).max(0.0);
    let target = original / ratio;
    if target <= fixed {
        return Err(InferError::Plan(format!(
            "latency ratio {ratio}: the parts of the model that are not decomposed already take {:.2} ms of the {:.2} ms allowed",
            fixed * 1e3,
            target * 1e3
        )));
    }
    let (plan, layers_ns) = accnn::plan_for_costs(analysis, svds, &costs, ns(target - fixed))?;
    Ok(LatencyPlan {
        plan,
        original_seconds: original,
        predicted_seconds: fixed + layers_ns as f64 * 1e-9,
    })
}
