//! Runs an accnn [`Model`] with [candle-core](candle_core).
//!
//! Convolutions, fully-connected layers and pooling run on accnn's own CPU kernels (candle custom
//! ops). A convolution runs on an AVX-512 register-blocked micro-kernel where the CPU has one
//! (strided ones through phase planes of the input), else as GEMMs over shifted views of the padded
//! input (im2col when strided); either way the `(kh, 1)` and `(1, kw)` halves of a decomposed layer
//! cost what their FLOPs say rather than an im2col copy each (candle's own `conv2d` also takes one
//! padding, stride and dilation for both axes, which the halves cannot use). A dense layer at batch
//! sizes up to 16 streams its weights once across the workers, each row dotted with up to 8 inputs
//! at a time (it is bound by reading them). Pooling windows are reduced separably (small 2x2
//! max-pooling planes a plane at a time). A ReLU after a convolution, and a residual `Add` of a
//! convolution's output and an earlier value (with the ReLU after it), are applied as the
//! convolution writes its outputs. Everything else is candle.
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
mod fusion;
pub mod latency;
mod layers;
mod normalize;
mod options;
mod pool;
mod rearrange;
mod resample;
mod step;
pub mod timing;

use accnn_graph::{Entry, GraphError, Model, Op};
use candle_core::{DType, Device, Tensor};

pub use options::{EngineOptions, Target, cpu_kernels, parse_dtype};

use step::{Lowering, Step};

/// How long candle's CPU worker threads spin for more work before they sleep, in pause
/// instructions (candle's default: 25,000). Each of candle's elementwise ops leaves its workers
/// (one pinned to each other core) spinning for that long afterwards, taking a core from whatever
/// runs next: the next convolution's workers, or another runtime being timed. On 2 cores the
/// PP-OCR recogniser's original measured 12.5 ms in onnxruntime inside `accnn` (after the engine
/// had run it) against 7.0 ms with 500, and the engine itself ran it faster too (batch 8: 145 ->
/// 103 ms); with 1 the engine lost at batch 1 (waking the workers costs more than a short spin).
pub const CANDLE_SPIN_LIMIT: &str = "500";

/// The environment variable candle reads its workers' spin limit from, when it first starts them
/// (at its first parallel op).
pub const CANDLE_SPIN_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Sets [`CANDLE_SPIN_VAR`] to [`CANDLE_SPIN_LIMIT`] unless the environment already has it. Call
/// it first thing in `main`, before any candle op.
///
/// # Safety
/// As [`std::env::set_var`]: no other thread may read or write the environment meanwhile (at the
/// start of `main`, no other thread exists yet).
pub unsafe fn quiet_candle_workers() {
    if std::env::var_os(CANDLE_SPIN_VAR).is_none() {
        // SAFETY: the caller's contract.
        unsafe { std::env::set_var(CANDLE_SPIN_VAR, CANDLE_SPIN_LIMIT) };
    }
}

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

impl Engine {
    /// Prepares `model` for inference on `options.target` in `options.dtype`.
    pub fn new(model: &Model, options: EngineOptions) -> Result<Self, InferError> {
        Self::lower(model, options, None)
    }

    /// Prepares only the part of `model` that computes `outputs`, which become the engine's
    /// outputs: nodes they do not depend on are not lowered and hold no weights (a prefix of
    /// VGG-16 up to a convolution leaves its 400 MB of dense weights alone).
    pub fn for_outputs(model: &Model, options: EngineOptions, outputs: &[Entry]) -> Result<Self, InferError> {
        let nodes = &model.graph.nodes;
        check_nodes(outputs, nodes.len())?;
        let needed = depended_on(nodes.len(), outputs, |n| &nodes[n].inputs, |_| false);
        Self::lower(model, options, Some((&needed, outputs)))
    }

    fn lower(model: &Model, options: EngineOptions, part: Option<(&[bool], &[Entry])>) -> Result<Self, InferError> {
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
                Op::Convolution(_) | Op::FullyConnected(_) | Op::ConvTranspose(_) | Op::Normalization(_) => 2,
                Op::BatchNorm(_) => 4,
                Op::SoftmaxOutput => 1,
                _ => 0,
            };
            for e in node.inputs.iter().skip(1).take(n_weights) {
                weight_use[e.node] = true;
            }
        }
        let heads = part.map_or_else(|| graph.heads.clone(), |(_, outputs)| outputs.to_vec());
        let fusion = if options.fuse_activations {
            fusion::Fusion::plan(graph, &heads, !ops)
        } else {
            fusion::Fusion::none(graph)
        };
        let lowering = Lowering {
            model,
            device: &device,
            dtype,
            threads,
            candle_ops: ops,
            fast_kernels: !options.portable_kernels,
            data,
            weight_use: &weight_use,
            fusion: &fusion,
        };
        let steps = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let step = match part {
                    // A node nothing wanted reads is never run: a placeholder without weights.
                    Some((needed, _)) if !needed[i] => Step::Weight,
                    _ => lowering.lower(i, node)?,
                };
                Ok((node.name.clone(), step, fusion.inputs[i].clone()))
            })
            .collect::<Result<Vec<_>, InferError>>()?;
        let mut last_use = vec![0usize; graph.nodes.len()];
        for (i, (_, _, inputs)) in steps.iter().enumerate() {
            for e in inputs {
                last_use[e.node] = i;
            }
        }
        for h in &heads {
            last_use[h.node] = usize::MAX;
        }
        Ok(Engine {
            device,
            dtype,
            steps,
            heads,
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
        check_nodes(wanted, self.steps.len())?;
        let input = self.prepare(input)?;
        let outputs = self
            .pool
            .install(|| self.run_inner(Some(&input), None, Vec::new(), wanted))?;
        Self::to_host(outputs)
    }

    /// Runs the model from `known` values of some of its entries (what an earlier
    /// [`Engine::run_collect`] returned) and returns the `wanted` outputs (f32, on the CPU). Only
    /// the nodes between the known values and the wanted ones are run: a network changed only
    /// after some layer is evaluated from that layer's live values without recomputing its
    /// unchanged prefix. `input` is needed only where a wanted value depends on the data input
    /// other than through `known`.
    pub fn run_from(
        &self,
        input: Option<&Tensor>,
        known: &[(Entry, Tensor)],
        wanted: &[Entry],
    ) -> Result<Vec<Tensor>, InferError> {
        check_nodes(wanted, self.steps.len())?;
        check_nodes(known.iter().map(|(e, _)| e), self.steps.len())?;
        if let Some((e, _)) = known.iter().find(|(e, _)| e.output > 0) {
            return Err(InferError::Node {
                node: self.steps[e.node].0.clone(),
                message: format!("output {} is not computed by the engine", e.output),
            });
        }
        let is_known: std::collections::HashSet<usize> = known.iter().map(|(e, _)| e.node).collect();
        let needed = depended_on(
            self.steps.len(),
            wanted,
            |n| &self.steps[n].2,
            |n| is_known.contains(&n),
        );
        let input = input.map(|t| self.prepare(t)).transpose()?;
        let seeds = known
            .iter()
            .map(|(e, t)| Ok((e.node, self.prepare(t)?)))
            .collect::<Result<Vec<_>, InferError>>()?;
        let outputs = self
            .pool
            .install(|| self.run_inner(input.as_ref(), Some(&needed), seeds, wanted))?;
        Self::to_host(outputs)
    }

    fn to_host(outputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
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
        let outputs = self
            .pool
            .install(|| self.run_inner(Some(input), None, Vec::new(), &self.heads))?;
        self.device.synchronize()?;
        Ok(outputs)
    }

    /// Runs the steps up to the last `wanted` output (only those `needed` marks, when given) with
    /// `seeds` as the values of their nodes.
    fn run_inner(
        &self,
        input: Option<&Tensor>,
        needed: Option<&[bool]>,
        seeds: Vec<(usize, Tensor)>,
        wanted: &[Entry],
    ) -> Result<Vec<Tensor>, InferError> {
        let mut values: Vec<Option<Tensor>> = vec![None; self.steps.len()];
        let mut seeded = vec![false; self.steps.len()];
        for (node, value) in seeds {
            values[node] = Some(value);
            seeded[node] = true;
        }
        let profile = std::env::var_os("ACCNN_PROFILE").is_some();
        let last = wanted.iter().map(|e| e.node).max().unwrap_or(0);
        let keep: std::collections::HashSet<usize> = wanted.iter().map(|e| e.node).collect();
        for (i, (name, step, inputs)) in self.steps.iter().enumerate().take(last + 1) {
            if seeded[i] || needed.is_some_and(|n| !n[i]) {
                continue;
            }
            let started = std::time::Instant::now();
            let args: Vec<Option<&Tensor>> = inputs.iter().map(|e| values[e.node].as_ref()).collect();
            let value = step.forward(name, input, &args)?;
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

/// An error naming the first of `entries` past a graph of `nodes` nodes.
fn check_nodes<'e>(entries: impl IntoIterator<Item = &'e Entry>, nodes: usize) -> Result<(), InferError> {
    match entries.into_iter().find(|e| e.node >= nodes) {
        Some(e) => Err(InferError::Node {
            node: format!("#{}", e.node),
            message: "no such node".into(),
        }),
        None => Ok(()),
    }
}

/// Which of `nodes` nodes the `wanted` entries depend on (themselves included), walking back
/// through `inputs_of` and stopping at nodes `stop` accepts (included, their inputs not).
fn depended_on<'g>(
    nodes: usize,
    wanted: &[Entry],
    inputs_of: impl Fn(usize) -> &'g [Entry],
    stop: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let mut needed = vec![false; nodes];
    let mut stack: Vec<usize> = wanted.iter().map(|e| e.node).collect();
    while let Some(node) = stack.pop() {
        if !std::mem::replace(&mut needed[node], true) && !stop(node) {
            stack.extend(inputs_of(node).iter().map(|e| e.node));
        }
    }
    needed
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
    use accnn_graph::ir::ConvAttrs;
    use accnn_graph::{ModelBuilder, Tensor as Weights};
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let w = Weights::new(vec![2, 3, 3, 3], vec![0.1; 54]).expect("shape");
    let conv = b.conv("conv", x, ConvAttrs::same([3, 3], 2), w, None);
    let fw = Weights::new(vec![4, 128], vec![0.01; 512]).expect("shape");
    let fc = b.dense("fc", conv, fw, None, true);
    b.build(&[fc]).expect("a valid graph")
}
