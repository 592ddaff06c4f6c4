//! `finetune`: a decomposed model trained back towards its original, read and written in the
//! format it came in, with checkpoints that survive an interrupted run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use accnn_graph::Model;
use accnn_graph::io::{FileContent, write_contents_atomically};
use accnn_infer::data::{ImageOptions, ImageSource, open_images};
use accnn_plan::{ModelSource, SaveAs, encode_model, is_onnx};
use accnn_train::{EpochReport, FinetuneOptions, Finetuner, StepReport, TrainError, TrainObserver, TrainState};
use candle_core::{Device, Tensor};

use crate::pipeline::load_model;
use crate::{Error, ModelInput};

/// Labelled (or unlabelled: any labels) images on disk, read as `eval` reads them.
#[derive(Clone, Debug)]
pub struct ImageFiles {
    /// An IDX directory, a `.npz` or a folder of class subfolders of images.
    pub path: PathBuf,
    /// `train` or `t10k` for IDX directories.
    pub split: String,
    pub limit: Option<usize>,
    pub image: ImageOptions,
}

/// Fine-tune `student` (a decomposed model) towards `teacher` (its original).
pub struct FinetuneRequest {
    pub student: ModelInput,
    pub teacher: ModelInput,
    /// `C, H, W` when the models leave their input size open.
    pub data_shape: Option<Vec<usize>>,
    pub data: ImageFiles,
    /// Validation images: top-1 after every epoch, and the best epoch kept.
    pub val: Option<ImageFiles>,
    pub options: FinetuneOptions,
    /// Where the tuned model goes (the best epoch with `val`, else the last), in the student's
    /// format; the last checkpoint goes beside it (see [`last_checkpoint`]).
    pub output: String,
    /// Continue from the last checkpoint of an earlier run with the same output.
    pub resume: bool,
}

/// What [`finetune`] did.
pub struct Finetuned {
    pub model: Model,
    pub epochs: Vec<EpochReport>,
    pub best_top1: Option<f64>,
    /// The student's top-1 on the validation data before training.
    pub initial_top1: Option<f64>,
    /// Every file written (the last write of each).
    pub written: Vec<PathBuf>,
    pub seconds: f64,
    /// The step the run resumed from (0: a fresh run).
    pub resumed_at: usize,
}

/// Progress of a fine-tuning run, for a progress bar.
pub trait FinetuneProgress {
    fn start(&mut self, _total_steps: usize, _first_step: usize) {}
    fn step(&mut self, _report: &StepReport) {}
    fn epoch(&mut self, _report: &EpochReport) {}
}

/// Reports nothing.
pub struct NoProgress;

impl FinetuneProgress for NoProgress {}

/// The last checkpoint's model spec and its optimiser-state file, beside `output`:
/// `tuned.onnx` → `tuned.last.onnx` and `tuned.last.state`; MXNet `tuned` → `tuned.last` and
/// `tuned.last.state`.
pub fn last_checkpoint(output: &str) -> (String, PathBuf) {
    let (spec, stem) = match output.strip_suffix(".onnx").filter(|_| is_onnx(output)) {
        Some(stem) => (format!("{stem}.last.onnx"), stem.to_string()),
        None => (format!("{output}.last"), output.to_string()),
    };
    (spec, PathBuf::from(format!("{stem}.last.state")))
}

fn train_error(e: TrainError) -> Error {
    Error::Finetune(e)
}

/// Runs a [`FinetuneRequest`]: loads both models, checks that they are the same classifier, trains,
/// and writes checkpoints atomically after every epoch.
pub fn finetune(request: FinetuneRequest, progress: &mut dyn FinetuneProgress) -> Result<Finetuned, Error> {
    let started = Instant::now();
    let shape = request.data_shape.as_deref();
    let student = load_model(request.student, shape, false)?;
    // Folding changes nothing the teacher computes, and gives it the layers a folded student's
    // decomposed pairs approximate.
    let teacher = load_model(request.teacher, shape, true)?;
    let student_shape = student.analysis.data_shape.clone();
    let teacher_shape = teacher.analysis.data_shape.clone();
    if student_shape[1..] != teacher_shape[1..] {
        return Err(Error::FinetuneMismatch(format!(
            "the student '{}' takes inputs {:?} but the teacher '{}' takes {:?}",
            student.name,
            &student_shape[1..],
            teacher.name,
            &teacher_shape[1..]
        )));
    }
    let source = student.source.as_ref().ok_or_else(|| {
        Error::FinetuneMismatch("the student must come from a file: it is written back in its format".into())
    })?;
    let mut inputs = student.inputs.clone();
    inputs.extend(teacher.inputs.iter().cloned());
    let (last_spec, state_path) = last_checkpoint(&request.output);
    // Refuse before training what could never be written.
    accnn_plan::check_destination(source, &request.output, source.format(), &inputs)?;
    accnn_plan::check_destination(source, &last_spec, source.format(), &inputs)?;
    let open = |files: &ImageFiles| -> Result<Box<dyn ImageSource>, Error> {
        open_images(&files.path, &files.split, &files.image, &student_shape, files.limit).map_err(Error::FinetuneData)
    };
    let data = open(&request.data)?;
    let val = request.val.as_ref().map(open).transpose()?;
    let mut model = student.model;
    let mut resumed = None;
    if request.resume {
        let (state, last) = read_state(&state_path, &last_spec, source, shape)?;
        model = last;
        resumed = Some(state);
    }
    let mut tuner =
        Finetuner::new(model, &teacher.model, data.as_ref(), val.as_deref(), request.options).map_err(train_error)?;
    let initial_top1 = match (&val, &resumed) {
        (Some(_), None) => tuner.validate().map_err(train_error)?,
        _ => None,
    };
    let resumed_at = resumed.as_ref().map_or(0, |s: &TrainState| s.step);
    // A resumed run's output already holds the best epoch before the interruption.
    let best_before = resumed.as_ref().and_then(|s| s.best_top1);
    if let Some(state) = resumed {
        tuner.resume(state).map_err(train_error)?;
    }
    progress.start(tuner.total_steps(), resumed_at);
    let mut writer = Checkpoints {
        source,
        data_shape: &student_shape,
        inputs: &inputs,
        output: &request.output,
        last_spec: &last_spec,
        state_path: &state_path,
        keep_best: val.is_some(),
        // The output holds the best trained epoch, even when training made things worse.
        best: best_before,
        epochs: Vec::new(),
        written: Vec::new(),
        progress,
    };
    let model = tuner.run(&mut writer).map_err(train_error)?;
    Ok(Finetuned {
        model,
        best_top1: writer.best,
        epochs: writer.epochs,
        initial_top1,
        written: writer.written,
        seconds: started.elapsed().as_secs_f64(),
        resumed_at,
    })
}

/// Writes the last checkpoint (model and optimiser state together) after every epoch, and the
/// output when the epoch is the best so far (or, without validation data, every time).
struct Checkpoints<'a> {
    source: &'a ModelSource,
    data_shape: &'a [usize],
    inputs: &'a [PathBuf],
    output: &'a str,
    last_spec: &'a str,
    state_path: &'a Path,
    keep_best: bool,
    best: Option<f64>,
    epochs: Vec<EpochReport>,
    written: Vec<PathBuf>,
    progress: &'a mut dyn FinetuneProgress,
}

impl Checkpoints<'_> {
    /// `dest` in the student's own format.
    fn save_as<'d>(&'d self, dest: &'d str) -> SaveAs<'d> {
        SaveAs {
            dest,
            format: self.source.format(),
            data_shape: self.data_shape,
        }
    }
}

impl TrainObserver for Checkpoints<'_> {
    fn step(&mut self, report: &StepReport) {
        self.progress.step(report);
    }

    fn epoch(&mut self, report: &EpochReport, model: &Model, state: &TrainState) -> Result<(), TrainError> {
        let write_error = |e: Error| TrainError::Model(format!("{e:#}"));
        let state_bytes = encode_state(state).map_err(TrainError::Model)?;
        let last = encode_model(self.source, model, self.save_as(self.last_spec), self.inputs)
            .map_err(|e| write_error(e.into()))?;
        let mut files = last.contents();
        files.push((self.state_path, FileContent::Bytes(&state_bytes)));
        let improved = match (report.val_top1, self.best) {
            (Some(top1), Some(best)) => top1 >= best,
            _ => true,
        };
        let best = if !self.keep_best || improved {
            Some(
                encode_model(self.source, model, self.save_as(self.output), self.inputs)
                    .map_err(|e| write_error(e.into()))?,
            )
        } else {
            None
        };
        if let Some(best) = &best {
            files.extend(best.contents());
        }
        write_contents_atomically(&files)
            .map_err(|e| TrainError::Model(format!("cannot write the checkpoint '{}': {e}", self.last_spec)))?;
        if let Some(top1) = report.val_top1 {
            self.best = Some(self.best.map_or(top1, |b| b.max(top1)));
        }
        for (path, _) in &files {
            if !self.written.iter().any(|p| p == path) {
                self.written.push(path.to_path_buf());
            }
        }
        self.epochs.push(report.clone());
        self.progress.epoch(report);
        Ok(())
    }
}

/// The optimiser's moments as safetensors, the counters in its metadata.
fn encode_state(state: &TrainState) -> Result<Vec<u8>, String> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "accnn-finetune-state-1".to_string());
    meta.insert("step".to_string(), state.step.to_string());
    meta.insert("updates".to_string(), state.updates.to_string());
    if let Some(best) = state.best_top1 {
        meta.insert("best_top1".to_string(), best.to_string());
    }
    let tensors: Vec<(&String, &Tensor)> = state.moments.iter().collect();
    safetensors::serialize(tensors, Some(meta)).map_err(|e| e.to_string())
}

/// The last checkpoint of an earlier run: its state and its model.
fn read_state(
    path: &Path,
    last_spec: &str,
    source: &ModelSource,
    shape: Option<&[usize]>,
) -> Result<(TrainState, Model), Error> {
    let bad = |message: String| Error::Resume {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("{e} (nothing to resume: run without --resume)")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some("accnn-finetune-state-1") {
        return Err(bad("not an accnn fine-tuning state".into()));
    }
    let number = |key: &str| -> Result<usize, Error> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("the state has no '{key}'")))
    };
    let moments: BTreeMap<String, Tensor> = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| bad(e.to_string()))?
        .into_iter()
        .collect();
    let state = TrainState {
        step: number("step")?,
        updates: number("updates")?,
        moments,
        best_top1: meta.get("best_top1").and_then(|v| v.parse().ok()),
    };
    let epoch = match source {
        ModelSource::Mxnet { .. } => Some(1),
        ModelSource::Onnx { .. } => None,
    };
    let input = ModelInput::File {
        spec: last_spec.to_string(),
        epoch: epoch.unwrap_or(1),
    };
    let last = load_model(input, shape, false)?;
    Ok((state, last.model))
}
