//! `cargo xtask real-models`: trained CNNs as users bring them, not models this project wrote: the
//! model-zoo architectures in the onnx wheel (`backend/test/data/light`, weights made by
//! `ConstantOfShape`) and PaddleOCR's three models from the `rapidocr-onnxruntime` wheel (weights
//! as `Constant` nodes, paddle2onnx shape subgraphs, symbolic input sizes). For each: accnn's engine
//! runs the whole original model as onnxruntime does; `--ratio 1` writes a model that onnx's full
//! checker accepts and that computes the original's outputs in onnxruntime; `--ratio 2` writes one
//! that passes the checker and runs there, its output error printed.

mod document;
mod measure;

use crate::onnx_check::{engine_output, run_python_check, write_f32};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use accnn::{ModelInput, RankSource, Request};
use anyhow::{Context, Result, bail};
use serde_json::json;

/// The wheel the PaddleOCR models come from, pinned.
const RAPIDOCR: &str = "rapidocr-onnxruntime==1.4.4";

#[derive(clap::Args, Debug)]
pub struct RealModelsArgs {
    /// A Python with onnx and onnxruntime (and pip, to fetch the rapidocr wheel).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Where downloaded models are kept between runs.
    #[arg(long, default_value = "target/real-models")]
    pub dir: PathBuf,
    /// Only models whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// A Python with torch and torchvision: also export torchvision's classifiers at opsets 13
    /// and 17 (`xtask/python/export_torchvision.py`, once, into `DIR/torchvision`) and test them.
    /// torch is several GB: give it its own venv; CI does not.
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// Speed-up ratios to write besides 1 (the exact rewrite).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub ratios: Vec<f64>,
    /// Instead of the conformance run, measure the OCR models (trained) and, with --torch,
    /// torchvision's (random weights: speed only) at 1.5x and 2x, data-free and calibrated, and at 1.5x and 1.1x of
    /// measured latency: output error and agreement on held-out inputs, speed-up in accnn's engine
    /// and in onnxruntime. Writes the table to --table.
    #[arg(long)]
    pub measure: bool,
    /// Calibration images (synthetic pages) per calibrated variant, with --measure.
    #[arg(long, default_value_t = 64)]
    pub calibration_images: usize,
    /// Where --measure writes its Markdown table.
    #[arg(long, default_value = "results/real-models.md")]
    pub table: PathBuf,
    /// With --measure, only the variants whose label contains one of these (e.g. `data-free`)
    /// [default: every variant].
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
}

struct RealModel {
    name: String,
    path: PathBuf,
    /// `C, H, W` for models whose input size is symbolic.
    data_shape: Option<Vec<usize>>,
    /// For OCR models, the per-channel mean and deviation of their preprocessing: their input is
    /// then a page of dark glyph blocks on white (a pattern would leave a detector's map empty,
    /// its outputs all ~1e-10, and relative errors meaningless).
    document: Option<document::Normalisation>,
}

fn python_output(python: &Path, code: &str) -> Result<String> {
    let out = Command::new(python)
        .args(["-c", code])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", python.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The models of the test set, downloading the rapidocr wheel once.
fn collect(args: &RealModelsArgs) -> Result<Vec<RealModel>> {
    let onnx_dir = python_output(&args.python, "import onnx, os; print(os.path.dirname(onnx.__file__))")?;
    let light = Path::new(&onnx_dir).join("backend/test/data/light");
    let mut models = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&light)
        .with_context(|| format!("cannot list {}", light.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        models.push(RealModel {
            name,
            path,
            data_shape: None,
            document: None,
        });
    }
    let ocr = args.dir.join("rapidocr");
    let models_dir = ocr.join("rapidocr_onnxruntime/models");
    if !models_dir.is_dir() {
        std::fs::create_dir_all(&ocr)?;
        let status = Command::new(&args.python)
            .args(["-m", "pip", "download", "--quiet", "--no-deps", RAPIDOCR, "-d"])
            .arg(&ocr)
            .status()
            .context("cannot run pip")?;
        if !status.success() {
            bail!("pip could not download {RAPIDOCR}");
        }
        let unzip = format!(
            "import glob, zipfile; z = zipfile.ZipFile(glob.glob({:?} + '/*.whl')[0]); \
             [z.extract(n, {:?}) for n in z.namelist() if n.endswith('.onnx')]",
            ocr.display().to_string(),
            ocr.display().to_string()
        );
        python_output(&args.python, &unzip)?;
    }
    // PaddleOCR's preprocessing: the recogniser and classifier scale to [-1, 1], the detector
    // normalises by ImageNet's statistics.
    let half = ([0.5; 3], [0.5; 3]);
    let imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    for (file, shape, norm) in [
        ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [3, 48, 192], half),
        ("ch_PP-OCRv4_rec_infer.onnx", [3, 48, 320], half),
        ("ch_PP-OCRv4_det_infer.onnx", [3, 320, 320], imagenet),
    ] {
        models.push(RealModel {
            name: file.trim_end_matches(".onnx").to_string(),
            path: models_dir.join(file),
            data_shape: Some(shape.to_vec()),
            document: Some(norm),
        });
    }
    if let Some(torch) = &args.torch {
        let out = args.dir.join("torchvision");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/export_torchvision.py");
        let status = Command::new(torch)
            .arg(&script)
            .arg(&out)
            .args(["13", "17"])
            .status()
            .with_context(|| format!("cannot run {}", torch.display()))?;
        if !status.success() {
            bail!("{} could not export torchvision's models", script.display());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
            .with_context(|| format!("cannot list {}", out.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        files.sort();
        for path in files {
            models.push(RealModel {
                name: path.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
                path,
                data_shape: None,
                document: None,
            });
        }
    }
    if !args.only.is_empty() {
        models.retain(|m| args.only.iter().any(|o| m.name.contains(o.as_str())));
    }
    Ok(models)
}

pub fn run(root: &Path, args: &RealModelsArgs) -> Result<()> {
    let models = collect(args)?;
    if args.measure {
        let cache = args.dir.join("latency.json");
        return measure::run(
            root,
            &args.python,
            &cache,
            &models,
            args.calibration_images,
            &args.table,
            &args.variants,
        );
    }
    let dir = std::env::temp_dir().join(format!("accnn-real-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cases = Vec::new();
    for m in &models {
        let started = Instant::now();
        let loaded = accnn::load_model(
            ModelInput::file(m.path.display().to_string()),
            m.data_shape.as_deref(),
            true,
        )
        .with_context(|| format!("{}: accnn cannot read it", m.name))?;
        let shape = loaded.analysis.data_shape.clone();
        let n: usize = shape.iter().product();
        let input: Vec<f32> = match m.document {
            Some(norm) => document::regular_page(&shape, norm),
            None => (0..n).map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0).collect(),
        };
        let input_path = dir.join(format!("{}.input.f32", m.name));
        write_f32(&input_path, &input)?;
        let expected = dir.join(format!("{}.expected.f32", m.name));
        write_f32(&expected, &engine_output(&loaded.model, &input, &shape)?)?;
        // The original as shipped may not pass today's full checker; accnn's engine must match it.
        cases.push(json!({
            "model": m.path, "input": input_path, "shape": shape, "expected": expected,
            "tolerance": 1e-4, "check": false,
        }));
        let layers = loaded.analysis.layers.len();
        let skipped = loaded.analysis.skipped.len();
        drop(loaded);
        let mut line = format!("{}: {layers} layers ({skipped} skipped)", m.name);
        for ratio in std::iter::once(1.0).chain(args.ratios.iter().copied()) {
            let out = dir.join(format!("{}-x{ratio}.onnx", m.name));
            let mut request = Request::new(ModelInput::file(m.path.display().to_string()), RankSource::ratio(ratio))
                .with_output(out.display().to_string());
            if let Some(s) = &m.data_shape {
                request = request.with_data_shape(s);
            }
            let fast = accnn::accelerate(request).with_context(|| format!("{}: --ratio {ratio}", m.name))?;
            let expected = dir.join(format!("{}-x{ratio}.expected.f32", m.name));
            write_f32(&expected, &engine_output(&fast.model, &input, &shape)?)?;
            let exact = ratio == 1.0;
            cases.push(json!({
                "model": out, "input": input_path, "shape": shape, "expected": expected,
                "tolerance": 1e-4, "atol": 1e-6, "reference": m.path,
                "reference_tolerance": if exact { Some(1e-5) } else { None },
            }));
            match &fast.fidelity {
                Ok(f) => {
                    line += &format!(
                        "; x{ratio}: theoretical {:.2}x, engine check {:.2}% error, top-1 {:.0}%",
                        fast.report.speedup(),
                        100.0 * f.relative_error,
                        100.0 * f.top1_agreement
                    )
                }
                Err(why) => bail!("{}: --ratio {ratio}: the output check did not run: {why}", m.name),
            }
        }
        line += &format!(" ({:.1} s)", started.elapsed().as_secs_f64());
        println!("{line}");
    }
    let passed = run_python_check(root, &args.python, &dir, &json!({ "cases": cases }))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !passed {
        bail!("real-models: some models disagree with onnxruntime or fail onnx.checker");
    }
    println!(
        "real-models: all {} models read, run in accnn's engine as in onnxruntime, and rewritten into checker-valid models",
        models.len()
    );
    Ok(())
}
