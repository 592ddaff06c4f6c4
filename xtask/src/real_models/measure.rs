//! `cargo xtask real-models --measure`: what acceleration does to real models, the table of
//! issue 15. For each model and variant (1.5x and 2x: data-free, fitted to synthetic images of
//! natural-image statistics, and calibrated on synthetic pages of the model's domain; 1.5x and 1.1x
//! under measured latency): the theoretical speed-up, layers decomposed, the output error and the
//! task's agreement on held-out inputs, and the speed-up measured in accnn's engine and in
//! onnxruntime at batch 1. Every written model also goes through onnx.checker and onnxruntime.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use accnn::{Calibration, CalibrationImages, Cost, Dataset, LatencyOptions, ModelInput, RankSource, Request, Scope};
use accnn_infer::{Engine, EngineOptions, timing};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use serde_json::json;

use super::RealModel;
use super::document::{Normalisation, varied_pages};
use crate::onnx_check::{run_python_check, write_f32};

/// Held-out inputs the outputs are compared on (never among the calibration images).
const HELD_OUT: usize = 8;
/// ImageNet's statistics, for the classifiers' pages.
const IMAGENET: Normalisation = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

/// What a variant's factors are fitted to.
#[derive(Clone, Copy, PartialEq)]
enum Fitted {
    Weights,
    /// Synthetic pages of the model's domain (text for OCR, ImageNet-normalised for classifiers).
    Pages,
    /// `--calibrate synthetic`: images with natural-image statistics, nothing of the domain.
    Synthetic,
}

struct Variant {
    label: &'static str,
    ratio: f64,
    fitted: Fitted,
    latency: bool,
}

const VARIANTS: [Variant; 8] = [
    Variant {
        label: "1.5x data-free",
        ratio: 1.5,
        fitted: Fitted::Weights,
        latency: false,
    },
    Variant {
        label: "2x data-free",
        ratio: 2.0,
        fitted: Fitted::Weights,
        latency: false,
    },
    Variant {
        label: "1.5x synthetic",
        ratio: 1.5,
        fitted: Fitted::Synthetic,
        latency: false,
    },
    Variant {
        label: "2x synthetic",
        ratio: 2.0,
        fitted: Fitted::Synthetic,
        latency: false,
    },
    Variant {
        label: "1.5x calibrated",
        ratio: 1.5,
        fitted: Fitted::Pages,
        latency: false,
    },
    Variant {
        label: "2x calibrated",
        ratio: 2.0,
        fitted: Fitted::Pages,
        latency: false,
    },
    Variant {
        label: "1.5x latency, calibrated",
        ratio: 1.5,
        fitted: Fitted::Pages,
        latency: true,
    },
    // What the latency budget reaches where 1.5x is refused (small models whose undecomposable
    // parts already take most of the time).
    Variant {
        label: "1.1x latency, calibrated",
        ratio: 1.1,
        fitted: Fitted::Pages,
        latency: true,
    },
];

/// One row of the table.
struct Row {
    model: String,
    variant: &'static str,
    theoretical: f64,
    decomposed: usize,
    layers: usize,
    relative_error: f64,
    /// What agreement measures for this model's output, and its value.
    agreement_kind: &'static str,
    agreement: f64,
    engine: timing::Comparison,
    seconds: f64,
    onnx: PathBuf,
    original: PathBuf,
    shape: Vec<usize>,
}

/// The first output of `engine` on `input`, with its dimensions.
fn output(engine: &Engine, input: &Tensor) -> Result<(Vec<f32>, Vec<usize>)> {
    let out = engine.run(input)?.remove(0);
    let dims = out.dims().to_vec();
    Ok((out.flatten_all()?.to_vec1::<f32>()?, dims))
}

/// What agreement means for an output of these dimensions, and its value: a classifier's top-1
/// per image (`N, K`), a recogniser's best class per time step (`N, T, K`, what CTC decodes), a
/// detector's text map as the intersection over union of pixels above DBNet's 0.3 (`N, 1, H, W`).
fn agreement(dims: &[usize], new: &[f32], old: &[f32]) -> (&'static str, f64) {
    let best = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]));
    match dims.len() {
        2 | 3 => {
            let k = *dims.last().unwrap_or(&1);
            let rows = old.len() / k.max(1);
            let same = (0..rows)
                .filter(|r| best(&new[r * k..(r + 1) * k]) == best(&old[r * k..(r + 1) * k]))
                .count();
            let what = if dims.len() == 2 { "top-1" } else { "per-step top-1" };
            (what, same as f64 / rows.max(1) as f64)
        }
        _ => {
            let (mut both, mut either) = (0usize, 0usize);
            for (a, b) in new.iter().zip(old) {
                let (a, b) = (*a > 0.3, *b > 0.3);
                both += (a && b) as usize;
                either += (a || b) as usize;
            }
            ("map IoU", if either == 0 { 1.0 } else { both as f64 / either as f64 })
        }
    }
}

fn relative_error(new: &[f32], old: &[f32]) -> f64 {
    let diff: f64 = new.iter().zip(old).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    let norm: f64 = old.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Measures `models` (the model-zoo files with constant weights are left out: every kernel of
/// theirs is rank 1) and writes the table to `table` as Markdown.
pub fn run(
    root: &Path,
    python: &Path,
    cache: &Path,
    models: &[RealModel],
    calibration: usize,
    table: &Path,
    variants: &[String],
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("accnn-real-models-measure-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let chosen: Vec<&Variant> = VARIANTS
        .iter()
        .filter(|v| variants.is_empty() || variants.iter().any(|w| v.label.contains(w.as_str())))
        .collect();
    let result = measure_all(root, python, cache, models, calibration, &dir, (table, &chosen));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure_all(
    root: &Path,
    python: &Path,
    cache: &Path,
    models: &[RealModel],
    calibration: usize,
    dir: &Path,
    (table, variants): (&Path, &[&Variant]),
) -> Result<()> {
    let started = Instant::now();
    let mut rows = Vec::new();
    // Variants accnn refused (a latency ratio the layers cannot reach), with its reason.
    let mut refused: Vec<(String, &'static str, String)> = Vec::new();
    let mut cases = Vec::new();
    for m in models.iter().filter(|m| !m.name.starts_with("light_")) {
        let loaded = accnn::load_model(
            ModelInput::file(m.path.display().to_string()),
            m.data_shape.as_deref(),
            true,
        )
        .with_context(|| format!("{}: accnn cannot read it", m.name))?;
        let chw = loaded.analysis.data_shape[1..].to_vec();
        let layers = loaded.analysis.layers.len();
        let norm = m.document.unwrap_or(IMAGENET);
        let held_shape = [HELD_OUT, chw[0], chw[1], chw[2]];
        let held = Tensor::from_vec(varied_pages(&held_shape, 2, norm), &held_shape[..], &Device::Cpu)?;
        // One engine per model, for its outputs and its timings.
        let original_engine = Engine::new(&loaded.model, EngineOptions::default())?;
        let (old, dims) = output(&original_engine, &held)?;
        drop(loaded);
        let single = held.narrow(0, 0, 1)?;
        let held_path = dir.join(format!("{}.held.f32", m.name));
        write_f32(&held_path, &held.flatten_all()?.to_vec1::<f32>()?)?;
        let cal_shape = [calibration, chw[0], chw[1], chw[2]];
        for (i, v) in variants.iter().enumerate() {
            let t = Instant::now();
            let out = dir.join(format!("{}-{i}.onnx", m.name));
            let cost = if v.latency {
                Cost::Latency(LatencyOptions {
                    runtime: accnn::LatencyRuntime::Engine,
                    batch: 1,
                    engine: EngineOptions::default(),
                    cache: Some(cache.to_path_buf()),
                })
            } else {
                Cost::Macs
            };
            let ranks = RankSource::Ratio {
                ratio: v.ratio,
                scope: Scope::All,
                align: 1,
                objective: Default::default(),
                cost,
            };
            let mut request = Request::new(ModelInput::file(m.path.display().to_string()), ranks)
                .with_output(out.display().to_string())
                .with_data_shape(&chw);
            match v.fitted {
                Fitted::Weights => {}
                Fitted::Pages => {
                    let images = varied_pages(&cal_shape, 1, norm);
                    let data = Dataset {
                        shape: cal_shape,
                        images,
                        labels: vec![0; calibration],
                    };
                    request = request.with_calibration(Calibration::new(CalibrationImages::Dataset(data)));
                }
                Fitted::Synthetic => {
                    let images = CalibrationImages::Synthetic {
                        count: calibration,
                        seed: 0,
                    };
                    request = request.with_calibration(Calibration::new(images));
                }
            }
            let fast = match accnn::accelerate(request) {
                Ok(fast) => fast,
                Err(why) => {
                    println!("{} {}: refused: {why}", m.name, v.label);
                    refused.push((m.name.clone(), v.label, why.to_string()));
                    continue;
                }
            };
            let seconds = t.elapsed().as_secs_f64();
            let fast_engine = Engine::new(&fast.model, EngineOptions::default())?;
            let (new, _) = output(&fast_engine, &held)?;
            let (what, agree) = agreement(&dims, &new, &old);
            let expected = dir.join(format!("{}-{i}.expected.f32", m.name));
            write_f32(&expected, &new)?;
            cases.push(json!({
                "model": out, "input": held_path, "shape": held_shape, "expected": expected,
                "tolerance": 1e-4, "atol": 1e-6,
            }));
            let engine = timing::compare(&original_engine, &fast_engine, &single, 2, 11)?;
            let row = Row {
                model: m.name.clone(),
                variant: v.label,
                theoretical: fast.report.speedup(),
                decomposed: fast.report.layers.iter().filter(|l| l.width.is_some()).count(),
                layers,
                relative_error: relative_error(&new, &old),
                agreement_kind: what,
                agreement: agree,
                engine,
                seconds,
                onnx: out,
                original: m.path.clone(),
                shape: vec![1, chw[0], chw[1], chw[2]],
            };
            println!(
                "{} {}: theoretical {:.2}x, {}/{} layers decomposed, held-out error {:.2}%, {what} {:.1}%, engine {:.2}x ({:.1} s)",
                row.model,
                row.variant,
                row.theoretical,
                row.decomposed,
                row.layers,
                100.0 * row.relative_error,
                100.0 * row.agreement,
                row.engine.speedup(),
                row.seconds
            );
            rows.push(row);
        }
    }
    if rows.is_empty() {
        bail!("--measure: no model with trained weights among those selected");
    }
    let results = dir.join("onnxruntime.json");
    let bench: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"name": i.to_string(), "original": r.original, "accelerated": r.onnx, "shape": r.shape}))
        .collect();
    let manifest = json!({ "cases": cases, "bench": bench, "bench_results": results });
    if !run_python_check(root, python, dir, &manifest)? {
        bail!("real-models --measure: some written models fail onnx.checker or disagree with onnxruntime");
    }
    let timed: Vec<(f64, f64)> = serde_json::from_slice::<Vec<serde_json::Value>>(&std::fs::read(&results)?)?
        .iter()
        .map(|r| {
            (
                r["original_ms"].as_f64().unwrap_or(f64::NAN),
                r["accelerated_ms"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    let mut md = String::from(
        "| model | variant | theoretical | layers decomposed | held-out output error | agreement | accnn engine, batch 1 | onnxruntime, batch 1 | accelerate (s) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (r, (a, b)) in rows.iter().zip(&timed) {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2}x | {}/{} | {:.2}% | {} {:.1}% | {:.2}x ({:.1} → {:.1} ms) | {:.2}x ({:.1} → {:.1} ms) | {:.1} |",
            r.model,
            r.variant,
            r.theoretical,
            r.decomposed,
            r.layers,
            100.0 * r.relative_error,
            r.agreement_kind,
            100.0 * r.agreement,
            r.engine.speedup(),
            1e3 * r.engine.a.median(),
            1e3 * r.engine.b.median(),
            a / b,
            a,
            b,
            r.seconds
        );
    }
    for (model, variant, why) in &refused {
        let _ = writeln!(md, "| {model} | {variant} | refused: {why} | | | | | | |");
    }
    let _ = writeln!(
        md,
        "\nHeld-out: {HELD_OUT} synthetic pages (seed 2) never used for calibration; calibrated variants fit on \
         {calibration} others (seed 1), synthetic ones on {calibration} images of natural-image statistics \
         (`--calibrate synthetic`). Speed-ups: medians of 11 alternating runs in accnn's engine, of 20 runs per \
         model in onnxruntime (one session at a time), on this machine ({} threads). Total {:.0} s. \
         Command: `cargo xtask real-models --python PY --measure`.",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    if let Some(parent) = table.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(table, &md).with_context(|| format!("cannot write {}", table.display()))?;
    println!("\n{md}\nwrote {}", table.display());
    Ok(())
}
