//! The command line: clap's argument structs, checked and turned into library requests in one place.

use std::path::PathBuf;

use accnn::{Cost, LatencyOptions, ModelInput, Objective, Output, Precision, RankConfig, RankSource, Request, Scope};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::calibrate::CalibrationArgs;

/// Make a trained CNN faster and smaller: each convolution becomes a vertical and a horizontal one,
/// each fully-connected layer two thin ones, with ranks chosen for a speed-up ratio or from a config.
#[derive(Parser, Debug)]
#[command(
    name = "accnn",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub accelerate: AccelerateArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Decompose one convolution layer (as the original acc_conv.py).
    Conv(LayerArgs),
    /// Decompose one fully-connected layer (as the original acc_fc.py).
    Fc(LayerArgs),
    /// Top-1/top-5 accuracy on labelled images, and agreement with a reference model.
    Eval(crate::eval::EvalArgs),
    /// Train a decomposed model back towards its original: distillation from the original's
    /// outputs (plus labels, when the data has them); the decomposed layers train by default.
    Finetune(crate::finetune::FinetuneArgs),
    /// Time a model against another (e.g. the accelerated one) and report the measured speed-up.
    Bench(crate::bench::BenchArgs),
    /// Print every layer with its shapes, MACs, parameters and largest rank.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ModelArgs {
    /// The model: an MXNet prefix (reads PREFIX-symbol.json and PREFIX-EPOCH.params) or an ONNX file.
    #[arg(short = 'm', long = "model", value_name = "PREFIX|FILE.onnx", required = true)]
    pub(crate) model: Option<String>,
    /// Epoch of the params file to read.
    #[arg(long, default_value_t = 1)]
    pub(crate) load_epoch: u32,
    /// Input shape C,H,W. Default: the shape the model declares (ONNX input, MXNet __shape__
    /// attribute), else 3,224,224.
    #[arg(long, value_name = "C,H,W")]
    pub(crate) data_shape: Option<String>,
}

impl ModelArgs {
    /// The model file to read.
    pub(crate) fn input(&self) -> Result<ModelInput> {
        let spec = self.model.clone().context("--model is required")?;
        Ok(ModelInput::File {
            spec,
            epoch: self.load_epoch,
        })
    }

    /// `--data-shape` as `C, H, W`.
    pub(crate) fn shape(&self) -> Result<Option<Vec<usize>>> {
        let Some(text) = &self.data_shape else {
            return Ok(None);
        };
        text.split(',')
            .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
            .collect::<Option<Vec<usize>>>()
            .with_context(|| format!("--data-shape '{text}': expected positive integers C,H,W"))
            .map(Some)
    }
}

#[derive(Args, Debug)]
pub(crate) struct AccelerateArgs {
    /// Target theoretical speed-up: MACs of the budgeted layers divided by this ratio.
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    ratio: Option<f64>,
    /// Take the ranks from this config.json instead of selecting them.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The new model: an MXNet prefix (NEW-symbol.json, NEW-0001.params) or an ONNX path (NEW.onnx),
    /// in the format the model was read in unless --save-format says otherwise.
    #[arg(long, value_name = "NEW", required = true)]
    save_model: Option<String>,
    /// The format of --save-model [default: the format read]; `onnx` writes an MXNet checkpoint as
    /// a new ONNX model (for onnxruntime and every other ONNX runtime).
    #[arg(long, value_enum, value_name = "FORMAT")]
    save_format: Option<SaveFormatArg>,
    /// Where to write the chosen ranks [default: config.json, when ranks were selected by --ratio].
    #[arg(long, value_name = "FILE")]
    config_out: Option<PathBuf>,
    /// Budget and decompose convolutions only, like the original tool.
    #[arg(long)]
    conv_only: bool,
    /// Floating-point precision of the SVDs.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
    /// Keep BatchNorm layers instead of folding them into the convolutions before them.
    #[arg(long)]
    no_fold_bn: bool,
    /// Data-free only: leave each decomposed layer's bias as it was, instead of giving back the
    /// response to its input's estimated mean that the truncation lost.
    #[arg(long)]
    no_bias_correction: bool,
    /// Data-free only: correct the biases alone, without giving the decomposed spatial
    /// convolutions that every path to the output passes through (a chain's layers) the gain they
    /// lost.
    #[arg(long)]
    no_gain_restoration: bool,
    /// Make every chosen rank K a multiple of N (and at least N), the budget still met: widths that
    /// GEMM kernels and tensor cores run at full speed.
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "config")]
    align: usize,
    /// What the ranks for --ratio maximise: `energy`, the kept PCA energy (exact, layers may stay
    /// whole); `seed`, the original accnn tool's selector as it was (every convolution decomposed,
    /// kept singular-value sums, convolutions only).
    #[arg(long, value_name = "OBJECTIVE", default_value_t = Objective::default(), conflicts_with = "config")]
    rank_search: Objective,
    /// What --ratio divides: MACs (theoretical), or latency measured with accnn's engine on
    /// --device in --dtype (every budgeted layer timed whole and at up to 16 ranks; a
    /// decomposition that is not faster is never chosen).
    #[arg(long, value_enum, default_value_t = CostArg::Macs, requires = "ratio")]
    cost: CostArg,
    /// Batch size the latency is measured at (--cost latency).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// The engine the latency is measured with (--cost latency).
    #[command(flatten)]
    engine: crate::engine_args::EngineArgs,
    /// --cost latency: the runtime layers and models are timed in (--runtime onnxruntime: the model
    /// will run there; an MXNet checkpoint is timed as its ONNX export).
    #[command(flatten)]
    runtime: crate::runtime_args::RuntimeArgs,
    /// Measured latencies are kept here between runs [default: ~/.cache/accnn/latency.json].
    #[arg(long, value_name = "FILE")]
    latency_cache: Option<PathBuf>,
    #[command(flatten)]
    calibration: CalibrationArgs,
}

impl AccelerateArgs {
    /// The request these flags make, with `--config` read.
    pub(crate) fn request(&self, model: &ModelArgs) -> Result<Request> {
        let dest = self.save_model.clone().context("--save-model is required")?;
        if self.cost != CostArg::Latency && self.runtime.runtimes() != [crate::runtime_args::Runtime::Accnn] {
            bail!("--runtime: the runtime of --cost latency; without it nothing is timed");
        }
        let scope = if self.conv_only { Scope::ConvOnly } else { Scope::All };
        let ranks = match (&self.config, self.ratio) {
            (Some(path), _) => {
                if self.cost == CostArg::Latency {
                    bail!("--cost latency chooses ranks for a --ratio; with --config the ranks are given");
                }
                RankSource::Config {
                    config: RankConfig::read(path)?,
                    path: Some(path.clone()),
                }
            }
            (None, Some(ratio)) => RankSource::Ratio {
                ratio,
                scope,
                align: self.align,
                objective: self.rank_search,
                cost: match self.cost {
                    CostArg::Macs => Cost::Macs,
                    CostArg::Latency => Cost::Latency(LatencyOptions {
                        batch: self.batch,
                        engine: self.engine.options(),
                        runtime: self.runtime.latency_runtime()?,
                        cache: self.latency_cache.clone().or_else(accnn::latency::default_cache),
                    }),
                },
            },
            (None, None) => bail!("give --ratio or --config"),
        };
        let config_out = match (&self.config_out, &self.config) {
            (Some(p), _) => Some(p.clone()),
            (None, None) => Some(PathBuf::from("config.json")),
            (None, Some(_)) => None,
        };
        Ok(Request {
            model: model.input()?,
            data_shape: model.shape()?,
            fold_batch_norm: !self.no_fold_bn,
            ranks,
            fit: self.calibration.fit()?,
            precision: self.precision.into(),
            bias_correction: !self.no_bias_correction,
            gain_restoration: !self.no_gain_restoration,
            output: Some(Output {
                model: dest,
                format: self.save_format.map(Into::into),
                config: config_out,
            }),
        })
    }

    /// Where calibration images come from, for the report.
    pub(crate) fn calibration_source(&self) -> String {
        self.calibration.source()
    }

    /// The ratio asked for, and the layers it budgets, for the closing line.
    pub(crate) fn requested(&self) -> Option<(f64, Scope)> {
        // The original's selector budgets convolutions only, whatever --conv-only says.
        let conv_only = self.conv_only || self.rank_search == Objective::Seed;
        let scope = if conv_only { Scope::ConvOnly } else { Scope::All };
        self.ratio.map(|r| (r, scope))
    }
}

#[derive(Args, Debug)]
pub(crate) struct LayerArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Name of the layer to decompose.
    #[arg(long)]
    layer: String,
    /// Rank: filters of the vertical convolution, or width of the reducing FC layer.
    #[arg(long = "K", alias = "k", value_name = "K")]
    k: usize,
    /// The new model: an MXNet prefix (NEW-symbol.json, NEW-0001.params) or an ONNX path (NEW.onnx),
    /// in the format the model was read in unless --save-format says otherwise.
    #[arg(long, value_name = "NEW")]
    save_model: String,
    /// The format of --save-model [default: the format read]; `onnx` writes an MXNet checkpoint as
    /// a new ONNX model.
    #[arg(long, value_enum, value_name = "FORMAT")]
    save_format: Option<SaveFormatArg>,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
    /// Keep BatchNorm layers instead of folding them into the convolutions before them.
    #[arg(long)]
    no_fold_bn: bool,
    /// Data-free only: leave each decomposed layer's bias as it was, instead of giving back the
    /// response to its input's estimated mean that the truncation lost.
    #[arg(long)]
    no_bias_correction: bool,
    /// Data-free only: correct the biases alone, without giving the decomposed spatial
    /// convolutions that every path to the output passes through (a chain's layers) the gain they
    /// lost.
    #[arg(long)]
    no_gain_restoration: bool,
    #[command(flatten)]
    calibration: CalibrationArgs,
}

impl LayerArgs {
    /// Where calibration images come from, for the report.
    pub(crate) fn calibration_source(&self) -> String {
        self.calibration.source()
    }

    /// The request of one layer at `--K`, expected to be of `kind`.
    pub(crate) fn request(&self, kind: accnn::LayerKind) -> Result<Request> {
        Ok(Request {
            model: self.model.input()?,
            data_shape: self.model.shape()?,
            fold_batch_norm: !self.no_fold_bn,
            ranks: RankSource::Layer {
                name: self.layer.clone(),
                kind,
                width: self.k,
            },
            fit: self.calibration.fit()?,
            precision: self.precision.into(),
            bias_correction: !self.no_bias_correction,
            gain_restoration: !self.no_gain_restoration,
            output: Some(Output {
                model: self.save_model.clone(),
                format: self.save_format.map(Into::into),
                config: None,
            }),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SaveFormatArg {
    Onnx,
    Mxnet,
}

impl From<SaveFormatArg> for accnn::ModelFormat {
    fn from(f: SaveFormatArg) -> Self {
        match f {
            SaveFormatArg::Onnx => accnn::ModelFormat::Onnx,
            SaveFormatArg::Mxnet => accnn::ModelFormat::Mxnet,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CostArg {
    Macs,
    Latency,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PrecisionArg {
    Auto,
    F32,
    F64,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Auto => Precision::Auto,
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::F64 => Precision::F64,
        }
    }
}
