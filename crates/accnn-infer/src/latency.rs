//! Measured latency of single layers, whole and decomposed: the cost model of hardware-aware rank
//! selection. FLOPs are not time: a decomposed pair at a rank that GEMM kernels handle badly can be
//! slower than the layer it replaces.
//!
//! [`time_layer`] times one layer whole or as its decomposed pair at a rank; [`model_seconds`] a whole
//! model. The `accnn` crate's latency planner builds its cost tables from these.

use std::time::Instant;

use accnn_graph::ir::{ConvAttrs, FcAttrs};
use accnn_graph::rewrite::{horizontal_conv, vertical_conv};
use accnn_graph::{Model, ModelBuilder, Op, Tensor as Weights};
use candle_core::{DType, Device, Tensor};

use crate::{Engine, EngineOptions, InferError};

/// A layer to time: a convolution on `input` (`C, H, W`) or a dense layer of `inputs` features.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    Conv { attrs: ConvAttrs, input: [usize; 3] },
    Dense { inputs: usize, outputs: usize },
}

impl LayerSpec {
    /// Layers that cover what a timing model must get right: a plain 3x3 convolution, a strided,
    /// dilated, grouped, unevenly padded non-square one, and a dense layer (for tests and checks).
    pub fn samples() -> Vec<LayerSpec> {
        let odd = ConvAttrs {
            kernel: [3, 5],
            stride: [2, 1],
            dilate: [1, 2],
            pad: accnn_graph::ir::Padding2d {
                top: 1,
                bottom: 0,
                left: 4,
                right: 3,
            },
            num_filter: 12,
            num_group: 2,
            no_bias: true,
        };
        vec![
            LayerSpec::Conv {
                attrs: ConvAttrs::same([3, 3], 16),
                input: [8, 10, 9],
            },
            LayerSpec::Conv {
                attrs: odd,
                input: [6, 11, 13],
            },
            LayerSpec::Dense {
                inputs: 40,
                outputs: 24,
            },
        ]
    }

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

/// A model of `layers` applied in sequence to one input, with small fixed weights.
fn chain(layers: Vec<(Op, Vec<usize>)>) -> Model {
    let mut b = ModelBuilder::new();
    let mut x = b.input("data");
    for (i, (op, shape)) in layers.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|i| ((i * 7919 % 97) as f32 - 48.0) * 1e-3).collect();
        let w = b.weight(&format!("w{i}"), Weights::new(shape, data).expect("shape matches"));
        x = b.node(&format!("l{i}"), op, &[x, w]);
    }
    b.build(&[x]).expect("a chain is a valid graph")
}

/// The layer itself (`rank: None`) or its decomposed pair at `rank` per group, as a model of its own
/// with small fixed weights (what [`time_layer`] times; `accnn_graph::onnx::encode_standalone` writes it for
/// other runtimes).
pub fn layer_model(spec: &LayerSpec, rank: Option<usize>) -> Model {
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
    typical_run_seconds(|| engine.forward(input).map(drop), rounds)
}

/// [`typical_seconds`] of any `run` (another runtime's session).
pub fn typical_run_seconds<E>(mut run: impl FnMut() -> Result<(), E>, rounds: usize) -> Result<f64, E> {
    run()?;
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < rounds.max(1) || (started.elapsed().as_secs_f64() < 0.05 && times.len() < 1000) {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(crate::timing::Latency { samples: times }.iqr().0)
}

/// The input [`time_layer`] runs `spec` on at `batch`: its shape, batch first.
pub fn layer_input_shape(spec: &LayerSpec, batch: usize) -> Vec<usize> {
    match spec {
        LayerSpec::Conv { input, .. } => vec![batch, input[0], input[1], input[2]],
        LayerSpec::Dense { inputs, .. } => vec![batch, *inputs],
    }
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
    let x = Tensor::ones(layer_input_shape(spec, batch), DType::F32, &Device::Cpu)?;
    typical_seconds(&engine, &x, rounds)
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

/// The least number of timed runs of a layer or a model (see [`typical_seconds`]).
pub const ROUNDS: usize = 5;
