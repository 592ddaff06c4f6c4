//! `accnn finetune`: train a decomposed model back towards its original (distillation).

use std::path::PathBuf;

use accnn::{FinetuneProgress, FinetuneRequest, ImageFiles, ModelInput};
use accnn_infer::data::is_image_folder;
use accnn_train::{EpochReport, FinetuneOptions, LossWeights, Optimizer, Schedule, StepReport, TrainScope};
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::flags::ModelArgs;

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The student: the decomposed model to train (`-m`).
    #[command(flatten)]
    pub model: ModelArgs,
    /// The teacher: the original model the student was made from.
    #[arg(long, value_name = "PREFIX|FILE.onnx")]
    pub teacher: String,
    #[arg(long, default_value_t = 1)]
    pub teacher_epoch: u32,
    /// Training images (labels optional: see --alpha): an IDX directory, a .npz, or a folder of
    /// class subfolders of JPEG/PNG images.
    #[arg(long, value_name = "DATA")]
    pub data: PathBuf,
    /// Which IDX files of --data to read: train or t10k.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Use at most this many training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Labelled validation images: top-1 after every epoch; --save-model gets the best epoch.
    #[arg(long, value_name = "DATA")]
    pub val: Option<PathBuf>,
    #[arg(long, default_value = "t10k")]
    pub val_split: String,
    #[arg(long)]
    pub val_limit: Option<usize>,
    #[command(flatten)]
    pub preprocess: crate::data::PreprocessArgs,
    /// Where the tuned model goes, in the student's format; the last checkpoint goes beside it
    /// (tuned.onnx → tuned.last.onnx and tuned.last.state).
    #[arg(long, value_name = "PREFIX|FILE.onnx")]
    pub save_model: String,
    /// Continue the interrupted run that wrote --save-model, from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1, conflicts_with = "steps")]
    pub epochs: usize,
    /// Train for this many updates instead of whole epochs.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Learning rate (default: 0.01 for sgd, 0.001 for adamw).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    pub optimizer: OptimizerArg,
    /// SGD's momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Scale the gradients down to this global norm when above it (0: no clipping).
    #[arg(long, default_value_t = 5.0)]
    pub max_grad_norm: f64,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// --schedule step: multiply the rate by --gamma every this many updates (default: an epoch).
    #[arg(long)]
    pub step_every: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Softening of both models' outputs in the distillation loss.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Share of cross-entropy on the data's labels in the loss (0: distillation only, for
    /// unlabelled images).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Weight of a loss on the decomposed layers' responses against the original layers'.
    #[arg(long, default_value_t = 0.0)]
    pub feature_weight: f64,
    /// Which weights train: the decomposed layers only, or every convolution and FC layer.
    #[arg(long = "train", value_enum, default_value_t = ScopeArg::Decomposed)]
    pub scope: ScopeArg,
    /// Random resized crops and flips (default: on for image folders, off for IDX and .npz).
    #[arg(long, value_enum, default_value_t = AugmentArg::Auto)]
    pub augment: AugmentArg,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads of the teacher and of validation (0: every core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where to train: cpu, cuda (GPU 0) or cuda:N (a build made by `cargo xtask build-cuda`).
    #[arg(long, default_value = "cpu", value_parser = |t: &str| accnn_infer::Target::parse(t).map_err(|e| e.to_string()))]
    pub device: accnn_infer::Target,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Adamw,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScheduleArg {
    Cosine,
    Step,
    Constant,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScopeArg {
    Decomposed,
    All,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AugmentArg {
    Auto,
    On,
    Off,
}

impl FinetuneArgs {
    /// The flags as one checked request.
    fn request(&self) -> Result<FinetuneRequest> {
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if self.epochs == 0 && self.steps.is_none() {
            bail!("--epochs must be at least 1");
        }
        if self.steps == Some(0) {
            bail!("--steps must be at least 1");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!("--temperature must be positive");
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!("--alpha must be between 0 and 1");
        }
        if !(self.feature_weight.is_finite() && self.feature_weight >= 0.0) {
            bail!("--feature-weight must be 0 or more");
        }
        let optimizer = match self.optimizer {
            OptimizerArg::Sgd => Optimizer::Sgd {
                momentum: self.momentum,
            },
            OptimizerArg::Adamw => Optimizer::adamw(),
        };
        let lr = self.lr.unwrap_or(match self.optimizer {
            OptimizerArg::Sgd => 0.01,
            OptimizerArg::Adamw => 1e-3,
        });
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr must be positive");
        }
        let schedule = match self.schedule {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Step => Schedule::Step {
                // 0 stands for "an epoch"; resolved by the trainer's step count below.
                every: self.step_every.unwrap_or(0),
                gamma: self.gamma,
            },
        };
        let augment = match self.augment {
            AugmentArg::On => true,
            AugmentArg::Off => false,
            AugmentArg::Auto => is_image_folder(&self.data),
        };
        let files = |path: &PathBuf, split: &str, limit: Option<usize>| ImageFiles {
            path: path.clone(),
            split: split.to_string(),
            limit,
            image: self.preprocess.options(),
        };
        Ok(FinetuneRequest {
            student: self.model.input()?,
            teacher: ModelInput::File {
                spec: self.teacher.clone(),
                epoch: self.teacher_epoch,
            },
            data_shape: self.model.shape()?,
            data: files(&self.data, &self.split, self.limit),
            val: self.val.as_ref().map(|v| files(v, &self.val_split, self.val_limit)),
            options: FinetuneOptions {
                epochs: self.epochs,
                steps: self.steps,
                batch: self.batch,
                lr,
                optimizer,
                schedule,
                weight_decay: self.weight_decay,
                max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
                loss: LossWeights {
                    temperature: self.temperature,
                    alpha: self.alpha,
                    feature: self.feature_weight,
                },
                scope: match self.scope {
                    ScopeArg::Decomposed => TrainScope::Decomposed,
                    ScopeArg::All => TrainScope::All,
                },
                augment,
                seed: self.seed,
                threads: self.threads,
                target: self.device,
            },
            output: self.save_model.clone(),
            resume: self.resume,
        })
    }
}

/// A progress bar with the loss and images per second; a line per epoch.
struct Bar {
    bar: ProgressBar,
}

impl FinetuneProgress for Bar {
    fn start(&mut self, total_steps: usize, first_step: usize) {
        self.bar.set_length(total_steps as u64);
        self.bar.set_position(first_step as u64);
    }

    fn step(&mut self, report: &StepReport) {
        self.bar.set_position(report.step as u64);
        self.bar.set_message(format!(
            "epoch {} · loss {:.4} · |grad| {:.3} · lr {:.2e} · {:.0} img/s",
            report.epoch, report.loss, report.grad_norm, report.lr, report.images_per_second
        ));
    }

    fn epoch(&mut self, report: &EpochReport) {
        let val = report
            .val_top1
            .map_or(String::new(), |t| format!(", validation top-1 {:.2}%", 100.0 * t));
        let line = format!(
            "epoch {} (step {}/{}): mean loss {:.4}{val}, {:.1} s",
            report.epoch, report.step, report.total_steps, report.loss, report.seconds
        );
        // A hidden bar (not a terminal) prints nothing, a log should still show each epoch.
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

pub fn run(args: &FinetuneArgs) -> Result<()> {
    let request = args.request()?;
    // Every step frees and reallocates the same large buffers (activations, im2col columns).
    let _held = crate::hold_freed_memory();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} {wide_bar} {elapsed}<{eta} {msg}")
            .expect("static template"),
    );
    let mut progress = Bar { bar };
    let done = accnn::finetune(request, &mut progress).map_err(crate::errors::explain);
    progress.bar.finish_and_clear();
    let done = done?;
    if done.resumed_at > 0 {
        say!("resumed at step {}", done.resumed_at)?;
    }
    if let Some(top1) = done.initial_top1 {
        say!("validation top-1 before fine-tuning: {:.2}%", 100.0 * top1)?;
    }
    for e in &done.epochs {
        let val = e
            .val_top1
            .map_or(String::new(), |t| format!(", validation top-1 {:.2}%", 100.0 * t));
        say!("epoch {}: mean loss {:.4}{val}, {:.1} s", e.epoch, e.loss, e.seconds)?;
    }
    if let Some(best) = done.best_top1 {
        say!(
            "best validation top-1: {:.2}% (written to {})",
            100.0 * best,
            args.save_model
        )?;
    }
    say!("fine-tuning took {:.1} s", done.seconds)?;
    for path in &done.written {
        say!("wrote {}", path.display())?;
    }
    Ok(())
}
