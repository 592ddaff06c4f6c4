//! `cargo xtask onnx-check`: ONNX models accnn writes pass onnx.checker, run in onnxruntime, and
//! compute there what accnn's engine computes; a seeded ResNet-18 decomposes to the requested ratio.

use std::path::{Path, PathBuf};
use std::process::Command;

use accnn_graph::onnx::{decode_onnx, encode_onnx, zoo};
use accnn_graph::{Model, fold_batch_norms};
use accnn_infer::latency::{LayerSpec, layer_input_shape, layer_model};
use accnn_infer::{Engine, EngineOptions};
use accnn_plan::{Analysis, Report, Scope, apply_plan, factorise_all, full_rank_plan, plan_for_ratio};
use anyhow::{Context, Result, bail};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct OnnxCheckArgs {
    /// A Python with onnx and onnxruntime installed (.ci/run pins the versions).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Also time ResNet-18 and its ratio-2 decomposition in accnn's engine and in onnxruntime.
    #[arg(long)]
    pub bench: bool,
}

/// Writes `manifest` into `dir` and runs `xtask/python/onnx_check.py` on it with `python`:
/// whether every case passed (its lines are printed as they come).
pub(crate) fn run_python_check(root: &Path, python: &Path, dir: &Path, manifest: &serde_json::Value) -> Result<bool> {
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(manifest)?)?;
    let status = Command::new(python)
        .arg(root.join("xtask/python/onnx_check.py"))
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    Ok(status.success())
}

/// Writes `values` as raw little-endian f32, as `xtask/python/onnx_check.py` reads them.
pub(crate) fn write_f32(path: &Path, values: &[f32]) -> Result<()> {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The first output of `model` on `input` (of `shape`) in accnn's engine, flattened.
pub(crate) fn engine_output(model: &Model, input: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
    let engine = Engine::new(model, EngineOptions::default())?;
    let x = candle_core::Tensor::from_slice(input, shape, &candle_core::Device::Cpu)?;
    Ok(engine.run(&x)?.remove(0).flatten_all()?.to_vec1::<f32>()?)
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    shape: Vec<usize>,
    ratios: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for opset in [9, 11, 13, 17, 21] {
        for (name, bytes, shape) in [
            ("vgg_chain", zoo::vgg_chain(1, opset), vec![2, 3, 16, 16]),
            ("residual_block", zoo::residual_block(2, opset), vec![2, 8, 12, 12]),
            ("concat_branch", zoo::concat_branch(3, opset), vec![2, 4, 10, 10]),
        ] {
            out.push(Case {
                name: format!("{name}-opset{opset}"),
                bytes,
                shape,
                ratios: vec![2.0],
            });
        }
    }
    for opset in [11, 13, 17] {
        out.push(Case {
            name: format!("exported_shapes-opset{opset}"),
            bytes: zoo::exported_shapes(5, opset),
            shape: vec![2, 3, 16, 16],
            ratios: vec![2.0],
        });
        out.push(Case {
            name: format!("split_block-opset{opset}"),
            bytes: zoo::split_block(9, opset),
            shape: vec![2, 8, 8, 8],
            ratios: vec![2.0],
        });
        out.push(Case {
            name: format!("detection_head-opset{opset}"),
            bytes: zoo::detection_head(7, opset),
            shape: vec![2, 4, 12, 12],
            ratios: vec![2.0],
        });
    }
    out.push(Case {
        name: "resnet18".into(),
        bytes: zoo::resnet18(18, 1000),
        shape: vec![2, 3, 224, 224],
        ratios: vec![1.5, 2.0],
    });
    out
}

pub fn run(root: &Path, args: &OnnxCheckArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("accnn-onnx-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut manifest_cases = Vec::new();
    let mut bench = Vec::new();
    let mut problems = Vec::new();
    for case in cases() {
        let original_path = dir.join(format!("{}.onnx", case.name));
        std::fs::write(&original_path, &case.bytes)?;
        let read = decode_onnx(&case.bytes, &original_path, None)?;
        let n: usize = case.shape.iter().product();
        let input: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0).collect();
        let input_path = dir.join(format!("{}.input.f32", case.name));
        write_f32(&input_path, &input)?;
        let mut add = |path: &Path, model: &Model, reference: Option<f64>| -> Result<()> {
            let expected = dir.join(format!(
                "{}.expected.f32",
                path.file_stem().unwrap_or_default().to_string_lossy()
            ));
            write_f32(&expected, &engine_output(model, &input, &case.shape)?)?;
            manifest_cases.push(json!({
                "model": path, "input": input_path, "shape": case.shape, "expected": expected,
                "tolerance": 1e-4,
                "reference": reference.map(|_| original_path.clone()),
                "reference_tolerance": reference,
            }));
            Ok(())
        };
        add(&original_path, &read.model, None)?;
        let (model, _) = fold_batch_norms(read.model)?;
        let mut one = case.shape.clone();
        one[0] = 1;
        let analysis = Analysis::new(&model, &one)?;
        let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {})?;
        let mut plans = vec![("full".to_string(), full_rank_plan(&analysis), Some(1e-4))];
        for &ratio in &case.ratios {
            plans.push((
                format!("x{ratio}"),
                plan_for_ratio(&analysis, &svds, ratio, Scope::All)?,
                None,
            ));
        }
        for (tag, plan, reference) in plans {
            let (fast, report): (Model, Report) = apply_plan(model.clone(), &analysis, &svds, &plan, None)?;
            if let Some(ratio) = tag.strip_prefix('x').and_then(|r| r.parse::<f64>().ok()) {
                let achieved = report.speedup();
                println!("{}: requested {ratio}x, theoretical {achieved:.3}x", case.name);
                if case.name == "resnet18" && (achieved / ratio - 1.0).abs() > 0.02 {
                    problems.push(format!(
                        "{}: theoretical {achieved:.3}x is not within 2% of {ratio}x",
                        case.name
                    ));
                }
            }
            let path = dir.join(format!("{}-{tag}.onnx", case.name));
            std::fs::write(&path, encode_onnx(&read.source, &fast, None)?.model)?;
            add(&path, &fast, reference)?;
            // The zoo's plain CNN families (the others hold Slice and other operators fine-tuning
            // refuses, by name, before training).
            let trainable = ["vgg_chain", "residual_block", "concat_branch"]
                .iter()
                .any(|f| case.name.starts_with(f));
            if tag == "x2" && trainable {
                // Fine-tuned weights go out through the same writer: a few updates on synthetic
                // images of the case's size, every layer training.
                let [_, c, h, w] = case.shape[..] else {
                    bail!("{}: not an image input", case.name)
                };
                let images = accnn_infer::data::synthetic::natural_noise(8, [c, h, w], 3);
                let options = accnn_train::FinetuneOptions {
                    steps: Some(2),
                    batch: 4,
                    scope: accnn_train::TrainScope::All,
                    threads: 1,
                    ..Default::default()
                };
                let tuned = accnn_train::Finetuner::new(fast.clone(), &model, &images, None, options)?
                    .run(&mut crate::bench_speedup::Quiet)?;
                let path = dir.join(format!("{}-x2-tuned.onnx", case.name));
                let bytes = encode_onnx(&read.source, &tuned, None)?.model;
                std::fs::write(&path, &bytes)?;
                // Trained weights are stored in the file's float type (f16 in some zoo models):
                // compare onnxruntime with accnn's engine on the weights as written.
                let written = decode_onnx(&bytes, &path, None)?.model;
                add(&path, &written, None)?;
            }
            if args.bench && case.name == "resnet18" && tag == "x2" {
                let (a, b) = (
                    Engine::new(&model, EngineOptions::default())?,
                    Engine::new(&fast, EngineOptions::default())?,
                );
                let x = candle_core::Tensor::from_slice(&input[..n / 2], one.as_slice(), &candle_core::Device::Cpu)?;
                let c = accnn_infer::timing::compare(&a, &b, &x, 3, 20)?;
                println!(
                    "accnn engine resnet18 x2 (batch 1): original {:.2} ms, accelerated {:.2} ms, speed-up {:.2}x (theoretical {:.3}x)",
                    c.a.median() * 1e3,
                    c.b.median() * 1e3,
                    c.speedup(),
                    report.speedup()
                );
                bench.push(json!({"name": "resnet18 x2 (batch 1)", "original": original_path, "accelerated": path, "shape": one}));
            }
        }
    }
    // Models written as new ONNX files (`--save-format onnx`): every operator sample ONNX opset 17
    // expresses, and the MXNet checkpoints of fixtures/ (a VGG-16 and a DAG), original and 2x.
    let standalone = standalone_cases(root, &dir)?;
    println!("onnx-check: {} models written as new ONNX files", standalone.len());
    manifest_cases.extend(standalone);
    // accnn's own onnxruntime binding (`--runtime onnxruntime`) on every model written, against
    // accnn's engine, with the library of the venv's wheel.
    let library = crate::onnxruntime::library(&args.python)?;
    problems.extend(check_ort_binding(&library, &manifest_cases)?);
    problems.extend(check_latency_in_onnxruntime(&library)?);
    let passed = run_python_check(
        root,
        &args.python,
        &dir,
        &json!({"cases": manifest_cases, "bench": bench}),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    if !passed {
        problems.push("some written models failed onnx.checker or disagree with onnxruntime".into());
    }
    if !problems.is_empty() {
        bail!("onnx-check: {}", problems.join("; "));
    }
    println!("onnx-check: every written model passes onnx.checker and matches onnxruntime; ResNet-18 meets its ratios");
    Ok(())
}

/// Manifest cases of models written by `encode_standalone` into `dir`, each with accnn's engine
/// output on a positive input (logarithms and square roots stay finite).
fn standalone_cases(root: &Path, dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut models: Vec<(String, Model, Vec<usize>)> = Vec::new();
    for (i, sample) in accnn_graph::ops::samples().into_iter().enumerate() {
        // onnxruntime's LRN takes odd window sizes only (ONNX allows even ones).
        let even_lrn = |n: &accnn_graph::Node| matches!(&n.op, accnn_graph::Op::Lrn(l) if l.size % 2 == 0);
        // With a scale whose output length is fractional, align_corners divides by the length
        // before rounding in ONNX's reference implementation (and accnn) but after in onnxruntime.
        let fractional_align = |n: &accnn_graph::Node| {
            use accnn_graph::ops::resize::{CoordinateTransform, ResizeTarget};
            matches!(&n.op, accnn_graph::Op::Resize(r) if r.coordinates == CoordinateTransform::AlignCorners
                && matches!(&r.target, ResizeTarget::Scales(s) if s.iter().any(|v| v.fract() != 0.0)))
        };
        let nodes = &sample.model.graph.nodes;
        if nodes.iter().any(even_lrn) || nodes.iter().any(fractional_align) {
            continue;
        }
        models.push((format!("sample{i:03}"), sample.model, sample.input_shape));
    }
    for (prefix, shape) in [("vgg16-mini", vec![2, 1, 32, 32]), ("mxnet/dag", vec![2, 3, 11, 9])] {
        let spec = root.join("fixtures").join(prefix);
        let model = accnn_graph::mxnet::load_checkpoint(&spec.to_string_lossy(), 1)?;
        let mut one = shape.clone();
        one[0] = 1;
        let (folded, _) = fold_batch_norms(model.clone())?;
        let analysis = Analysis::new(&folded, &one)?;
        let svds = factorise_all(&folded, &analysis, Default::default(), |_, _| {})?;
        let plan = plan_for_ratio(&analysis, &svds, 2.0, Scope::All)?;
        let (fast, _) = apply_plan(folded, &analysis, &svds, &plan, None)?;
        let name = prefix.replace('/', "-");
        models.push((name.clone(), model, shape.clone()));
        models.push((format!("{name}-x2"), fast, shape));
    }
    let mut cases = Vec::new();
    for (name, model, shape) in models {
        let written = match accnn_graph::onnx::encode_standalone(&model, &shape, None) {
            Ok(w) => w.model,
            // What opset 17 cannot express is refused by name (tested in accnn-reference).
            Err(e) if e.to_string().contains("opset 1") => continue,
            Err(e) => bail!("{name}: {e}"),
        };
        let path = dir.join(format!("standalone-{name}.onnx"));
        std::fs::write(&path, written)?;
        let n: usize = shape.iter().product();
        let input: Vec<f32> = (0..n).map(|i| 0.1 + (i * 7919 % 2003) as f32 / 2003.0).collect();
        let input_path = dir.join(format!("standalone-{name}.input.f32"));
        write_f32(&input_path, &input)?;
        let expected = dir.join(format!("standalone-{name}.expected.f32"));
        write_f32(&expected, &engine_output(&model, &input, &shape)?)?;
        cases.push(json!({
            "model": path, "input": input_path, "shape": shape, "expected": expected,
            "tolerance": 1e-4, "atol": 1e-5,
        }));
    }
    Ok(cases)
}

/// Runs every case of the manifest in onnxruntime through `accnn-ort`, loaded from `library`: the
/// outputs must be accnn's engine's (written as the case's expected file). One line per problem.
fn check_ort_binding(library: &Path, cases: &[serde_json::Value]) -> Result<Vec<String>> {
    let runtime = accnn_ort::OnnxRuntime::load(Some(library))?;
    let read_f32 = |path: &str| -> Result<Vec<f32>> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let mut problems = Vec::new();
    for case in cases {
        let text = |key: &str| case[key].as_str().unwrap_or_default().to_string();
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone())?;
        let (model, input, expected) = (text("model"), read_f32(&text("input"))?, read_f32(&text("expected"))?);
        let mut session = runtime.session(&std::fs::read(&model)?, 1)?;
        let got = session.run(&input, &shape)?.swap_remove(0).data;
        let norm = expected.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        let diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        let tolerance = case["tolerance"].as_f64().unwrap_or(1e-4) as f32;
        let atol = case["atol"].as_f64().unwrap_or(0.0) as f32;
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if got.len() != expected.len() || (diff / norm > tolerance && worst > atol) {
            problems.push(format!(
                "{model}: accnn-ort's onnxruntime output differs from accnn's engine (relative {:.2e}, {} vs {} values)",
                diff / norm,
                got.len(),
                expected.len()
            ));
        }
    }
    // The one-layer models `--cost latency --runtime onnxruntime` times: whole and as pairs.
    let mut chains = 0;
    for spec in &LayerSpec::samples() {
        for rank in [None, Some(1), Some(3)] {
            let model = layer_model(spec, rank);
            let shape = layer_input_shape(spec, 2);
            let input: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0)
                .collect();
            let expected = engine_output(&model, &input, &shape)?;
            let onnx = accnn_graph::onnx::encode_standalone(&model, &shape, None)?.model;
            let got = runtime.session(&onnx, 1)?.run(&input, &shape)?.swap_remove(0).data;
            let diff = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if got.len() != expected.len() || diff > 1e-4 {
                problems.push(format!(
                    "{spec:?} at rank {rank:?}: onnxruntime differs from accnn's engine by {diff}"
                ));
            }
            chains += 1;
        }
    }
    println!("accnn-ort: {chains} one-layer timing models (encode_standalone) run in onnxruntime as in accnn's engine");
    println!(
        "accnn-ort ({}): {} models run in onnxruntime, {} differ from accnn's engine",
        library.display(),
        cases.len(),
        problems.len()
    );
    Ok(problems)
}

/// `--cost latency --runtime onnxruntime` end to end on the seeded ResNet-18: ranks timed in
/// onnxruntime, and the new model measured faster there (else the library refuses it).
fn check_latency_in_onnxruntime(library: &Path) -> Result<Vec<String>> {
    use accnn::{Cost, LatencyOptions, LatencyRuntime, ModelInput, RankSource, Request, Scope};
    let ranks = RankSource::Ratio {
        ratio: 1.2,
        scope: Scope::All,
        align: 1,
        cost: Cost::Latency(LatencyOptions {
            batch: 1,
            engine: EngineOptions {
                threads: 2,
                ..Default::default()
            },
            runtime: LatencyRuntime::Onnxruntime {
                library: Some(library.to_path_buf()),
            },
            cache: None,
        }),
        objective: accnn::Objective::Energy,
    };
    let input = ModelInput::OnnxBytes {
        name: "resnet18 (seed 18)".into(),
        bytes: zoo::resnet18(18, 1000),
    };
    let started = std::time::Instant::now();
    let fast = accnn::accelerate(Request::new(input, ranks))?;
    let latency = fast.latency.context("a latency plan reports its latency")?;
    println!(
        "resnet18 --ratio 1.2 --cost latency --runtime onnxruntime: {:.2} -> {:.2} ms in {} ({:.3}x measured, {:.3}x fewer MACs, {:.1} s)",
        latency.original * 1e3,
        latency.measured * 1e3,
        latency.measured_in,
        latency.speedup(),
        fast.report.speedup(),
        started.elapsed().as_secs_f64()
    );
    let mut problems = Vec::new();
    if !latency.measured_in.starts_with("onnxruntime") {
        problems.push(format!("the latency plan was measured in {}", latency.measured_in));
    }
    if fast.report.speedup() <= 1.0 {
        problems.push("the latency plan in onnxruntime decomposed nothing".into());
    }
    Ok(problems)
}
