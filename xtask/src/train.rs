//! `cargo xtask train-fixture`: trains the VGG-16-topology fixture on Fashion-MNIST with candle's
//! autograd, folds BatchNorm into the convolutions and writes an MXNet checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use accnn_graph::mxnet::save_checkpoint;
use accnn_infer::data::{Preprocess, load_idx};
use anyhow::{Context, Result};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{BatchNorm, Conv2d, Linear, ModuleT, Optimizer, VarBuilder, VarMap};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::vgg::{self, VggArgs};

/// Fashion-MNIST pixel statistics (training set), and the padding to 32x32.
pub const PREPROCESS: Preprocess = Preprocess {
    mean: 0.2860,
    std: 0.3530,
    pad: 2,
};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Directory with the Fashion-MNIST IDX files.
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output prefix [default: fixtures/vgg16-mini; with --torch: fixtures/ARCH-fmnist.onnx].
    #[arg(long)]
    pub out: Option<String>,
    /// A Python with torch: train to convergence with `xtask/python/train_fixture.py` (SGD with
    /// Nesterov momentum, one-cycle cosine schedule, crop and flip augmentation), export ONNX, and
    /// check its accuracy with accnn's engine. --epochs, --batch, --lr and --seed apply.
    #[arg(long, value_name = "PY")]
    pub torch: Option<PathBuf>,
    /// With --torch: vgg16 (VGG-16's topology at a quarter of its widths) or resnet14 (the CIFAR
    /// ResNet of He et al., 14 layers, widths 16-32-64).
    #[arg(long, default_value = "vgg16", value_parser = ["vgg16", "resnet14"])]
    pub arch: String,
}

/// Trains with torch, then scores the exported ONNX file with accnn's engine on the test set: the
/// two must agree, or the export (or accnn's reading of it) is wrong.
fn run_torch(root: &Path, args: &TrainArgs, python: &Path) -> Result<()> {
    let out = args
        .out
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(format!("fixtures/{}-fmnist.onnx", args.arch)));
    let script = root.join("xtask/python/train_fixture.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .args(["--data", &args.data.to_string_lossy()])
        .args(["--out", &out.to_string_lossy()])
        .args(["--epochs", &args.epochs.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--lr", &args.lr.to_string()])
        .args(["--seed", &args.seed.to_string()]);
    match args.arch.as_str() {
        "vgg16" => cmd.args(["--arch", "vgg16"]),
        _ => cmd.args(["--arch", "resnet", "--depth", "14", "--widen", "1"]),
    };
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(status.success(), "{} failed", script.display());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", out.display())).context("the training summary")?)?;
    let torch_top1 = summary["test_top1"].as_f64().context("test_top1 in the summary")?;
    let file = accnn_plan::ModelFile::open(&out.to_string_lossy(), 1, Some(&[1, 32, 32]))?;
    let engine = accnn_infer::Engine::new(&file.model, Default::default())?;
    let test = load_idx(&args.data, "t10k", PREPROCESS, None)?;
    let scored = accnn_infer::eval::score(
        &accnn_infer::eval::predict(&engine, &test, 500, |_| {})?,
        accnn_infer::data::ImageSource::labels(&test),
    );
    println!(
        "{}: test top-1 {:.2}% in torch, {:.2}% in accnn's engine",
        out.display(),
        100.0 * torch_top1,
        100.0 * scored.top1
    );
    anyhow::ensure!(
        (scored.top1 - torch_top1).abs() < 1e-3,
        "accnn's engine disagrees with torch on the exported model"
    );
    Ok(())
}

struct Net {
    convs: Vec<(Conv2d, BatchNorm)>,
    /// Number of convolutions per stage, a 2x2 max-pool after each stage.
    stages: Vec<usize>,
    fcs: Vec<Linear>,
}

impl Net {
    fn new(vb: &VarBuilder, widths: &[(usize, usize)], fc: usize, classes: usize) -> Result<Self> {
        let mut convs = Vec::new();
        let mut cin = 1;
        for (s, &(width, n)) in widths.iter().enumerate() {
            for i in 1..=n {
                let name = format!("conv{}_{i}", s + 1);
                let cfg = candle_nn::Conv2dConfig {
                    padding: 1,
                    ..Default::default()
                };
                let conv = candle_nn::conv2d(cin, width, 3, cfg, vb.pp(&name))?;
                let bn = candle_nn::batch_norm(
                    width,
                    candle_nn::BatchNormConfig {
                        eps: 1e-5,
                        ..Default::default()
                    },
                    vb.pp(format!("{name}_bn")),
                )?;
                convs.push((conv, bn));
                cin = width;
            }
        }
        let fcs = vec![
            candle_nn::linear(cin, fc, vb.pp("fc6"))?,
            candle_nn::linear(fc, fc, vb.pp("fc7"))?,
            candle_nn::linear(fc, classes, vb.pp("fc8"))?,
        ];
        Ok(Net {
            convs,
            stages: widths.iter().map(|w| w.1).collect(),
            fcs,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        let mut k = 0;
        for &n in &self.stages {
            for _ in 0..n {
                let (conv, bn) = &self.convs[k];
                x = bn.forward_t(&conv.forward_t(&x, train)?, train)?.relu()?;
                k += 1;
            }
            x = x.max_pool2d(2)?;
        }
        x = x.flatten_from(1)?;
        x = self.fcs[0].forward_t(&x, train)?.relu()?;
        x = self.fcs[1].forward_t(&x, train)?.relu()?;
        Ok(self.fcs[2].forward_t(&x, train)?)
    }
}

fn accuracy(net: &Net, images: &[f32], labels: &[u32], shape: [usize; 4], batch: usize) -> Result<f64> {
    let per = shape[1] * shape[2] * shape[3];
    let mut correct = 0usize;
    for start in (0..labels.len()).step_by(batch) {
        let end = (start + batch).min(labels.len());
        let x = Tensor::from_slice(
            &images[start * per..end * per],
            (end - start, shape[1], shape[2], shape[3]),
            &Device::Cpu,
        )?;
        let pred = net.forward(&x, false)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += pred.iter().zip(&labels[start..end]).filter(|(p, l)| p == l).count();
    }
    Ok(correct as f64 / labels.len() as f64)
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

pub fn run(root: &Path, args: &TrainArgs) -> Result<()> {
    if let Some(python) = &args.torch {
        return run_torch(root, args, python);
    }
    let train = load_idx(&args.data, "train", PREPROCESS, None)
        .context("training set (apt-get install -y dataset-fashion-mnist)")?;
    let test = load_idx(&args.data, "t10k", PREPROCESS, None)?;
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let spec = VggArgs::mini(String::new());
    let widths: Vec<(usize, usize)> = vgg::STAGES
        .iter()
        .map(|&(w, n)| ((w / spec.width_divisor).max(1), n))
        .collect();
    let net = Net::new(&vb, &widths, spec.fc_width, spec.classes)?;
    // candle cannot seed its CPU generator: initialise from our own seeded one (He-normal weights,
    // zero biases; BatchNorm keeps gamma 1, beta 0), so that a run can be repeated.
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map poisoned"))?
        .clone();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let normal = rand_distr::Normal::new(0f32, (2.0 / fan_in as f32).sqrt())?;
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| rand_distr::Distribution::sample(&normal, &mut rng))
                .collect();
            var.set(&Tensor::from_vec(values, dims, &device)?)?;
        } else if name.ends_with("bias") && !name.contains("_bn") {
            var.set(&var.zeros_like()?)?;
        }
    }
    let steps_per_epoch = train.len().div_ceil(args.batch);
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: args.lr,
            weight_decay: 5e-4,
            ..Default::default()
        },
    )?;
    let per = 32 * 32;
    let started = Instant::now();
    for epoch in 0..args.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let mut total_loss = 0.0;
        for (step, chunk) in order.chunks(args.batch).enumerate() {
            // Cosine decay over the whole run.
            let progress = (epoch * steps_per_epoch + step) as f64 / (args.epochs * steps_per_epoch) as f64;
            opt.set_learning_rate(args.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let mut xs = Vec::with_capacity(chunk.len() * per);
            let mut ys = Vec::with_capacity(chunk.len());
            for &i in chunk {
                xs.extend_from_slice(&train.images[i * per..(i + 1) * per]);
                ys.push(train.labels[i]);
            }
            let x = Tensor::from_vec(xs, (chunk.len(), 1, 32, 32), &device)?;
            let y = Tensor::from_vec(ys, chunk.len(), &device)?;
            let loss = candle_nn::loss::cross_entropy(&net.forward(&x, true)?, &y)?;
            opt.backward_step(&loss)?;
            total_loss += loss.to_scalar::<f32>()? as f64;
            if step % 100 == 0 {
                eprintln!(
                    "epoch {epoch} step {step}/{steps_per_epoch} loss {:.4} ({:.0} s)",
                    total_loss / (step + 1) as f64,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let acc = accuracy(&net, &test.images, &test.labels, test.shape, 500)?;
        eprintln!(
            "epoch {epoch}: test accuracy {:.2}% ({:.0} s)",
            100.0 * acc,
            started.elapsed().as_secs_f64()
        );
    }
    // Fold each BatchNorm into its convolution: w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta.
    let mut model = vgg::build(&spec);
    let mut k = 0;
    for (s, &(_, n)) in widths.iter().enumerate() {
        for i in 1..=n {
            let name = format!("conv{}_{i}", s + 1);
            let (conv, bn) = &net.convs[k];
            k += 1;
            let (gamma, beta) = bn.weight_and_bias().context("affine batch norm")?;
            let (gamma, beta, mean, var) = (
                to_vec(gamma)?,
                to_vec(beta)?,
                to_vec(bn.running_mean())?,
                to_vec(bn.running_var())?,
            );
            let mut w = to_vec(conv.weight())?;
            let b = to_vec(conv.bias().context("conv bias")?)?;
            let per_filter = w.len() / gamma.len();
            let mut bias = vec![0f32; gamma.len()];
            for f in 0..gamma.len() {
                let scale = gamma[f] / (var[f] + bn.eps() as f32).sqrt();
                w[f * per_filter..(f + 1) * per_filter]
                    .iter_mut()
                    .for_each(|v| *v *= scale);
                bias[f] = (b[f] - mean[f]) * scale + beta[f];
            }
            model
                .args
                .get_mut(&format!("{name}_weight"))
                .context("weight")?
                .data_mut()
                .copy_from_slice(&w);
            model
                .args
                .get_mut(&format!("{name}_bias"))
                .context("bias")?
                .data_mut()
                .copy_from_slice(&bias);
        }
    }
    for (i, fc) in net.fcs.iter().enumerate() {
        let name = format!("fc{}", i + 6);
        model
            .args
            .get_mut(&format!("{name}_weight"))
            .context("weight")?
            .data_mut()
            .copy_from_slice(&to_vec(fc.weight())?);
        model
            .args
            .get_mut(&format!("{name}_bias"))
            .context("bias")?
            .data_mut()
            .copy_from_slice(&to_vec(fc.bias().context("fc bias")?)?);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("fixtures/vgg16-mini").to_string_lossy().into_owned());
    let paths = save_checkpoint(&model, &out, 1)?;
    println!(
        "wrote {} and {} after {:.0} s",
        paths.symbol.display(),
        paths.params.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
