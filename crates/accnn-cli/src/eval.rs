//! `accnn eval`: accuracy on labelled data, and agreement with a reference model.

use std::path::PathBuf;

use accnn_infer::Engine;
use accnn_infer::data::{ImageSource, Preprocess, is_image_folder, load_images};
use accnn_infer::eval::{agreement, predict, predict_with, score};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{DataSource, open_images};
use crate::flags::ModelArgs;
use crate::runtime_args::{Runtime, ort_session};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Labelled images: a directory of MNIST/Fashion-MNIST IDX files, a .npz with x (float32
    /// N,C,H,W, preprocessed) and y (labels), or a folder of class subfolders of JPEG/PNG images
    /// (classes numbered in name order, as torchvision's ImageFolder does).
    #[arg(long, value_name = "DATA")]
    pub data: PathBuf,
    /// Which IDX files to read from a directory: t10k (test) or train.
    #[arg(long, default_value = "t10k")]
    pub split: String,
    /// Also run this model and report how often its best class agrees.
    #[arg(long = "ref", value_name = "PREFIX|FILE.onnx")]
    pub reference: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub ref_epoch: u32,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Use at most this many images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub preprocess: crate::data::PreprocessArgs,
    #[command(flatten)]
    pub engine: crate::engine_args::EngineArgs,
    #[command(flatten)]
    pub runtime: crate::runtime_args::RuntimeArgs,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn open_data(args: &EvalArgs, data_shape: &[usize]) -> Result<Box<dyn ImageSource>> {
    let source = DataSource {
        path: args.data.clone(),
        split: args.split.clone(),
        limit: args.limit,
    };
    open_images(&source, &args.preprocess, data_shape).map_err(|e| anyhow::anyhow!("--data {e:#}"))
}

/// The model at `--data-shape`, at the shape it declares, or, when it leaves its input size symbolic,
/// at the size of the IDX or `.npz` images in `--data`.
fn load_for_data(args: &EvalArgs, model: &ModelArgs) -> Result<accnn::LoadedModel> {
    let given = model.shape()?;
    match accnn::load_model(model.input()?, given.as_deref(), false) {
        Err(accnn::Error::SymbolicInput { .. }) if given.is_none() && !is_image_folder(&args.data) => {
            let pre = Preprocess {
                mean: 0.0,
                std: 1.0,
                pad: args.preprocess.pad,
            };
            let first =
                load_images(&args.data, &args.split, pre, Some(1)).map_err(|e| anyhow::anyhow!("--data {e:#}"))?;
            let shape = first.image_shape().to_vec();
            let loaded = crate::loaded(accnn::load_model(model.input()?, Some(&shape), false))?;
            say!("{}: input size taken from the data: {shape:?}", loaded.name)?;
            Ok(loaded)
        }
        read => crate::loaded(read),
    }
}

/// A bar counting `total` items of `name`'s work, as `eval` and the Python package show it.
pub fn count_bar(total: usize, name: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos}/{len} {wide_bar} {elapsed}").expect("static template"),
    );
    bar.set_message(name.to_string());
    bar
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let _held = crate::hold_freed_memory();
    // The runtime first: nothing is read or run when it cannot be had.
    let ort = match args.runtime.runtimes().as_slice() {
        [Runtime::Accnn] => None,
        [Runtime::Onnxruntime] => args.runtime.onnxruntime()?,
        _ => bail!("--runtime: eval runs in one runtime, accnn or onnxruntime"),
    };
    let model = load_for_data(args, &args.model)?;
    let data = open_data(args, &model.analysis.data_shape)?;
    let data = data.as_ref();
    if data.count() == 0 {
        bail!("--data {}: no images", args.data.display());
    }
    let options = args.engine.options();
    // The five best classes of every image, in the runtime asked for.
    let run_one = |loaded: &accnn::LoadedModel| -> Result<Vec<Vec<u32>>> {
        let name = &loaded.name;
        let bar = count_bar(data.count(), name);
        let predictions = match &ort {
            None => {
                let engine = Engine::new(&loaded.model, options)?;
                predict(&engine, data, args.batch, |n| bar.inc(n as u64))?
            }
            Some(runtime) => {
                let mut session = ort_session(runtime, loaded, args.engine.threads)?;
                predict_with(
                    data,
                    args.batch,
                    |n| bar.inc(n as u64),
                    |images, shape| -> Result<Vec<f32>> {
                        let mut outputs = session.run(&images, &shape)?;
                        Ok(outputs.swap_remove(0).data)
                    },
                )?
            }
        };
        bar.finish_and_clear();
        Ok(predictions)
    };
    let predictions = run_one(&model).with_context(|| format!("running '{}'", model.name))?;
    let scores = score(&predictions, data.labels());
    let mut line = format!(
        "{}: {} images, top-1 {:.2}%",
        model.name,
        scores.count,
        100.0 * scores.top1
    );
    if let Some(t5) = scores.top5 {
        line += &format!(", top-5 {:.2}%", 100.0 * t5);
    }
    if ort.is_some() {
        line += " (onnxruntime)";
    }
    say!("{line}")?;
    let mut json = format!(
        "{{\"model\": {:?}, \"data\": {:?}, \"images\": {}, \"top1\": {:.6}, \"top5\": {}",
        model.name,
        args.data.display().to_string(),
        scores.count,
        scores.top1,
        scores.top5.map_or("null".to_string(), |v| format!("{v:.6}"))
    );
    if let Some(reference) = &args.reference {
        let ref_args = ModelArgs {
            model: Some(reference.clone()),
            load_epoch: args.ref_epoch,
            data_shape: args.model.data_shape.clone(),
        };
        let other = load_for_data(args, &ref_args)?;
        let ref_predictions = run_one(&other).with_context(|| format!("running '{reference}'"))?;
        let ref_scores = score(&ref_predictions, data.labels());
        let agree = agreement(&predictions, &ref_predictions);
        say!(
            "{reference}: top-1 {:.2}%; top-1 agreement with {}: {:.2}%",
            100.0 * ref_scores.top1,
            model.name,
            100.0 * agree
        )?;
        json += &format!(
            ", \"ref\": {reference:?}, \"ref_top1\": {:.6}, \"agreement\": {agree:.6}",
            ref_scores.top1
        );
    }
    json += "}\n";
    if let Some(path) = &args.json {
        accnn_graph::io::write_files_atomically(&[(path.as_path(), json.as_bytes())])?;
        say!("wrote {}", path.display())?;
    }
    Ok(())
}
