//! `Cost::Latency`: ranks chosen under a measured-latency budget. FLOPs are not time: a decomposed
//! pair at a rank that the kernels handle badly can be slower than the layer it replaces.
//!
//! [`measured_latency_plan`] times every budgeted layer whole and at up to 16 ranks with a [`Timer`]
//! (accnn's engine, or onnxruntime: what the model will run on), through a JSON cache keyed by
//! runtime, device, kernels, dtype, batch, threads and layer shape, maximises the kept energy under
//! `measured model latency / ratio`, predicting the new model's latency, and checks the plan on the
//! model it makes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use accnn_graph::{Model, Op};
use accnn_infer::EngineOptions;
use accnn_infer::latency::{LayerSpec, ROUNDS, layer_input_shape, layer_model, time_layer, typical_run_seconds};
use accnn_ort::OnnxRuntime;
use accnn_plan::{Analysis, Factorisation, Layer, LayerCosts, LayerKind, PerLayer, RankPlan, Scope};

use crate::Error;

/// At most this many ranks are timed per layer.
const PROBES_PER_LAYER: usize = 16;

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

    fn get_or(&mut self, key: String, measure: impl FnOnce() -> Result<f64, Error>) -> Result<f64, Error> {
        if let Some(v) = self.entries.get(&key) {
            return Ok(*v);
        }
        let v = measure()?;
        self.entries.insert(key, v);
        self.dirty = true;
        Ok(v)
    }

    fn save(&self) -> Result<(), Error> {
        let (Some(path), true) = (&self.path, self.dirty) else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::LatencyCache {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let text = serde_json::to_vec_pretty(&self.entries).expect("a map of strings to numbers serialises");
        accnn_graph::io::write_files_atomically(&[(path.as_path(), &text)]).map_err(accnn_plan::Error::from)?;
        Ok(())
    }
}

fn layer_spec(model: &Model, layer: &Layer) -> Option<LayerSpec> {
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
fn probe_ranks(layer: &Layer, align: usize) -> Vec<usize> {
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

/// The latency plan and its prediction of the new model's latency.
#[derive(Clone, Debug)]
pub struct LatencyPlan {
    pub plan: RankPlan,
    pub original_seconds: f64,
    pub predicted_seconds: f64,
    /// `Some(ratio)` when the ratio asked was beyond reach and this is the fastest plan instead,
    /// predicted to reach about `ratio`.
    pub reachable: Option<f64>,
}

/// The budgeted layers' latencies, whole and at their probe ranks, and the original model's.
struct LatencyCosts {
    original: f64,
    /// What the budgeted layers do not cover (pooling, activations, unbudgeted layers).
    fixed: f64,
    layers: PerLayer<LayerCosts>,
}

/// Times the original and every budgeted layer whole and at its probe ranks (through the cache at
/// `target.cache`). `original` is `model` ready to be timed whole in `timer`'s runtime
/// ([`Timer::prepare`]).
fn time_layers(
    model: &Model,
    original: &mut TimedModel,
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    target: &LatencyTarget,
    timer: &Timer,
) -> Result<LatencyCosts, Error> {
    let LatencyTarget {
        scope, align, batch, ..
    } = *target;
    if batch == 0 {
        return Err(Error::InvalidBatch);
    }
    let mut cache = Cache::open(target.cache.clone());
    // Timings belong to the device, precision and kernels that made them: a new kernel generation
    // starts a new table.
    let prefix = timer.cache_prefix(batch);
    let original = typical_run_seconds(|| original.run(), ROUNDS)?;
    let mut layers: PerLayer<LayerCosts> = PerLayer::new();
    let mut whole_total = 0.0;
    for (id, _) in svds.iter() {
        let layer = &analysis[id];
        if !scope.includes(layer.kind) {
            continue;
        }
        let Some(spec) = layer_spec(model, layer) else {
            continue;
        };
        let key = spec.key();
        let whole = cache.get_or(format!("{prefix}|{key}|whole"), || {
            timer.layer_seconds(&spec, None, batch)
        })?;
        let mut ranks = Vec::new();
        for k in probe_ranks(layer, align) {
            let t = cache.get_or(format!("{prefix}|{key}|rank{k}"), || {
                timer.layer_seconds(&spec, Some(k), batch)
            })?;
            ranks.push((k, ns(t)));
        }
        whole_total += whole;
        layers.insert(
            id,
            LayerCosts {
                whole: ns(whole),
                ranks,
            },
        );
    }
    cache.save()?;
    Ok(LatencyCosts {
        original,
        fixed: (original - whole_total).max(0.0),
        layers,
    })
}

/// Nanoseconds, as the selector counts costs.
fn ns(seconds: f64) -> u64 {
    (seconds * 1e9).round() as u64
}

impl LatencyCosts {
    /// Maximises the kept energy under `original latency / ratio`. A ratio beyond reach gets the
    /// fastest plan (see [`LatencyPlan::reachable`]) as long as that is faster than the original,
    /// else [`Error::LatencyOutOfReach`].
    fn plan(&self, analysis: &Analysis, svds: &PerLayer<Factorisation>, ratio: f64) -> Result<LatencyPlan, Error> {
        accnn_plan::check_ratio(ratio)?;
        let (original, fixed) = (self.original, self.fixed);
        let allowed = original / ratio;
        let budget = ns((allowed - fixed).max(0.0));
        match accnn_plan::plan_for_costs(analysis, svds, &self.layers, budget) {
            Ok((plan, layers_ns)) => Ok(LatencyPlan {
                plan,
                original_seconds: original,
                predicted_seconds: fixed + layers_ns as f64 * 1e-9,
                reachable: None,
            }),
            // Beyond reach on this runtime (what it spends outside the budgeted layers bounds the
            // speed-up, and nobody can know that before timing): the fastest plan, which is the
            // closest to the request, if it is faster than the original at all. The selector only
            // sees the budgeted layers; the reachable ratio is the whole model's.
            Err(accnn_plan::Error::CostSelection(accnn_rank::RankError::Infeasible { minimum, .. })) => {
                let fastest = fixed + minimum as f64 * 1e-9;
                let max_ratio = original / fastest.max(f64::MIN_POSITIVE);
                if max_ratio <= 1.0 {
                    return Err(Error::LatencyOutOfReach {
                        ratio,
                        fastest_ms: fastest * 1e3,
                        allowed_ms: allowed * 1e3,
                        max_ratio,
                    });
                }
                let (plan, layers_ns) = accnn_plan::plan_for_costs(analysis, svds, &self.layers, minimum)?;
                Ok(LatencyPlan {
                    plan,
                    original_seconds: original,
                    predicted_seconds: fixed + layers_ns as f64 * 1e-9,
                    reachable: Some(max_ratio),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// How many times a plan whose model measures short of the ratio is planned again.
pub const REPLANS: usize = 2;

/// How far past the ratio a re-plan may measure before one more plan is made between it and the
/// last one that fell short (every bit of speed past the ratio is accuracy given away).
pub const OVERSHOOT: f64 = 0.05;

/// A latency plan checked on the model it makes: the plan's model measured against the original.
#[derive(Clone, Debug)]
pub struct MeasuredPlan {
    pub planned: LatencyPlan,
    /// The speed-up the plan's model measured (original / new, timed alternately).
    pub measured: f64,
    /// Plans made, the first included.
    pub attempts: usize,
}

/// The latency plan: times every budgeted layer whole and at up to 16 ranks (through the cache at
/// `target.cache`), maximises the kept energy under `original latency / ratio`, then closes the
/// loop on the model itself. Each plan's model is built and timed against the original
/// (`measure(plan, original)` returns the measured speed-up), and one that falls short is planned
/// again, from the same timings, for the ratio scaled by the shortfall, at most [`REPLANS`] times.
/// Layers timed alone do not add up to the model (a runtime fuses, re-lays out and caches across
/// layers): on PaddleOCR's recogniser in onnxruntime, a plan predicted at 1.30x measured 1.15x.
/// The first plan that reaches the ratio is kept (it keeps the most energy), else the fastest
/// measured. A re-plan that reaches it by more than [`OVERSHOOT`] after one that fell short is
/// followed by one more plan, for the ratio interpolated between the two asked so that it
/// measures the ratio (a step of bisection), kept if it reaches too. A ratio beyond the timings'
/// reach plans the fastest model
/// ([`LatencyPlan::reachable`]); [`Error::LatencyOutOfReach`] when nothing is faster at all.
///
/// `original` is `model` ready to be timed whole in `timer`'s runtime ([`Timer::prepare`]); the
/// caller keeps it to time the new model against.
pub fn measured_latency_plan(
    model: &Model,
    original: &mut TimedModel,
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    target: &LatencyTarget,
    timer: &Timer,
    mut measure: impl FnMut(&RankPlan, &mut TimedModel) -> Result<f64, Error>,
) -> Result<MeasuredPlan, Error> {
    accnn_plan::check_ratio(target.ratio)?;
    let costs = time_layers(model, original, analysis, svds, target, timer)?;
    let mut asked = target.ratio;
    let mut best: Option<MeasuredPlan> = None;
    // The last plan that fell short, as (ratio asked, measured).
    let mut short: Option<(f64, f64)> = None;
    let mut made = 0;
    for _ in 0..=REPLANS {
        let planned = match costs.plan(analysis, svds, asked) {
            Ok(p) => p,
            // A stricter re-plan that finds nothing faster leaves the best plan so far.
            Err(Error::LatencyOutOfReach { .. }) if best.is_some() => break,
            Err(e) => return Err(e),
        };
        made += 1;
        let measured = measure(&planned.plan, original)?;
        let fastest = planned.reachable.is_some();
        let candidate = MeasuredPlan {
            planned,
            measured,
            attempts: made,
        };
        if measured >= target.ratio {
            let overshot = short.filter(|_| measured > target.ratio * (1.0 + OVERSHOOT));
            let reached = candidate.planned.plan.clone();
            best = Some(candidate);
            if let Some((asked_short, measured_short)) = overshot {
                // The ratio to ask for that measures the target, on the line through the two.
                let between =
                    asked_short + (asked - asked_short) * (target.ratio - measured_short) / (measured - measured_short);
                if let Ok(refined) = costs.plan(analysis, svds, between)
                    && refined.plan != reached
                    && refined.reachable.is_none()
                {
                    made += 1;
                    let measured = measure(&refined.plan, original)?;
                    if measured >= target.ratio {
                        best = Some(MeasuredPlan {
                            planned: refined,
                            measured,
                            attempts: made,
                        });
                    }
                }
            }
            break;
        }
        short = Some((asked, measured));
        if best.as_ref().is_none_or(|b| measured > b.measured) {
            best = Some(candidate);
        }
        if fastest || measured <= 0.0 {
            break;
        }
        asked *= target.ratio / measured;
    }
    let mut best = best.expect("the first plan is measured or its error returned");
    best.attempts = made;
    Ok(best)
}

/// What a latency plan is for: the ratio over measured latency, and where and how it is measured.
#[derive(Clone, Debug)]
pub struct LatencyTarget {
    pub ratio: f64,
    pub scope: Scope,
    /// Every chosen width a multiple of this.
    pub align: usize,
    /// Batch size the layers and the model are timed at.
    pub batch: usize,
    /// Where measured layer latencies are kept between runs (`None`: not kept).
    pub cache: Option<PathBuf>,
}

/// Where measured latencies are kept between runs by default: `$XDG_CACHE_HOME/accnn/latency.json`,
/// else `~/.cache/accnn/latency.json`.
pub fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("accnn").join("latency.json"))
}

/// A model ready to be timed: built in accnn's engine or loaded in onnxruntime, with its input.
pub enum TimedModel {
    Engine {
        engine: accnn_infer::Engine,
        input: candle_core::Tensor,
    },
    Onnxruntime {
        session: accnn_ort::OrtSession,
        input: Vec<f32>,
        shape: Vec<usize>,
    },
}

impl TimedModel {
    fn run(&mut self) -> Result<(), Error> {
        match self {
            TimedModel::Engine { engine, input } => engine.forward(input).map(drop).map_err(Error::from),
            TimedModel::Onnxruntime { session, input, shape } => Ok(session.time_run(input, shape)?),
        }
    }
}

/// Median seconds of `a` and `b`, timed alternately in one loop (at least 10 rounds and about a
/// second between them), so that the machine's load hits both alike: the one verdict on whether
/// the new model is faster.
pub fn side_by_side(a: &mut TimedModel, b: &mut TimedModel) -> Result<(f64, f64), Error> {
    let started = std::time::Instant::now();
    a.run()?;
    b.run()?;
    let pair = started.elapsed().as_secs_f64().max(1e-6);
    let rounds = ((1.0 / pair) as usize).clamp(10, 200);
    let (mut ra, mut rb) = (|| a.run(), || b.run());
    let times = accnn_infer::timing::alternate::<Error>(&mut [&mut ra, &mut rb], 1, rounds)?;
    Ok((times[0].median(), times[1].median()))
}

/// Where layers and models are timed.
pub enum Timer {
    /// accnn's engine.
    Engine(EngineOptions),
    /// onnxruntime's CPU provider with `threads` intra-op threads (0: its default).
    Onnxruntime { runtime: OnnxRuntime, threads: usize },
}

impl Timer {
    /// The timer [`crate::LatencyOptions`] ask for (onnxruntime loaded here).
    pub fn new(options: &crate::LatencyOptions) -> Result<Self, Error> {
        Ok(match &options.runtime {
            crate::LatencyRuntime::Engine => Timer::Engine(options.engine),
            crate::LatencyRuntime::Onnxruntime { library } => Timer::Onnxruntime {
                runtime: OnnxRuntime::load(library.as_deref())?,
                threads: options.engine.threads,
            },
        })
    }

    /// `model` ready to be timed at `batch` on a fixed input: in accnn's engine, or in onnxruntime as
    /// `onnx` (`None`: `model` written as a new ONNX model).
    pub fn prepare(
        &self,
        model: &Model,
        onnx: Option<&[u8]>,
        data_shape: &[usize],
        batch: usize,
    ) -> Result<TimedModel, Error> {
        let mut shape = data_shape.to_vec();
        shape[0] = batch;
        let n: usize = shape.iter().product();
        // A fixed pseudo-random pattern, never all zeros.
        let input: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0).collect();
        match self {
            Timer::Engine(o) => {
                let engine = accnn_infer::Engine::new(model, *o)?;
                let x = candle_core::Tensor::from_vec(input, shape, &candle_core::Device::Cpu)
                    .map_err(accnn_infer::InferError::from)?;
                let input = engine.prepare(&x)?;
                Ok(TimedModel::Engine { engine, input })
            }
            Timer::Onnxruntime { runtime, threads } => {
                let written;
                let onnx = match onnx {
                    Some(onnx) => onnx,
                    None => {
                        written = accnn_graph::onnx::encode_standalone(model, data_shape, None)?.model;
                        &written
                    }
                };
                let session = runtime.session(onnx, *threads)?;
                Ok(TimedModel::Onnxruntime { session, input, shape })
            }
        }
    }

    /// Where the timings were made, in words: `cpu in f32`, `onnxruntime (libonnxruntime.so.1.20.1)`.
    pub fn describe(&self) -> String {
        match self {
            Timer::Engine(o) => format!("accnn's engine on {} in {}", o.target, o.dtype.as_str()),
            Timer::Onnxruntime { runtime, .. } => format!(
                "onnxruntime ({})",
                runtime.library().file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }

    /// Timings belong to the runtime, device, precision and kernels that made them: a new kernel
    /// generation or library starts a new table.
    fn cache_prefix(&self, batch: usize) -> String {
        match self {
            Timer::Engine(o) => format!(
                "{}|{}|{}|batch{batch}|threads{}",
                o.target,
                o.kernels(),
                o.dtype.as_str(),
                o.workers()
            ),
            Timer::Onnxruntime { runtime, threads } => format!(
                "onnxruntime|{}|batch{batch}|threads{threads}",
                runtime.library().file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }

    /// Seconds one run of `spec` takes at `batch`, whole or decomposed at `rank` per group.
    fn layer_seconds(&self, spec: &LayerSpec, rank: Option<usize>, batch: usize) -> Result<f64, Error> {
        match self {
            Timer::Engine(o) => Ok(time_layer(spec, rank, batch, *o, ROUNDS)?),
            Timer::Onnxruntime { runtime, threads } => {
                let shape = layer_input_shape(spec, batch);
                let onnx = accnn_graph::onnx::encode_standalone(&layer_model(spec, rank), &shape, None)?.model;
                let mut session = runtime.session(&onnx, *threads)?;
                let input = vec![1f32; shape.iter().product()];
                Ok(typical_run_seconds(|| session.time_run(&input, &shape), ROUNDS)?)
            }
        }
    }
}
