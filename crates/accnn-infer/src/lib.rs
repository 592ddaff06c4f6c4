//! Runs an accnn [`Model`] with [candle-core](candle_core).
//!
//! Convolutions, fully-connected layers and pooling run on accnn's own CPU kernels (candle custom
//! ops). A convolution runs on an AVX-512 register-blocked micro-kernel where the CPU has one
//! (strided ones through phase planes of the input), else as GEMMs over shifted views of the padded
//! input (im2col when strided); either way the `(kh, 1)` and `(1, kw)` halves of a decomposed layer
//! cost what their FLOPs say rather than an im2col copy each (candle's own `conv2d` also takes one
//! padding, stride and dilation for both axes, which the halves cannot use). A dense layer at batch
//! sizes up to 4 streams its weights once across the workers (it is bound by reading them). Pooling
//! windows are reduced separably. Everything else is candle.
//!
//! On CUDA (cargo feature `cuda`), and in bf16 or f16 anywhere, every layer runs as candle tensor
//! ops instead ([`EngineOptions::candle_ops`] asks for that path on the CPU in f32 too, where it is
//! tested against the reference interpreter like the CPU kernels).
//!
//! ```
//! # fn main() -> Result<(), accnn_infer::InferError> {
//! # let model = accnn_infer::doc_model();
//! use accnn_infer::{Engine, EngineOptions};
//! let engine = Engine::new(&model, EngineOptions::default())?;
//! let input = candle_core::Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let outputs = engine.run(&input)?;
//! assert_eq!(outputs[0].dims(), &[2, 4]);
//! # Ok(()) }
//! ```

mod conv;
pub mod data;
mod dense;
pub mod eval;
pub mod latency;
mod layers;
mod options;
mod pool;
pub mod timing;

use std::sync::Arc;

use accnn_graph::ir::{Activation, BatchNormAttrs};
use accnn_graph::{Entry, GraphError, Model, Op};
use candle_core::{CustomOp1, DType, Device, Tensor};

pub use options::{EngineOptions, Target, cpu_kernels, parse_dtype};

use conv::ConvKernel;
use dense::DenseKernel;
use pool::PoolKernel;

/// Why a model could not be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("node '{node}': {message}")]
    Node { node: String, message: String },
    #[error("{path}: {message}")]
    Data { path: std::path::PathBuf, message: String },
    #[error("cannot start the thread pool: {0}")]
    Threads(String),
    #[error("{0}")]
    Plan(String),
    #[error("{0}")]
    Unsupported(String),
}

enum Step {
    /// The data input.
    Input,
    /// A stored value used directly as an operand (not as a layer's weight).
    Value(Tensor),
    /// A weight consumed by its layer at build time.
    Weight,
    /// A convolution or pooling kernel (candle custom op, shared between runs).
    Kernel(Arc<Box<dyn CustomOp1 + Send + Sync>>),
    /// The same as candle tensor ops.
    Conv(layers::Conv),
    Pool(layers::Pool),
    Dense {
        kernel: DenseLayer,
        outputs: usize,
        flatten: bool,
    },
    Activation(Activation),
    /// `x * scale + shift` per channel (BatchNorm at inference).
    Affine {
        scale: Tensor,
        shift: Tensor,
    },
    Flatten,
    Identity,
    Add,
    Mul,
    Concat(usize),
    Softmax(i64),
    Reshape(Vec<i64>),
}

enum DenseLayer {
    Kernel(Arc<Box<dyn CustomOp1 + Send + Sync>>),
    Ops(layers::Dense),
}

/// A model prepared for inference: weights re-laid out for the kernels, execution order fixed.
pub struct Engine {
    device: Device,
    dtype: DType,
    steps: Vec<(String, Step, Vec<Entry>)>,
    heads: Vec<Entry>,
    /// Index of the last step reading each node's outputs, to free them early.
    last_use: Vec<usize>,
    pool: rayon::ThreadPool,
}

fn param(model: &Model, node: &accnn_graph::Node, k: usize, what: &str) -> Result<Vec<f32>, InferError> {
    let var = node.inputs.get(k).map(|e| &model.graph.nodes[e.node].name);
    var.and_then(|v| model.param(v))
        .map(|t| t.data().to_vec())
        .ok_or_else(|| InferError::Node {
            node: node.name.clone(),
            message: format!("{what} is missing"),
        })
}

fn input_channels(model: &Model, node: &accnn_graph::Node) -> Result<usize, InferError> {
    let w = &model.graph.nodes[node.inputs[1].node].name;
    let t = model.param(w).ok_or_else(|| InferError::Node {
        node: node.name.clone(),
        message: "weight is missing".into(),
    })?;
    let Op::Convolution(c) = &node.op else {
        unreachable!("only called on convolutions")
    };
    Ok(t.shape()[1] * c.num_group)
}

impl Engine {
    /// Prepares `model` for inference on `options.target` in `options.dtype`.
    pub fn new(model: &Model, options: EngineOptions) -> Result<Self, InferError> {
        let graph = &model.graph;
        let data = model.data_input()?;
        let device = options.target.device()?;
        let dtype = options.dtype;
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(InferError::Unsupported(format!(
                "the engine runs in f32, bf16 or f16, not {dtype:?}"
            )));
        }
        if dtype == DType::BF16 && device.is_cpu() {
            return Err(InferError::Unsupported(
                "bf16 runs on CUDA only (candle's CPU matrix product has no bf16); use f16 or f32 on the CPU".into(),
            ));
        }
        let ops = options.uses_candle_ops();
        let threads = options.workers();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| InferError::Threads(e.to_string()))?;
        // Variables feeding layers as weights are folded into the layers.
        let mut weight_use = vec![false; graph.nodes.len()];
        for node in &graph.nodes {
            let n_weights = match node.op {
                Op::Convolution(_) | Op::FullyConnected(_) => 2,
                Op::BatchNorm(_) => 4,
                Op::SoftmaxOutput => 1,
                _ => 0,
            };
            for e in node.inputs.iter().skip(1).take(n_weights) {
                weight_use[e.node] = true;
            }
        }
        // A ReLU that is a convolution's only consumer is applied inside the convolution.
        let uses = graph.use_counts();
        let mut fused_relu = vec![false; graph.nodes.len()];
        for node in &graph.nodes {
            if let (Op::Activation(Activation::Relu), Some(e)) = (&node.op, node.inputs.first())
                && options.fuse_activations
                && matches!(graph.nodes[e.node].op, Op::Convolution(_))
                && uses[e.node] == 1
            {
                fused_relu[e.node] = true;
            }
        }
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for (i, node) in graph.nodes.iter().enumerate() {
            let vector = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &device)?.to_dtype(dtype);
            let step = match &node.op {
                Op::Variable if i == data => Step::Input,
                Op::Variable if weight_use[i] => Step::Weight,
                Op::Variable => match model.param(&node.name) {
                    Some(t) => Step::Value(vector(t.data().to_vec(), t.shape())?),
                    None => Step::Weight, // an unused label
                },
                Op::Convolution(c) => {
                    let weight = param(model, node, 1, "weight")?;
                    let bias = if c.no_bias {
                        None
                    } else {
                        Some(param(model, node, 2, "bias")?)
                    };
                    let channels = input_channels(model, node)?;
                    if ops {
                        let mut conv = layers::Conv::new(c, channels, weight, bias, &device, dtype)?;
                        conv.relu = fused_relu[i];
                        Step::Conv(conv)
                    } else {
                        let mut kernel =
                            ConvKernel::new(c.clone(), channels, &weight, bias, threads, !options.portable_kernels);
                        kernel.relu = fused_relu[i];
                        Step::Kernel(Arc::new(Box::new(kernel)))
                    }
                }
                Op::FullyConnected(f) => {
                    let weight = param(model, node, 1, "weight")?;
                    let bias = if f.no_bias {
                        None
                    } else {
                        Some(param(model, node, 2, "bias")?)
                    };
                    let kernel = if ops {
                        DenseLayer::Ops(layers::Dense::new(weight, bias, f.num_hidden, &device, dtype)?)
                    } else {
                        DenseLayer::Kernel(Arc::new(Box::new(DenseKernel::new(
                            weight,
                            bias,
                            f.num_hidden,
                            threads,
                        ))))
                    };
                    Step::Dense {
                        kernel,
                        outputs: f.num_hidden,
                        flatten: f.flatten,
                    }
                }
                Op::Activation(_) if node.inputs.first().is_some_and(|e| fused_relu[e.node]) => Step::Identity,
                Op::Activation(a) => Step::Activation(*a),
                Op::Pooling(p) if ops => Step::Pool(layers::Pool::new(p.clone())),
                Op::Pooling(p) => Step::Kernel(Arc::new(Box::new(PoolKernel { attrs: p.clone() }))),
                Op::BatchNorm(BatchNormAttrs { eps, fix_gamma, .. }) => {
                    let (gamma, beta) = (param(model, node, 1, "gamma")?, param(model, node, 2, "beta")?);
                    let (mean, var) = (
                        param(model, node, 3, "moving mean")?,
                        param(model, node, 4, "moving variance")?,
                    );
                    let c = mean.len();
                    let scale: Vec<f32> = (0..c)
                        .map(|k| (if *fix_gamma { 1.0 } else { gamma[k] as f64 } / (var[k] as f64 + eps).sqrt()) as f32)
                        .collect();
                    let shift: Vec<f32> = (0..c).map(|k| beta[k] - mean[k] * scale[k]).collect();
                    Step::Affine {
                        scale: vector(scale, &[1, c, 1, 1])?,
                        shift: vector(shift, &[1, c, 1, 1])?,
                    }
                }
                Op::Flatten => Step::Flatten,
                Op::Dropout => Step::Identity,
                Op::Add { .. } => Step::Add,
                Op::Mul => Step::Mul,
                Op::Identity => Step::Identity,
                Op::Opaque { op_type, .. } => {
                    return Err(InferError::Node {
                        node: node.name.clone(),
                        message: format!("accnn's engine cannot run the operator '{op_type}'"),
                    });
                }
                Op::Concat { axis } => Step::Concat(*axis),
                Op::Softmax { axis } => Step::Softmax(*axis),
                Op::SoftmaxOutput => Step::Softmax(1),
                Op::Reshape { shape } => Step::Reshape(shape.clone()),
            };
            steps.push((node.name.clone(), step, node.inputs.clone()));
        }
        let mut last_use = vec![0usize; graph.nodes.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            for e in &node.inputs {
                last_use[e.node] = i;
            }
        }
        for h in &graph.heads {
            last_use[h.node] = usize::MAX;
        }
        Ok(Engine {
            device,
            dtype,
            steps,
            heads: graph.heads.clone(),
            last_use,
            pool,
        })
    }

    /// Runs the model on a batch `(N, C, H, W)` and returns the values of its outputs, as f32 on
    /// the CPU wherever the model ran.
    ///
    /// With the environment variable `ACCNN_PROFILE` set, each node's wall time is printed to stderr.
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, InferError> {
        self.run_collect(input, &self.heads)
    }

    /// Runs the model only as far as needed to compute the `wanted` outputs, and returns them (f32,
    /// on the CPU).
    pub fn run_collect(&self, input: &Tensor, wanted: &[Entry]) -> Result<Vec<Tensor>, InferError> {
        if let Some(e) = wanted.iter().find(|e| e.node >= self.steps.len()) {
            return Err(InferError::Node {
                node: format!("#{}", e.node),
                message: "no such node".into(),
            });
        }
        let input = self.prepare(input)?;
        let outputs = self.pool.install(|| self.run_inner(&input, wanted))?;
        Ok(outputs
            .into_iter()
            .map(|t| t.to_dtype(DType::F32)?.to_device(&Device::Cpu))
            .collect::<Result<_, _>>()?)
    }

    /// `input` on the engine's device, in its dtype, contiguous: what [`Engine::forward`] takes.
    pub fn prepare(&self, input: &Tensor) -> Result<Tensor, InferError> {
        Ok(input.to_device(&self.device)?.to_dtype(self.dtype)?.contiguous()?)
    }

    /// Runs the model on an input already [prepared](Engine::prepare) and waits until the device
    /// has finished: outputs stay on the device, in the engine's dtype. This is what timings
    /// measure (no copies to or from a GPU).
    pub fn forward(&self, input: &Tensor) -> Result<Vec<Tensor>, InferError> {
        let outputs = self.pool.install(|| self.run_inner(input, &self.heads))?;
        self.device.synchronize()?;
        Ok(outputs)
    }

    fn run_inner(&self, input: &Tensor, wanted: &[Entry]) -> Result<Vec<Tensor>, InferError> {
        let mut values: Vec<Option<Tensor>> = vec![None; self.steps.len()];
        let profile = std::env::var_os("ACCNN_PROFILE").is_some();
        let last = wanted.iter().map(|e| e.node).max().unwrap_or(0);
        let keep: std::collections::HashSet<usize> = wanted.iter().map(|e| e.node).collect();
        for (i, (name, step, inputs)) in self.steps.iter().enumerate().take(last + 1) {
            let started = std::time::Instant::now();
            let arg = |k: usize| -> Result<&Tensor, InferError> {
                inputs
                    .get(k)
                    .and_then(|e| values[e.node].as_ref())
                    .ok_or_else(|| InferError::Node {
                        node: name.clone(),
                        message: format!("input #{k} has no value"),
                    })
            };
            let wrap = |e: candle_core::Error| InferError::Node {
                node: name.clone(),
                message: e.to_string(),
            };
            let value = match step {
                Step::Input => Some(input.clone()),
                Step::Value(t) => Some(t.clone()),
                Step::Weight => None,
                Step::Kernel(k) => Some(arg(0)?.contiguous()?.apply_op1_arc(k.clone()).map_err(wrap)?),
                Step::Conv(conv) => Some(conv.forward(arg(0)?).map_err(wrap)?),
                Step::Pool(pool) => Some(pool.forward(&arg(0)?.contiguous()?).map_err(wrap)?),
                Step::Dense {
                    kernel,
                    outputs,
                    flatten,
                } => {
                    let x = arg(0)?;
                    let x2 = if *flatten {
                        x.flatten_from(1)?
                    } else {
                        let last = *x.dims().last().unwrap_or(&1);
                        x.reshape(((), last))?
                    };
                    let x2 = x2.contiguous()?;
                    let mut y = match kernel {
                        DenseLayer::Kernel(k) => x2.apply_op1_arc(k.clone()),
                        DenseLayer::Ops(dense) => dense.forward(&x2),
                    }
                    .map_err(wrap)?;
                    if !*flatten {
                        let mut dims = x.dims().to_vec();
                        *dims.last_mut().unwrap_or(&mut 0) = *outputs;
                        y = y.reshape(dims)?;
                    }
                    Some(y)
                }
                Step::Activation(a) => {
                    let x = arg(0)?;
                    Some(match a {
                        Activation::Relu => x.relu()?,
                        Activation::Tanh => x.tanh()?,
                        Activation::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip()?,
                        Activation::SoftRelu => (x.exp()? + 1.0)?.log()?,
                        Activation::SoftSign => (x / (x.abs()? + 1.0)?)?,
                        Activation::LeakyRelu { slope } => (x.relu()? - (x.neg()?.relu()? * *slope as f64)?)?,
                        Activation::Clip { min, max } => x.clamp(*min, *max)?,
                    })
                }
                Step::Affine { scale, shift } => Some(arg(0)?.broadcast_mul(scale)?.broadcast_add(shift)?),
                Step::Flatten => Some(arg(0)?.flatten_from(1)?),
                Step::Identity => Some(arg(0)?.clone()),
                Step::Add => Some(arg(0)?.broadcast_add(arg(1)?).map_err(wrap)?),
                Step::Mul => Some(arg(0)?.broadcast_mul(arg(1)?).map_err(wrap)?),
                Step::Concat(axis) => {
                    let parts: Vec<&Tensor> = (0..inputs.len()).map(arg).collect::<Result<_, _>>()?;
                    Some(Tensor::cat(&parts, *axis).map_err(wrap)?)
                }
                Step::Softmax(axis) => {
                    let x = arg(0)?;
                    let rank = x.rank() as i64;
                    let ax = if *axis < 0 { rank + axis } else { *axis } as usize;
                    let e = x.broadcast_sub(&x.max_keepdim(ax)?)?.exp()?;
                    Some(e.broadcast_div(&e.sum_keepdim(ax)?)?)
                }
                Step::Reshape(codes) => {
                    let x = arg(0)?;
                    let dims = accnn_graph::shape::reshape(name, x.dims(), codes)?;
                    Some(x.reshape(dims)?)
                }
            };
            if profile && !matches!(step, Step::Weight) {
                // A GPU runs ahead of the host: wait for this step's work before reading the clock.
                self.device.synchronize()?;
                eprintln!("{name:<16} {:8.3} ms", started.elapsed().as_secs_f64() * 1e3);
            }
            values[i] = value;
            for e in inputs {
                if self.last_use[e.node] == i && !keep.contains(&e.node) {
                    values[e.node] = None;
                }
            }
        }
        wanted
            .iter()
            .map(|h| {
                let value = values[h.node].as_ref().ok_or_else(|| InferError::Node {
                    node: self.steps[h.node].0.clone(),
                    message: "output has no value".into(),
                })?;
                if h.output > 0 {
                    return Err(InferError::Node {
                        node: self.steps[h.node].0.clone(),
                        message: format!("output {} is not computed by the engine", h.output),
                    });
                }
                Ok(value.clone())
            })
            .collect()
    }
}

/// faer's parallelism for `workers` threads.
fn par(workers: usize) -> faer::Par {
    if workers > 1 {
        faer::Par::rayon(workers)
    } else {
        faer::Par::Seq
    }
}

/// The contiguous `f32` data and `R` dimensions (`[N, C, H, W]`, `[B, K]`) of a custom op's input.
fn op_input<'a, const R: usize>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<(&'a [f32], [usize; R])> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} runs on f32 tensors");
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input must be contiguous")))?;
    let dims: [usize; R] = layout
        .dims()
        .try_into()
        .map_err(|_| candle_core::Error::Msg(format!("{op} expects a rank-{R} input, got {:?}", layout.dims())))?;
    Ok((&data[start..end], dims))
}

#[doc(hidden)]
/// A one-convolution, one-FC model for documentation examples.
pub fn doc_model() -> Model {
    use accnn_graph::ir::{ConvAttrs, FcAttrs};
    use accnn_graph::{Node, Tensor as Weights};
    let mut model = Model::default();
    let node = |name: &str, op: Op, inputs: Vec<usize>| Node {
        name: name.into(),
        op,
        inputs: inputs.into_iter().map(Entry::new).collect(),
        attrs: Default::default(),
    };
    let conv = ConvAttrs {
        no_bias: true,
        ..ConvAttrs::same([3, 3], 2)
    };
    model.graph.nodes = vec![
        node("data", Op::Variable, vec![]),
        node("w", Op::Variable, vec![]),
        node("conv", Op::Convolution(conv), vec![0, 1]),
        node("fw", Op::Variable, vec![]),
        node(
            "fc",
            Op::FullyConnected(FcAttrs {
                num_hidden: 4,
                no_bias: true,
                flatten: true,
            }),
            vec![2, 3],
        ),
    ];
    model.graph.heads = vec![Entry::new(4)];
    model.args.insert(
        "w".into(),
        Weights::new(vec![2, 3, 3, 3], vec![0.1; 54]).expect("shape"),
    );
    model
        .args
        .insert("fw".into(), Weights::new(vec![4, 128], vec![0.01; 512]).expect("shape"));
    model
}
