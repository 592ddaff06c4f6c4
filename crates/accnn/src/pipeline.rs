//! The pipeline, once: load → fold → analyse → factorise → plan → calibrate → rewrite → measure → save.

use std::path::{Path, PathBuf};
use std::time::Instant;

use accnn_calibrate::{CalibrateOptions, LayerFit, Statistics};
use accnn_graph::io::{FileContent, same_file, write_contents_atomically};
use accnn_graph::{FoldedBatchNorm, Model, fold_batch_norms};
use accnn_infer::data::Dataset;
use accnn_plan::{
    Analysis, BiasCorrection, ConfigSection, Factorisation, LayerId, LayerSet, ModelFile, ModelSource, Objective,
    PerLayer, RankPlan, Report, SaveAs, check_destination, encode_model,
};
use accnn_rank::RankConfig;

use crate::Error;
use crate::fidelity::{self, Fidelity};
use crate::latency::{LatencyTarget, TimedModel, Timer, measured_latency_plan};
use crate::observer::{Event, Observer};
use crate::request::{
    Calibration, CalibrationImages, Cost, Fit, LatencyOptions, ModelInput, Output, RankSource, Request,
};

/// A model read and analysed for one input shape, BatchNorm folded if asked.
pub struct LoadedModel {
    /// The name used in messages: the file spec or the in-memory model's name.
    pub name: String,
    /// The files it was read from (never overwritten).
    pub inputs: Vec<PathBuf>,
    /// Where it came from, for writing a new model in the same format (`None`: from memory).
    pub source: Option<ModelSource>,
    pub model: Model,
    pub analysis: Analysis,
    pub folded: Vec<FoldedBatchNorm>,
    /// Weights that hold NaN or infinite values, one line each.
    pub warnings: Vec<String>,
}

/// Reads `input` and analyses it for `data_shape` (`C, H, W`; `None`: what the model declares, else
/// `3, 224, 224`), folding BatchNorms into the convolutions before them when `fold_batch_norm`.
pub fn load_model(
    input: ModelInput,
    data_shape: Option<&[usize]>,
    fold_batch_norm: bool,
) -> Result<LoadedModel, Error> {
    let given = data_shape.map(|s| std::iter::once(1).chain(s.iter().copied()).collect::<Vec<usize>>());
    let read_error = |spec: &str| {
        let spec = spec.to_string();
        move |source| Error::Read { spec, source }
    };
    let (name, inputs, file) = match input {
        ModelInput::File { spec, epoch } => {
            let file = ModelFile::open(&spec, epoch, given.as_deref()).map_err(read_error(&spec))?;
            (spec, file.input_files(), Ok(file))
        }
        ModelInput::OnnxBytes { name, bytes } => {
            let file = ModelFile::from_onnx_bytes(&name, bytes, given.as_deref()).map_err(read_error(&name))?;
            // Nothing on disk to protect from being overwritten.
            (name, Vec::new(), Ok(file))
        }
        ModelInput::Memory { name, model } => (name, Vec::new(), Err(model)),
    };
    let (source, model, declared, symbolic) = match file {
        Ok(ModelFile {
            model,
            source,
            declared_shape,
            symbolic_dims,
        }) => (Some(source), model, declared_shape, symbolic_dims),
        Err(model) => (None, model, None, Vec::new()),
    };
    let data_shape = match (given, declared) {
        (Some(shape), _) => shape,
        (None, Some(declared)) => std::iter::once(1).chain(declared).collect(),
        // Never guess a size the model leaves open.
        (None, None) if !symbolic.is_empty() => {
            return Err(Error::SymbolicInput {
                spec: name,
                dims: symbolic,
            });
        }
        (None, None) => vec![1, 3, 224, 224],
    };
    let warnings = model.non_finite_params();
    let (model, folded) = if fold_batch_norm {
        fold_batch_norms(model).map_err(|source| Error::Fold {
            spec: name.clone(),
            source,
        })?
    } else {
        (model, Vec::new())
    };
    let analysis = Analysis::new(&model, &data_shape).map_err(|source| Error::Analyse {
        spec: name.clone(),
        shape: data_shape[1..].to_vec(),
        source,
    })?;
    Ok(LoadedModel {
        name,
        inputs,
        source,
        model,
        analysis,
        folded,
        warnings,
    })
}

/// What [`accelerate`] made.
pub struct Accelerated {
    /// The new model.
    pub model: Model,
    /// The original model's analysis (layer names, shapes, costs).
    pub analysis: Analysis,
    pub plan: RankPlan,
    pub report: Report,
    /// The BatchNorms folded before decomposing.
    pub folded: Vec<FoldedBatchNorm>,
    /// Calibration: how many images, and how long the statistics took.
    pub calibration: Option<CalibrationSummary>,
    /// Calibration: each decomposed layer's response error before and after its refit.
    pub fits: Vec<LayerFit>,
    /// Calibration: seconds the reconstruction took.
    pub reconstruction_seconds: f64,
    /// `Cost::Latency`: measured and predicted latencies.
    pub latency: Option<LatencyOutcome>,
    /// The new model's outputs against the original's on a few inputs (`Err`: why accnn's engine
    /// could not run or compare them).
    pub fidelity: Result<Fidelity, String>,
    /// Seconds from the analysed model to the chosen plan (calibration statistics, SVDs, selection).
    pub plan_seconds: f64,
    /// The files written, when the request had an output.
    pub written: Vec<PathBuf>,
    /// Where the original model came from (`None`: [`ModelInput::Memory`]): what
    /// [`Accelerated::onnx_bytes`] writes the new model on top of.
    pub source: Option<ModelSource>,
}

impl Accelerated {
    /// The chosen ranks in the original tool's `config.json` schema.
    pub fn config(&self) -> RankConfig {
        self.plan.to_config(&self.analysis)
    }

    /// The new model as the bytes of an ONNX file, weights inline: written on top of the ONNX model it
    /// was read from (every node and initializer accnn did not change kept as it was), or, for a model
    /// read from an MXNet checkpoint or from memory, as a new ONNX model of the analysed input shape.
    pub fn onnx_bytes(&self) -> Result<Vec<u8>, Error> {
        onnx_of(self.source.as_ref(), &self.model, &self.analysis.data_shape)
    }
}

/// What calibration read.
#[derive(Clone, Debug)]
pub struct CalibrationSummary {
    pub images: usize,
    pub seconds: f64,
}

/// Latencies of `Cost::Latency`, in seconds at the requested batch.
#[derive(Clone, Debug)]
pub struct LatencyOutcome {
    /// The batch size and the engine they were measured at.
    pub batch: usize,
    pub engine: accnn_infer::EngineOptions,
    /// The runtime they were measured in, in words (accnn's engine and its device, or onnxruntime).
    pub measured_in: String,
    /// Seconds per run of the original and the new model, timed alternately at the end.
    pub original: f64,
    /// The plan's prediction for the new model, rescaled to the original's time above: the plan
    /// timed the original earlier, and a shared machine's speed drifts in between.
    pub predicted: f64,
    pub measured: f64,
}

impl LatencyOutcome {
    /// Measured speed-up of the new model.
    pub fn speedup(&self) -> f64 {
        self.original / self.measured
    }
}

/// Runs the whole pipeline for `request`, silently. See [`accelerate_with`].
pub fn accelerate(request: Request) -> Result<Accelerated, Error> {
    accelerate_with(request, &mut crate::observer::Silent)
}

/// Runs the whole pipeline for `request`, telling `observer` what happens as it happens.
///
/// Output files are checked before any work is done (no input is ever overwritten, the format
/// matches the input's) and written together at the end, or not at all.
pub fn accelerate_with(request: Request, observer: &mut dyn Observer) -> Result<Accelerated, Error> {
    let Request {
        model,
        data_shape,
        fold_batch_norm,
        ranks,
        fit,
        precision,
        bias_correction,
        gain_restoration,
        output,
    } = request;
    let loaded = load_model(model, data_shape.as_deref(), fold_batch_norm)?;
    for warning in &loaded.warnings {
        observer.on(Event::Warning(warning));
    }
    let config_path = match &ranks {
        RankSource::Config { path, .. } => path.clone(),
        _ => None,
    };
    if let Some(output) = &output {
        check_output(&loaded, output, config_path.as_deref())?;
    }
    observer.on(Event::Folded(&loaded.folded));
    if !loaded.analysis.skipped.is_empty() {
        observer.on(Event::Skipped(&loaded.analysis.skipped));
    }
    let LoadedModel {
        model,
        analysis,
        folded,
        inputs,
        source,
        ..
    } = loaded;
    // The runtime latency is timed in, before any work: a missing library is said at once.
    let timer = match &ranks {
        RankSource::Ratio {
            cost: Cost::Latency(l), ..
        } => Some((Timer::new(l)?, l.batch)),
        _ => None,
    };
    let started = Instant::now();
    let (fixed_plan, wanted) = plan_or_layers(&ranks, &analysis)?;
    let calibration_set = match fit {
        Fit::Weights => None,
        Fit::Calibration(c) => Some(calibration_set(c, &analysis.data_shape)?),
    };
    // The check's reference outputs come first: the engine it builds holds a second copy of the
    // weights, which must not add to the calibration statistics' memory.
    let check = fidelity::reference(
        &model,
        &analysis.data_shape,
        calibration_set.as_ref().map(|(data, _)| data),
    );
    let mut calibration = match calibration_set {
        None => None,
        Some((data, options)) => Some(calibrate(data, options, &model, &analysis, &wanted, observer)?),
    };
    let svds = factorise(&model, &analysis, &wanted, calibration.as_mut(), precision, observer)?;
    // Data-free factors lose part of each layer's response to its input's mean; calibrated ones are
    // refitted to the responses instead.
    let correction = match (&calibration, bias_correction) {
        (None, true) => {
            let estimate = BiasCorrection::estimate(&model, &analysis);
            Some(if gain_restoration {
                estimate
            } else {
                estimate.without_gain()
            })
        }
        _ => None,
    };
    // The original ready to be timed in the runtime (an ONNX file for onnxruntime), once: the plan
    // measures it, and the new model is timed against it at the end.
    let mut timed = match timer {
        Some((timer, batch)) => {
            let onnx = onnx_for(&timer, source.as_ref(), &model, &analysis.data_shape)?;
            let original = timer.prepare(&model, onnx.as_deref(), &analysis.data_shape, batch)?;
            Some((timer, original))
        }
        None => None,
    };
    let (plan, latency_prediction) = match fixed_plan {
        Some(plan) => (plan, None),
        None => choose_plan(
            &model,
            &analysis,
            &svds,
            &ranks,
            timed.as_mut().map(|(t, o)| (&*t, o, source.as_ref())),
            correction.as_ref(),
            observer,
        )?,
    };
    let plan_seconds = started.elapsed().as_secs_f64();
    let (model, mut report, fits, reconstruction_seconds) = rewrite(
        model,
        &analysis,
        svds,
        &plan,
        calibration.as_ref(),
        correction.as_ref(),
        observer,
    )?;
    report.chosen_by = Some(chosen_by(&ranks, calibration.is_some()));
    observer.on(Event::Rewritten);
    let fidelity = check.and_then(|r| fidelity::compare(&r, &model));
    let latency = match (latency_prediction, timed) {
        (Some((planned_original, predicted, l)), Some((timer, mut original_run))) => {
            let onnx = onnx_for(&timer, source.as_ref(), &model, &analysis.data_shape)?;
            let mut new_run = timer.prepare(&model, onnx.as_deref(), &analysis.data_shape, l.batch)?;
            let (original, measured) = crate::latency::side_by_side(&mut original_run, &mut new_run)?;
            let predicted = predicted * original / planned_original.max(f64::MIN_POSITIVE);
            Some(LatencyOutcome {
                batch: l.batch,
                engine: l.engine,
                measured_in: timer.describe(),
                original,
                predicted,
                measured,
            })
        }
        _ => None,
    };
    if let Some(l) = &latency
        && l.measured >= l.original
    {
        return Err(Error::NotFaster {
            original_ms: l.original * 1e3,
            measured_ms: l.measured * 1e3,
            batch: l.batch,
        });
    }
    let written = match (&output, &source) {
        (Some(output), Some(source)) => {
            let config = output
                .config
                .as_deref()
                .map(|p| (p, plan.to_config(&analysis).to_json()));
            let mut keep = inputs.clone();
            keep.extend(config_path);
            let save_as = SaveAs {
                dest: &output.model,
                format: output.format.unwrap_or(source.format()),
                data_shape: &analysis.data_shape,
            };
            save(source, &keep, &model, save_as, config)?
        }
        _ => Vec::new(),
    };
    Ok(Accelerated {
        model,
        analysis,
        plan,
        report,
        folded,
        calibration: calibration.map(|c| CalibrationSummary {
            images: c.data.len(),
            seconds: c.stats.seconds,
        }),
        fits,
        reconstruction_seconds,
        latency,
        fidelity,
        plan_seconds,
        written,
        source,
    })
}

/// What chose the ranks, in words, for the report.
fn chosen_by(ranks: &RankSource, calibrated: bool) -> String {
    match ranks {
        RankSource::Ratio { objective, cost, .. } => {
            let budget = match cost {
                Cost::Macs => "MACs",
                Cost::Latency(_) => "measured latency",
            };
            let energy = if calibrated { "response" } else { "weight" };
            format!(
                "--rank-search {objective} ({}; {energy} spectra, under {budget})",
                objective.describe()
            )
        }
        RankSource::Config { path: Some(path), .. } => format!("the config {}", path.display()),
        RankSource::Config { path: None, .. } => "the given config".into(),
        RankSource::Layer { .. } => "the given K".into(),
    }
}

/// The plan the request fixes (a config, one layer), or the layers a ratio may decompose.
fn plan_or_layers(ranks: &RankSource, analysis: &Analysis) -> Result<(Option<RankPlan>, LayerSet), Error> {
    let plan = match ranks {
        RankSource::Config { config, path } => {
            accnn_plan::plan_from_config(analysis, config).map_err(|source| match path {
                Some(path) => Error::Config {
                    path: path.clone(),
                    source,
                },
                None => Error::Plan(source),
            })?
        }
        RankSource::Layer { name, kind, width } => single_layer_plan(analysis, name, *kind, *width)?,
        RankSource::Ratio {
            ratio,
            scope,
            align,
            objective,
            ..
        } => {
            accnn_plan::check_ratio(*ratio)?;
            if *align == 0 {
                return Err(accnn_plan::Error::InvalidAlignment.into());
            }
            let wanted = if *objective == Objective::Seed {
                accnn_plan::seed_layers(analysis)
            } else {
                analysis.select(|l| scope.includes(l.kind) && l.can_reduce_cost())
            };
            return Ok((None, wanted));
        }
    };
    let wanted = plan.layer_set();
    Ok((Some(plan), wanted))
}

/// Factorisations of the `wanted` layers: response-weighted with calibration, else weight SVDs
/// (reported to `observer` layer by layer).
fn factorise(
    model: &Model,
    analysis: &Analysis,
    wanted: &LayerSet,
    calibration: Option<&mut Calibrated>,
    precision: accnn_plan::Precision,
    observer: &mut dyn Observer,
) -> Result<PerLayer<Factorisation>, Error> {
    let total = wanted.len();
    let mut done = 0;
    let mut progress = |id: LayerId, _: &str| {
        done += 1;
        observer.on(Event::Factorising {
            layer: &analysis[id],
            done,
            total,
        });
    };
    let svds = match calibration {
        Some(c) => accnn_calibrate::factorise(model, analysis, &mut c.stats, wanted, &c.options, &mut progress)?,
        None => accnn_plan::factorise_layers(model, analysis, wanted, precision, &mut progress)?,
    };
    observer.on(Event::Factorised);
    Ok(svds)
}

/// The original's latency as the plan measured it, the plan's predicted latency, and how they were
/// measured.
type LatencyPrediction = (f64, f64, LatencyOptions);

/// `model` as an ONNX file: written on the ONNX model it was read from, else as a new ONNX model
/// whose input has `data_shape`.
fn onnx_of(source: Option<&ModelSource>, model: &Model, data_shape: &[usize]) -> Result<Vec<u8>, Error> {
    Ok(match source {
        Some(ModelSource::Onnx { source, .. }) => accnn_graph::onnx::encode_onnx(source, model, None)?.model,
        _ => accnn_graph::onnx::encode_standalone(model, data_shape, None)?.model,
    })
}

/// `model` as the ONNX file onnxruntime times (an MXNet checkpoint is timed as its ONNX export);
/// nothing for accnn's engine, which runs the IR.
fn onnx_for(
    timer: &Timer,
    source: Option<&ModelSource>,
    model: &Model,
    data_shape: &[usize],
) -> Result<Option<Vec<u8>>, Error> {
    match timer {
        Timer::Engine(_) => Ok(None),
        Timer::Onnxruntime { .. } => onnx_of(source, model, data_shape).map(Some),
    }
}

/// The plan for a ratio: under MACs, or under measured latency (with its prediction).
/// `latency` is the timer, the original ready to be timed and where it came from, for a latency
/// cost.
fn choose_plan(
    model: &Model,
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    ranks: &RankSource,
    latency: Option<(&Timer, &mut TimedModel, Option<&ModelSource>)>,
    correction: Option<&BiasCorrection>,
    observer: &mut dyn Observer,
) -> Result<(RankPlan, Option<LatencyPrediction>), Error> {
    let RankSource::Ratio {
        ratio,
        scope,
        align,
        cost,
        objective,
    } = ranks
    else {
        unreachable!("config and single-layer requests fix their plan")
    };
    match cost {
        Cost::Macs => Ok((
            accnn_plan::plan_for_objective(analysis, svds, *ratio, *scope, *align, *objective)?,
            None,
        )),
        Cost::Latency(_) if *objective != Objective::Energy => Err(accnn_plan::Error::ObjectiveOption {
            objective: objective.name(),
            option: "a latency cost",
        }
        .into()),
        Cost::Latency(l) => {
            let target = LatencyTarget {
                ratio: *ratio,
                scope: *scope,
                align: *align,
                batch: l.batch,
                cache: l.cache.clone(),
            };
            let Some((timer, original, source)) = latency else {
                unreachable!("accelerate_with prepares the timer and the original for a latency cost")
            };
            let measure = |plan: &RankPlan, original: &mut TimedModel| -> Result<f64, Error> {
                let (new, _) = accnn_plan::apply_plan(model.clone(), analysis, svds, plan, correction)?;
                let onnx = onnx_for(timer, source, &new, &analysis.data_shape)?;
                let mut new_run = timer.prepare(&new, onnx.as_deref(), &analysis.data_shape, l.batch)?;
                let (before, after) = crate::latency::side_by_side(original, &mut new_run)?;
                Ok(before / after.max(f64::MIN_POSITIVE))
            };
            let chosen = measured_latency_plan(model, original, analysis, svds, &target, timer, measure)?;
            if chosen.measured < *ratio {
                let what = if chosen.planned.reachable.is_some() {
                    "the fastest plan its timings allow"
                } else {
                    "the closest plan"
                };
                observer.on(Event::Warning(&format!(
                    "latency ratio {ratio} is beyond reach in this runtime: {what} measured {:.2}x after {} plan(s) (what the runtime spends outside the decomposed layers bounds the speed-up); ask for a lower --ratio to keep more accuracy",
                    chosen.measured, chosen.attempts
                )));
            }
            let planned = chosen.planned;
            let prediction = (planned.original_seconds, planned.predicted_seconds, l.clone());
            Ok((planned.plan, Some(prediction)))
        }
    }
}

/// Refuses, before any work, outputs that would overwrite an input or clash with each other.
fn check_output(loaded: &LoadedModel, output: &Output, config_input: Option<&Path>) -> Result<(), Error> {
    let source = loaded.source.as_ref().ok_or_else(|| {
        Error::Plan(accnn_plan::Error::Layer {
            layer: loaded.name.clone(),
            message: "a model given in memory has no file format to be written in".into(),
        })
    })?;
    let mut keep = loaded.inputs.clone();
    keep.extend(config_input.map(Path::to_path_buf));
    let format = output.format.unwrap_or(source.format());
    let targets = check_destination(source, &output.model, format, &keep)?;
    if let Some(out) = &output.config {
        if let Some(input) = keep.iter().find(|p| same_file(out, p)) {
            return Err(Error::ConfigClash {
                path: out.clone(),
                clash: input.clone(),
                input: true,
            });
        }
        if let Some(target) = targets.iter().find(|t| same_file(out, t)) {
            return Err(Error::ConfigClash {
                path: out.clone(),
                clash: target.clone(),
                input: false,
            });
        }
    }
    Ok(())
}

/// The plan of one layer at width `K`, checked to be of the `kind` the caller expects.
fn single_layer_plan(
    analysis: &Analysis,
    name: &str,
    kind: accnn_plan::LayerKind,
    width: usize,
) -> Result<RankPlan, Error> {
    let layer = analysis
        .layer(name)
        .ok_or_else(|| Error::NoSuchLayer { name: name.into() })?;
    if layer.kind != kind {
        return Err(Error::LayerKind {
            name: name.into(),
            kind: layer.kind,
        });
    }
    let mut config = RankConfig::default();
    let entry = vec![(name.to_string(), width)];
    match ConfigSection::of(kind) {
        ConfigSection::Conv => config.conv_params = entry,
        ConfigSection::Fc => config.fc_params = entry,
    }
    accnn_plan::plan_from_config(analysis, &config).map_err(Error::LayerWidth)
}

/// Calibration images and what the pass over the original network gathered.
struct Calibrated {
    data: Dataset,
    stats: Statistics,
    options: CalibrateOptions,
}

/// The calibration images, and the options their statistics are gathered with.
fn calibration_set(calibration: Calibration, data_shape: &[usize]) -> Result<(Dataset, CalibrateOptions), Error> {
    let Calibration {
        images,
        positions,
        threads,
    } = calibration;
    let data = match images {
        CalibrationImages::Dataset(data) => data,
        CalibrationImages::Files {
            path,
            split,
            limit,
            image,
        } => {
            if limit == 0 {
                return Err(Error::NoCalibrationImages);
            }
            accnn_infer::data::open_images(&path, &split, &image, data_shape, Some(limit))
                .and_then(|images| images.to_dataset())
                .map_err(Error::CalibrationData)?
        }
        CalibrationImages::Synthetic { count, seed } => match (count, data_shape) {
            (0, _) => return Err(Error::NoCalibrationImages),
            (_, &[_, c, h, w]) => accnn_infer::data::synthetic::natural_noise(count, [c, h, w], seed),
            _ => {
                return Err(Error::SyntheticImages {
                    shape: data_shape.to_vec(),
                });
            }
        },
    };
    let options = CalibrateOptions {
        positions: positions.max(1),
        threads,
        ..CalibrateOptions::for_input(&data.shape[1..])
    };
    Ok((data, options))
}

/// The statistics of `model`'s layers over the calibration images.
fn calibrate(
    data: Dataset,
    options: CalibrateOptions,
    model: &Model,
    analysis: &Analysis,
    wanted: &LayerSet,
    observer: &mut dyn Observer,
) -> Result<Calibrated, Error> {
    let stats = accnn_calibrate::collect(model, analysis, &data, wanted, &options)?;
    observer.on(Event::Calibrated {
        images: data.len(),
        seconds: stats.seconds,
    });
    Ok(Calibrated { data, stats, options })
}

/// The rewritten model: factors as the SVD gave them, or refitted layer by layer on calibration data.
fn rewrite(
    model: Model,
    analysis: &Analysis,
    svds: PerLayer<Factorisation>,
    plan: &RankPlan,
    calibration: Option<&Calibrated>,
    correction: Option<&BiasCorrection>,
    observer: &mut dyn Observer,
) -> Result<(Model, Report, Vec<LayerFit>, f64), Error> {
    Ok(match calibration {
        Some(c) => {
            let mut progress = |layer, done, total| {
                observer.on(Event::Refitted {
                    layer: &analysis[layer],
                    done,
                    total,
                })
            };
            let r = accnn_calibrate::reconstruct(
                model,
                analysis,
                &svds,
                plan,
                &c.stats,
                &c.data,
                &c.options,
                &mut progress,
            )?;
            (r.model, r.report, r.fits, r.seconds)
        }
        None => {
            let (model, report) = accnn_plan::apply_plan(model, analysis, &svds, plan, correction)?;
            (model, report, Vec::new(), 0.0)
        }
    })
}

/// Writes the new model and, if given, the config: all files appear together or none does.
fn save(
    source: &ModelSource,
    inputs: &[PathBuf],
    model: &Model,
    save_as: SaveAs<'_>,
    config: Option<(&Path, String)>,
) -> Result<Vec<PathBuf>, Error> {
    let dest = save_as.dest;
    let encoded = encode_model(source, model, save_as, inputs)?;
    let mut files = encoded.contents();
    if let Some((path, text)) = &config {
        if let Some(clash) = inputs
            .iter()
            .chain(encoded.files.iter().map(|(p, _)| p))
            .find(|p| same_file(path, p))
        {
            return Err(Error::ConfigClash {
                path: path.to_path_buf(),
                clash: clash.clone(),
                input: inputs.contains(clash),
            });
        }
        files.push((path, FileContent::Bytes(text.as_bytes())));
    }
    write_contents_atomically(&files).map_err(|source| Error::Write {
        dest: dest.to_string(),
        source,
    })?;
    Ok(files.iter().map(|(p, _)| p.to_path_buf()).collect())
}
