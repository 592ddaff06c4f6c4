//! `--cost latency`: ranks chosen under a measured-latency budget on this machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use accnn::{Analysis, Factorisation, LayerCosts, LayerKind, RankPlan, Scope};
use accnn_graph::{Model, Op};
use accnn_infer::latency::{LayerSpec, time_layer, typical_seconds};
use accnn_infer::{Engine, EngineOptions};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};

/// At most this many ranks are timed per layer.
const PROBES_PER_LAYER: usize = 16;
const ROUNDS: usize = 5;

/// Where measured latencies are kept between runs, keyed by device, dtype, batch, threads and shape.
pub(crate) fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("accnn").join("latency-cpu.json"))
}

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

    fn get_or(&mut self, key: String, measure: impl FnOnce() -> Result<f64>) -> Result<f64> {
        if let Some(v) = self.entries.get(&key) {
            return Ok(*v);
        }
        let v = measure()?;
        self.entries.insert(key, v);
        self.dirty = true;
        Ok(v)
    }

    fn save(&self) -> Result<()> {
        let (Some(path), true) = (&self.path, self.dirty) else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_vec_pretty(&self.entries)?;
        accnn_graph::io::write_files_atomically(&[(path.as_path(), &text)])?;
        Ok(())
    }
}

fn spec(model: &Model, analysis: &Analysis, i: usize) -> Option<LayerSpec> {
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
    let unit = if align % layer.groups == 0 {
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

/// Whole-model latency of `model` at `batch`, median of runs.
pub(crate) fn model_seconds(model: &Model, data_shape: &[usize], batch: usize, threads: usize) -> Result<f64> {
    let engine = Engine::new(
        model,
        EngineOptions {
            threads,
            ..Default::default()
        },
    )?;
    let mut shape = data_shape.to_vec();
    shape[0] = batch;
    let x = Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?;
    Ok(typical_seconds(&engine, &x, ROUNDS)?)
}

/// The latency plan and its prediction of the new model's latency.
pub(crate) struct LatencyPlan {
    pub plan: RankPlan,
    pub original_seconds: f64,
    pub predicted_seconds: f64,
}

/// Times every budgeted layer whole and at its probe ranks (through the cache), then maximises the
/// kept energy under `original latency / ratio`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan(
    model: &Model,
    analysis: &Analysis,
    svds: &[Option<Factorisation>],
    ratio: f64,
    scope: Scope,
    align: usize,
    batch: usize,
    threads: usize,
    cache: Option<&Path>,
) -> Result<LatencyPlan> {
    if batch == 0 {
        bail!("--batch must be positive");
    }
    let options = EngineOptions {
        threads,
        ..Default::default()
    };
    let mut cache = Cache::open(cache.map(Path::to_path_buf));
    let prefix = format!(
        "cpu|f32|batch{batch}|threads{}",
        if threads == 0 {
            rayon::current_num_threads()
        } else {
            threads
        }
    );
    let original = model_seconds(model, &analysis.data_shape, batch, threads)?;
    let ns = |s: f64| (s * 1e9).round() as u64;
    let mut costs: Vec<Option<LayerCosts>> = vec![None; analysis.layers.len()];
    let mut whole_total = 0.0;
    for (i, layer) in analysis.layers.iter().enumerate() {
        if !scope.includes(layer.kind) || svds.get(i).and_then(Option::as_ref).is_none() {
            continue;
        }
        let Some(spec) = spec(model, analysis, i) else { continue };
        let key = spec.key();
        let whole = cache.get_or(format!("{prefix}|{key}|whole"), || {
            Ok(time_layer(&spec, None, batch, options, ROUNDS)?)
        })?;
        let mut ranks = Vec::new();
        for k in probe_ranks(layer, align) {
            let t = cache.get_or(format!("{prefix}|{key}|rank{k}"), || {
                Ok(time_layer(&spec, Some(k), batch, options, ROUNDS)?)
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
        bail!(
            "--cost latency --ratio {ratio}: the parts of the model that are not decomposed already take {:.2} ms of the {:.2} ms allowed",
            fixed * 1e3,
            target * 1e3
        );
    }
    let (plan, layers_ns) = accnn::plan_for_costs(analysis, svds, &costs, ns(target - fixed))?;
    Ok(LatencyPlan {
        plan,
        original_seconds: original,
        predicted_seconds: fixed + layers_ns as f64 * 1e-9,
    })
}
