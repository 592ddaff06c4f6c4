//! `accnn`: accelerate a trained CNN by low-rank decomposition of its layers.

/// `println!` that neither panics nor stops the work when the reader of stdout has gone away
/// (`accnn … | head`): the model is still written. Other write errors are returned.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        match writeln!(std::io::stdout().lock(), $($arg)*) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }};
}

mod bench;
mod calibrate;
mod data;
mod engine_args;
mod eval;
mod latency;

// Large, short-lived buffers (activations, SVD workspaces) are reused instead of being returned to the
// OS and faulted in again on every layer, which glibc's allocator does for big blocks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns memory freed so far to the OS. The decomposition frees large blocks phase by phase (each
/// layer's SVD workspace, the original weights once rewritten), which mimalloc would otherwise keep:
/// without this, VGG-16's peak is 2.1 GB instead of its live data's 1.5 GB.
fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use accnn::{Analysis, Factorisation, ModelFile, ModelSource, Precision, RankPlan, Scope, encode_model};
use accnn_graph::io::{FileContent, same_file, write_contents_atomically};
use accnn_graph::{FoldedBatchNorm, Model, fold_batch_norms};
use accnn_rank::RankConfig;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

/// Make a trained CNN faster and smaller: each convolution becomes a vertical and a horizontal one,
/// each fully-connected layer two thin ones, with ranks chosen for a speed-up ratio or from a config.
#[derive(Parser, Debug)]
#[command(
    name = "accnn",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    accelerate: AccelerateArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decompose one convolution layer (as the original acc_conv.py).
    Conv(LayerArgs),
    /// Decompose one fully-connected layer (as the original acc_fc.py).
    Fc(LayerArgs),
    /// Top-1/top-5 accuracy on labelled images, and agreement with a reference model.
    Eval(eval::EvalArgs),
    /// Time a model against another (e.g. the accelerated one) and report the measured speed-up.
    Bench(bench::BenchArgs),
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

#[derive(Args, Debug)]
struct AccelerateArgs {
    /// Target theoretical speed-up: MACs of the budgeted layers divided by this ratio.
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    ratio: Option<f64>,
    /// Take the ranks from this config.json instead of selecting them.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The new model: an MXNet prefix (NEW-symbol.json, NEW-0001.params) or an ONNX path (NEW.onnx),
    /// in the format the model was read in.
    #[arg(long, value_name = "NEW", required = true)]
    save_model: Option<String>,
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
    /// Make every chosen rank K a multiple of N (and at least N), the budget still met: widths that
    /// GEMM kernels and tensor cores run at full speed.
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "config")]
    align: usize,
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
    engine: engine_args::EngineArgs,
    /// Measured latencies are kept here between runs [default: ~/.cache/accnn/latency.json].
    #[arg(long, value_name = "FILE")]
    latency_cache: Option<PathBuf>,
    #[command(flatten)]
    calibration: calibrate::CalibrationArgs,
}

#[derive(Args, Debug)]
struct LayerArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Name of the layer to decompose.
    #[arg(long)]
    layer: String,
    /// Rank: filters of the vertical convolution, or width of the reducing FC layer.
    #[arg(long = "K", alias = "k", value_name = "K")]
    k: usize,
    /// The new model: an MXNet prefix (NEW-symbol.json, NEW-0001.params) or an ONNX path (NEW.onnx),
    /// in the format the model was read in.
    #[arg(long, value_name = "NEW")]
    save_model: String,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
    /// Keep BatchNorm layers instead of folding them into the convolutions before them.
    #[arg(long)]
    no_fold_bn: bool,
    #[command(flatten)]
    calibration: calibrate::CalibrationArgs,
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

pub(crate) struct Loaded {
    pub(crate) name: String,
    pub(crate) inputs: Vec<PathBuf>,
    pub(crate) source: ModelSource,
    pub(crate) model: Model,
    pub(crate) analysis: Analysis,
    pub(crate) folded: Vec<FoldedBatchNorm>,
}

/// Reads the model, as it is.
pub(crate) fn load(args: &ModelArgs) -> Result<Loaded> {
    load_with(args, false)
}

/// Reads the model; with `fold_bn`, BatchNorms after convolutions are folded into them.
pub(crate) fn load_with(args: &ModelArgs, fold_bn: bool) -> Result<Loaded> {
    let spec = args.model.clone().context("--model is required")?;
    let given_shape = match &args.data_shape {
        Some(text) => {
            let dims: Vec<usize> = text
                .split(',')
                .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
                .collect::<Option<_>>()
                .with_context(|| format!("--data-shape '{text}': expected positive integers C,H,W"))?;
            Some(std::iter::once(1).chain(dims).collect::<Vec<usize>>())
        }
        None => None,
    };
    let file = ModelFile::open(&spec, args.load_epoch, given_shape.as_deref())
        .with_context(|| format!("cannot read model '{spec}'"))?;
    let inputs = file.input_files();
    let data_shape = match (given_shape, &file.declared_shape) {
        (Some(shape), _) => shape,
        (None, Some(declared)) => std::iter::once(1).chain(declared.iter().copied()).collect(),
        (None, None) => vec![1, 3, 224, 224],
    };
    let ModelFile { model, source, .. } = file;
    for warning in model.non_finite_params() {
        eprintln!("warning: {warning}");
    }
    let (model, folded) = if fold_bn {
        fold_batch_norms(model).with_context(|| format!("model '{spec}': folding BatchNorm"))?
    } else {
        (model, Vec::new())
    };
    let analysis = Analysis::new(&model, &data_shape)
        .with_context(|| format!("model '{spec}' with input shape {:?}", &data_shape[1..]))?;
    Ok(Loaded {
        name: spec,
        inputs,
        source,
        model,
        analysis,
        folded,
    })
}

fn factorise(loaded: &Loaded, wanted: &[bool], precision: Precision) -> Result<Vec<Option<Factorisation>>> {
    let count = wanted.iter().filter(|w| **w).count() as u64;
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template("{spinner} SVD {pos}/{len} {wide_bar} {elapsed} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let nodes: std::collections::HashSet<usize> = loaded
        .analysis
        .layers
        .iter()
        .zip(wanted)
        .filter(|(_, w)| **w)
        .map(|(l, _)| l.node)
        .collect();
    let mut started = 0;
    let out = accnn::factorise_where(
        &loaded.model,
        &loaded.analysis,
        precision,
        |l| nodes.contains(&l.node),
        &mut |_, name| {
            release_freed_memory();
            bar.set_position(started);
            bar.set_message(name.to_string());
            started += 1;
        },
    )?;
    bar.finish_and_clear();
    Ok(out)
}

/// Writes the new model and, if given, the config: all files appear together or none does.
fn save(
    loaded_source: &ModelSource,
    inputs: &[PathBuf],
    model: &Model,
    dest: &str,
    config: Option<(&Path, String)>,
) -> Result<()> {
    let encoded = encode_model(loaded_source, model, dest, inputs)?;
    let mut files = encoded.contents();
    if let Some((path, text)) = &config {
        if let Some(clash) = inputs
            .iter()
            .chain(encoded.files.iter().map(|(p, _)| p))
            .find(|p| same_file(path, p))
        {
            bail!("--config-out {} would overwrite {}", path.display(), clash.display());
        }
        files.push((path, FileContent::Bytes(text.as_bytes())));
    }
    write_contents_atomically(&files).with_context(|| format!("cannot write model '{dest}'"))?;
    for (path, _) in &files {
        say!("wrote {}", path.display())?;
    }
    Ok(())
}

fn say_folded(folded: &[FoldedBatchNorm]) -> Result<()> {
    if !folded.is_empty() {
        say!(
            "folded {} BatchNorm layers into the convolutions before them",
            folded.len()
        )?;
    }
    Ok(())
}

fn accelerate(model_args: &ModelArgs, args: &AccelerateArgs) -> Result<()> {
    let dest = args.save_model.clone().context("--save-model is required")?;
    let loaded = load_with(model_args, !args.no_fold_bn)?;
    let mut keep = loaded.inputs.clone();
    keep.extend(args.config.iter().cloned());
    let targets = accnn::check_destination(&loaded.source, &dest, &keep)?;
    let config_out = match (&args.config_out, &args.config) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(PathBuf::from("config.json")),
        (None, Some(_)) => None,
    };
    if let Some(out) = &config_out {
        if let Some(input) = keep.iter().find(|p| same_file(out, p)) {
            bail!("--config-out would overwrite the input file {}", input.display());
        }
        if targets.iter().any(|t| same_file(out, t)) {
            bail!("--config-out {} is one of the model files being written", out.display());
        }
    }
    say_folded(&loaded.folded)?;
    if args.cost == CostArg::Latency && args.config.is_some() {
        bail!("--cost latency chooses ranks for a --ratio; with --config the ranks are given");
    }
    let scope = if args.conv_only { Scope::ConvOnly } else { Scope::All };
    let layers = &loaded.analysis.layers;
    let started = Instant::now();
    let config_plan = match &args.config {
        Some(path) => {
            let config = RankConfig::read(path)?;
            Some(
                accnn::plan_from_config(&loaded.analysis, &config)
                    .with_context(|| format!("config {}", path.display()))?,
            )
        }
        None => None,
    };
    let wanted: Vec<bool> = match &config_plan {
        Some(plan) => (0..layers.len())
            .map(|i| plan.layers.iter().any(|p| p.layer == i))
            .collect(),
        None => layers
            .iter()
            .map(|l| scope.includes(l.kind) && l.can_reduce_cost())
            .collect(),
    };
    let calibration = calibrate::prepare(&args.calibration, &loaded.model, &loaded.analysis, &wanted)?;
    let svds = match &calibration {
        Some(c) => calibrate::factorise(c, &loaded.model, &loaded.analysis, &wanted)?,
        None => factorise(&loaded, &wanted, args.precision.into())?,
    };
    let mut latency_plan = None;
    let plan = match config_plan {
        Some(plan) => plan,
        None if args.cost == CostArg::Latency => {
            let ratio = args.ratio.context("give --ratio")?;
            let cache = args.latency_cache.clone().or_else(latency::default_cache);
            let l = latency::plan(
                &loaded.model,
                &loaded.analysis,
                &svds,
                ratio,
                scope,
                args.align,
                args.batch,
                args.engine.options(),
                cache.as_deref(),
            )?;
            let plan = l.plan.clone();
            latency_plan = Some(l);
            plan
        }
        None => {
            let ratio = args.ratio.context("give --ratio or --config")?;
            accnn::plan_for_ratio_aligned(&loaded.analysis, &svds, ratio, scope, args.align)?
        }
    };
    let svd_seconds = started.elapsed().as_secs_f64();
    let (model, report) = match &calibration {
        Some(c) => calibrate::apply(c, loaded.model, &loaded.analysis, &svds, &plan)?,
        None => accnn::apply_plan(loaded.model, &loaded.analysis, &svds, &plan)?,
    };
    // The SVD factors of big layers are not needed while the new model is written.
    drop(svds);
    release_freed_memory();
    say!("{}", report.to_string().trim_end())?;
    if let Some(ratio) = args.ratio {
        let achieved = report.scope_speedup(scope);
        let what = if args.conv_only {
            "convolutions"
        } else {
            "convolution + FC layers"
        };
        say!("requested {ratio:.3}x over {what}: achieved {achieved:.3}x")?;
    }
    say!("factorisation and rank selection took {svd_seconds:.1} s")?;
    if let Some(l) = &latency_plan {
        let options = args.engine.options();
        let measured = latency::model_seconds(&model, &loaded.analysis.data_shape, args.batch, options)?;
        say!(
            "latency at batch {} on {} in {}: original {:.2} ms; new model predicted {:.2} ms, measured {:.2} ms ({:+.1}%); measured speed-up {:.3}x",
            args.batch,
            options.target,
            options.dtype.as_str(),
            l.original_seconds * 1e3,
            l.predicted_seconds * 1e3,
            measured * 1e3,
            100.0 * (measured / l.predicted_seconds - 1.0),
            l.original_seconds / measured
        )?;
    }
    let config = config_out
        .as_deref()
        .map(|out| (out, plan.to_config(&loaded.analysis).to_json()));
    save(&loaded.source, &keep, &model, &dest, config)
}

fn single_layer(args: &LayerArgs, kind: accnn::LayerKind) -> Result<()> {
    let loaded = load_with(&args.model, !args.no_fold_bn)?;
    accnn::check_destination(&loaded.source, &args.save_model, &loaded.inputs)?;
    say_folded(&loaded.folded)?;
    let index = loaded
        .analysis
        .layers
        .iter()
        .position(|l| l.name == args.layer)
        .with_context(|| {
            format!(
                "--layer '{}': the model has no convolution or fully-connected layer of that name",
                args.layer
            )
        })?;
    let layer = &loaded.analysis.layers[index];
    if layer.kind != kind {
        bail!(
            "--layer '{}' is a {:?} layer; use the other subcommand",
            args.layer,
            layer.kind
        );
    }
    let config = match kind {
        accnn::LayerKind::Convolution => RankConfig {
            conv_params: vec![(args.layer.clone(), args.k)],
            ..Default::default()
        },
        accnn::LayerKind::FullyConnected => RankConfig {
            fc_params: vec![(args.layer.clone(), args.k)],
            ..Default::default()
        },
    };
    let plan: RankPlan = accnn::plan_from_config(&loaded.analysis, &config).context("--K")?;
    let mut wanted = vec![false; loaded.analysis.layers.len()];
    wanted[index] = true;
    let calibration = calibrate::prepare(&args.calibration, &loaded.model, &loaded.analysis, &wanted)?;
    let (model, report) = match &calibration {
        Some(c) => {
            let svds = calibrate::factorise(c, &loaded.model, &loaded.analysis, &wanted)?;
            calibrate::apply(c, loaded.model, &loaded.analysis, &svds, &plan)?
        }
        None => {
            let svds = factorise(&loaded, &wanted, args.precision.into())?;
            accnn::apply_plan(loaded.model, &loaded.analysis, &svds, &plan)?
        }
    };
    say!("{}", report.to_string().trim_end())?;
    save(&loaded.source, &loaded.inputs, &model, &args.save_model, None)
}

fn inspect(args: &ModelArgs) -> Result<()> {
    let loaded = load(args)?;
    let model = &loaded.model;
    let shapes = &loaded.analysis.shapes;
    say!("model {} (input {:?})", loaded.name, loaded.analysis.data_shape)?;
    say!(
        "{:<24} {:<16} {:<20} {:<20} {:>14} {:>12} {:>8}",
        "node",
        "op",
        "output shape",
        "weight",
        "MACs",
        "params",
        "max K"
    )?;
    for (i, node) in model.graph.nodes.iter().enumerate() {
        if matches!(node.op, accnn_graph::Op::Variable) {
            continue;
        }
        let layer = loaded.analysis.layers.iter().find(|l| l.node == i);
        let shape = format!("{:?}", shapes.of(i));
        let (weight, macs, params, max_k) = match layer {
            Some(l) => (
                format!("{:?}", l.weight_shape),
                l.macs.to_string(),
                l.params.to_string(),
                l.max_width().to_string(),
            ),
            None => (String::new(), String::new(), String::new(), String::new()),
        };
        say!(
            "{:<24} {:<16} {:<20} {:<20} {:>14} {:>12} {:>8}",
            node.name,
            node.op.mxnet_name(),
            shape,
            weight,
            macs,
            params,
            max_k
        )?;
    }
    let macs: u64 = loaded.analysis.layers.iter().map(|l| l.macs).sum();
    let params: u64 = model.args.values().map(|t| t.len() as u64).sum();
    say!("total: {macs} MACs in convolution and FC layers, {params} parameters")?;
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        None => accelerate(&cli.model, &cli.accelerate),
        Some(Command::Conv(args)) => single_layer(args, accnn::LayerKind::Convolution),
        Some(Command::Fc(args)) => single_layer(args, accnn::LayerKind::FullyConnected),
        Some(Command::Inspect { model }) => inspect(model),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Eval(args)) => eval::run(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
