//! The training loop: shuffled batches, the teacher's outputs, the loss, the update, validation.

use std::collections::BTreeMap;
use std::time::Instant;

use accnn_graph::{Entry, Model, Node, Op};
use accnn_infer::data::ImageSource;
use accnn_infer::data::synthetic::SeededRng;
use accnn_infer::eval::{predict, score};
use accnn_infer::{Engine, EngineOptions, Target};
use candle_core::{DType, Device, Tensor};

use crate::loss::LossWeights;
use crate::optim::{Optimizer, Schedule, Updater};
use crate::student::{Student, logits_entry};
use crate::{TrainError, augment};

/// Which weights train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainScope {
    /// The layers the decomposition made (those the teacher does not have); the rest stay
    /// bit-identical.
    Decomposed,
    /// Every convolution and fully-connected layer.
    All,
}

/// How long and how to train.
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    /// Passes over the data (ignored when `steps` is set).
    pub epochs: usize,
    /// Updates in all, instead of `epochs`.
    pub steps: Option<usize>,
    pub batch: usize,
    pub lr: f64,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub weight_decay: f64,
    /// Gradients are scaled down to this global norm when above it (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    pub loss: LossWeights,
    pub scope: TrainScope,
    /// Random resized crops and flips of the training images.
    pub augment: bool,
    /// Seeds the shuffling and the augmentation: the same seed, data and options give the same
    /// weights on the CPU.
    pub seed: u64,
    /// Worker threads of the teacher and of validation (0: every core).
    pub threads: usize,
    /// Where the student trains and the teacher runs (CUDA needs the `cuda` build).
    pub target: Target,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            epochs: 1,
            steps: None,
            batch: 64,
            lr: 0.01,
            optimizer: Optimizer::sgd(),
            schedule: Schedule::Cosine,
            weight_decay: 5e-4,
            max_grad_norm: Some(5.0),
            loss: LossWeights::default(),
            scope: TrainScope::Decomposed,
            augment: false,
            seed: 1,
            threads: 0,
            target: Target::Cpu,
        }
    }
}

/// One update, as reported to the observer.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Updates done, this one included.
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    /// The gradients' global norm before clipping.
    pub grad_norm: f64,
    /// Images trained on per second, over the run so far.
    pub images_per_second: f64,
}

/// The end of an epoch (or of the run).
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// Epochs completed (1-based; the last one may be partial when training by steps).
    pub epoch: usize,
    pub step: usize,
    pub total_steps: usize,
    /// Mean loss over the epoch's updates.
    pub loss: f64,
    /// Top-1 on the validation data, when there is some.
    pub val_top1: Option<f64>,
    pub seconds: f64,
}

/// What the caller does with progress: show it, and write checkpoints.
pub trait TrainObserver {
    fn step(&mut self, _report: &StepReport) {}
    /// Called at the end of every epoch and of the run with the model as trained so far and the
    /// optimiser's state; an error stops training.
    fn epoch(&mut self, report: &EpochReport, model: &Model, state: &TrainState) -> Result<(), TrainError>;
}

/// Where a run stands: enough to resume it exactly.
#[derive(Clone, Debug)]
pub struct TrainState {
    /// Updates done.
    pub step: usize,
    /// The optimiser's moments by name.
    pub moments: BTreeMap<String, Tensor>,
    pub updates: usize,
    /// The best validation top-1 so far.
    pub best_top1: Option<f64>,
}

/// A student, its teacher and the data, ready to train.
pub struct Finetuner<'a> {
    model: Model,
    device: Device,
    student: Student,
    teacher: Engine,
    teacher_heads: Vec<Entry>,
    /// (student entry, teacher entry) of every decomposed layer's response, for the feature loss.
    taps: Vec<Entry>,
    data: &'a dyn ImageSource,
    val: Option<&'a dyn ImageSource>,
    options: FinetuneOptions,
    updater: Updater,
    /// The teacher's logits per training image, when they never change (no augmentation, no
    /// feature loss).
    cache: Option<Vec<Option<Vec<f32>>>>,
    start_step: usize,
    best_top1: Option<f64>,
    threads: usize,
}

/// The names of `student`'s convolution and fully-connected layers that `teacher` lacks: the
/// layers a decomposition made.
pub fn decomposed_layers(student: &Model, teacher: &Model) -> Vec<String> {
    let layers = |m: &Model| -> Vec<(String, Option<Vec<usize>>)> {
        m.graph
            .nodes
            .iter()
            .filter(|n| is_layer(n))
            .map(|n| {
                let w = n.inputs.get(1).and_then(|e| m.param(&m.graph.nodes[e.node].name));
                (n.name.clone(), w.map(|t| t.shape().to_vec()))
            })
            .collect()
    };
    let original: BTreeMap<String, Option<Vec<usize>>> = layers(teacher).into_iter().collect();
    layers(student)
        .into_iter()
        .filter(|(name, shape)| original.get(name) != Some(shape))
        .map(|(name, _)| name)
        .collect()
}

fn is_layer(node: &Node) -> bool {
    matches!(node.op, Op::Convolution(_) | Op::FullyConnected(_))
}

impl<'a> Finetuner<'a> {
    /// Prepares `student` (the decomposed model) to learn from `teacher` (the original) on `data`.
    pub fn new(
        student: Model,
        teacher: &Model,
        data: &'a dyn ImageSource,
        val: Option<&'a dyn ImageSource>,
        options: FinetuneOptions,
    ) -> Result<Self, TrainError> {
        crate::tune_allocator();
        if data.count() == 0 {
            return Err(TrainError::Data("the training data holds no images".into()));
        }
        if options.batch == 0 {
            return Err(TrainError::Data("the batch size must be at least 1".into()));
        }
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let decomposed = decomposed_layers(&student, teacher);
        if options.scope == TrainScope::Decomposed && decomposed.is_empty() {
            return Err(TrainError::Model(
                "the student has no layer the teacher lacks: nothing was decomposed (train all layers with --train all)"
                    .into(),
            ));
        }
        let trains = |n: &Node| match options.scope {
            TrainScope::All => is_layer(n),
            TrainScope::Decomposed => decomposed.contains(&n.name),
        };
        let device = options.target.device()?;
        let net = Student::new(&student, &trains, &device)?;
        // The decomposed layers' responses against the original layers': the second half of each
        // pair against the layer it replaced.
        let mut taps = Vec::new();
        let mut teacher_heads = vec![logits_entry(teacher)?];
        if options.loss.feature > 0.0 {
            for name in &decomposed {
                let base = accnn_graph::rewrite::replaced_layer(name);
                let (Some(base), Some(s)) = (base, student.graph.find(name)) else {
                    continue;
                };
                if let Some(t) = teacher.graph.find(base).filter(|&t| is_layer(&teacher.graph.nodes[t])) {
                    taps.push(Entry::new(s));
                    teacher_heads.push(Entry::new(t));
                }
            }
        }
        let teacher_options = EngineOptions {
            threads,
            target: options.target,
            // The feature loss reads convolutions' own outputs, before any ReLU.
            fuse_activations: taps.is_empty(),
            ..EngineOptions::default()
        };
        let teacher_engine = Engine::new(teacher, teacher_options)?;
        // The same classifier: compare both models' outputs on one image before training.
        let [c, h, w] = data.image_shape();
        let probe = Tensor::zeros((1, c, h, w), DType::F32, &device)?;
        let student_out = net.forward(&probe)?.flatten_from(1)?;
        let teacher_out = teacher_engine
            .run_collect(&probe, &teacher_heads[..1])?
            .remove(0)
            .flatten_from(1)?;
        if student_out.dims() != teacher_out.dims() {
            return Err(TrainError::Model(format!(
                "the student gives {} outputs per image but the teacher {}: fine-tuning needs the same classifier",
                student_out.dim(1)?,
                teacher_out.dim(1)?
            )));
        }
        let mut options = options;
        if let Schedule::Step { every: 0, gamma } = options.schedule {
            // A step schedule without a period steps once an epoch.
            options.schedule = Schedule::Step {
                every: data.count().div_ceil(options.batch),
                gamma,
            };
        }
        let cache = (!options.augment && taps.is_empty()).then(|| vec![None; data.count()]);
        let updater = Updater::new(
            options.optimizer,
            options.weight_decay,
            options.max_grad_norm,
            net.named_vars(),
        );
        Ok(Finetuner {
            model: student,
            device: device.clone(),
            student: net,
            teacher: teacher_engine,
            teacher_heads,
            taps,
            data,
            val,
            options,
            updater,
            cache,
            start_step: 0,
            best_top1: None,
            threads,
        })
    }

    /// Continues a run from `state` (as an observer was given it).
    pub fn resume(&mut self, state: TrainState) -> Result<(), TrainError> {
        if state.step > self.total_steps() {
            return Err(TrainError::Data(format!(
                "the checkpoint is at step {} but this run has {} steps",
                state.step,
                self.total_steps()
            )));
        }
        self.updater
            .restore(state.moments, state.updates)
            .map_err(TrainError::Model)?;
        self.start_step = state.step;
        self.best_top1 = state.best_top1;
        Ok(())
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.data.count().div_ceil(self.options.batch)
    }

    pub fn total_steps(&self) -> usize {
        self.options
            .steps
            .unwrap_or(self.options.epochs * self.steps_per_epoch())
    }

    /// The student's trainable weights.
    pub fn student(&self) -> &Student {
        &self.student
    }

    /// The images of epoch `epoch` in training order.
    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.count()).collect();
        let mut rng = SeededRng::new(self.options.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
        for i in (1..order.len()).rev() {
            let j = (rng.uniform() * (i + 1) as f64) as usize;
            order.swap(i, j.min(i));
        }
        order
    }

    /// The images at `indices`, `(B, C, H, W)`, and their labels.
    fn batch(&self, indices: &[usize], rng: &mut SeededRng) -> Result<(Vec<f32>, Vec<u32>), TrainError> {
        let [c, h, w] = self.data.image_shape();
        let per = c * h * w;
        let mut images = Vec::with_capacity(indices.len() * per);
        let labels = self.data.labels();
        for &i in indices {
            images.extend(self.data.images(i..i + 1)?);
        }
        if self.options.augment {
            augment::augment(&mut images, [c, h, w], rng);
        }
        Ok((images, indices.iter().map(|&i| labels[i]).collect()))
    }

    /// The teacher's logits (and responses at the taps) for a batch.
    fn teacher(&mut self, x: &Tensor, indices: &[usize]) -> Result<(Tensor, Vec<Tensor>), TrainError> {
        if let Some(cache) = &self.cache
            && indices.iter().all(|&i| cache[i].is_some())
        {
            let rows: Vec<f32> = indices
                .iter()
                .flat_map(|&i| cache[i].clone().unwrap_or_default())
                .collect();
            let k = rows.len() / indices.len();
            return Ok((Tensor::from_vec(rows, (indices.len(), k), x.device())?, Vec::new()));
        }
        let mut outputs = self.teacher.run_collect(x, &self.teacher_heads)?;
        let logits = outputs.remove(0).flatten_from(1)?;
        if let Some(cache) = &mut self.cache {
            let rows = logits.to_vec2::<f32>()?;
            for (&i, row) in indices.iter().zip(rows) {
                cache[i] = Some(row);
            }
        }
        Ok((logits, outputs))
    }

    /// Trains to the end, reporting to `observer`; returns the trained model.
    pub fn run(mut self, observer: &mut dyn TrainObserver) -> Result<Model, TrainError> {
        let total = self.total_steps();
        let per_epoch = self.steps_per_epoch();
        let [c, h, w] = self.data.image_shape();
        let started = Instant::now();
        let mut epoch_started = Instant::now();
        let mut epoch_loss = (0.0, 0usize);
        let mut images_seen = 0usize;
        let mut order = Vec::new();
        let mut order_epoch = usize::MAX;
        for step in self.start_step..total {
            let epoch = step / per_epoch;
            if epoch != order_epoch {
                order = self.order(epoch);
                order_epoch = epoch;
            }
            let within = step % per_epoch;
            let indices =
                order[within * self.options.batch..((within + 1) * self.options.batch).min(order.len())].to_vec();
            let mut rng = SeededRng::new(self.options.seed.wrapping_add(step as u64).wrapping_mul(0x2545_F491));
            let (images, labels) = self.batch(&indices, &mut rng)?;
            let x = Tensor::from_vec(images, (indices.len(), c, h, w), &self.device)?;
            let (teacher, teacher_taps) = self.teacher(&x, &indices)?;
            let (student, student_taps) = self.student.forward_collect(&x, &self.taps)?;
            let student = student.flatten_from(1)?;
            if student.dims() != teacher.dims() {
                return Err(TrainError::Model(format!(
                    "the student's output is {:?} but the teacher's {:?}: they must be the same classifier",
                    student.dims(),
                    teacher.dims()
                )));
            }
            let labels = Tensor::new(labels, &self.device)?;
            let features: Vec<(Tensor, Tensor)> = student_taps.into_iter().zip(teacher_taps).collect();
            let terms = self.options.loss.terms(&student, &teacher, Some(&labels), &features)?;
            let loss = terms.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() {
                return Err(TrainError::NonFinite { step: step + 1 });
            }
            let grads = terms.total.backward()?;
            let lr = self.options.schedule.rate(self.options.lr, step, total);
            let grad_norm = self.updater.step(&grads, lr)?;
            images_seen += indices.len();
            epoch_loss = (epoch_loss.0 + loss, epoch_loss.1 + 1);
            observer.step(&StepReport {
                step: step + 1,
                total_steps: total,
                epoch: epoch + 1,
                loss,
                lr,
                grad_norm,
                images_per_second: images_seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
            if (step + 1) % per_epoch == 0 || step + 1 == total {
                self.student.write_back(&mut self.model)?;
                let val_top1 = self.validate()?;
                if let Some(top1) = val_top1 {
                    self.best_top1 = Some(self.best_top1.map_or(top1, |b: f64| b.max(top1)));
                }
                let (moments, updates) = self.updater.state();
                let state = TrainState {
                    step: step + 1,
                    moments,
                    updates,
                    best_top1: self.best_top1,
                };
                let report = EpochReport {
                    epoch: epoch + 1,
                    step: step + 1,
                    total_steps: total,
                    loss: epoch_loss.0 / epoch_loss.1.max(1) as f64,
                    val_top1,
                    seconds: epoch_started.elapsed().as_secs_f64(),
                };
                observer.epoch(&report, &self.model, &state)?;
                epoch_started = Instant::now();
                epoch_loss = (0.0, 0);
            }
        }
        self.student.write_back(&mut self.model)?;
        Ok(self.model)
    }

    /// Top-1 of the model as trained so far on the validation data, run by accnn's engine.
    pub fn validate(&self) -> Result<Option<f64>, TrainError> {
        let Some(val) = self.val else { return Ok(None) };
        let engine = Engine::new(
            &self.model,
            EngineOptions {
                threads: self.threads,
                target: self.options.target,
                ..EngineOptions::default()
            },
        )?;
        let predictions = predict(&engine, val, 256, |_| {})?;
        Ok(Some(score(&predictions, val.labels()).top1))
    }
}
