//! `accnn bench`: measured speed-up of one model over another.

use std::path::PathBuf;

use accnn_infer::Engine;
use accnn_infer::timing::{TimedRun, alternate};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::Args;

use crate::flags::ModelArgs;
use crate::load;
use crate::runtime_args::{Runtime, ort_session};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The model to compare against MODEL (typically the accelerated one).
    #[arg(long, value_name = "PREFIX|FILE.onnx")]
    pub vs: String,
    /// Epoch of the --vs params file.
    #[arg(long, default_value_t = 1)]
    pub vs_epoch: u32,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batch: Vec<usize>,
    #[command(flatten)]
    pub engine: crate::engine_args::EngineArgs,
    #[command(flatten)]
    pub runtime: crate::runtime_args::RuntimeArgs,
    /// Timed runs of each model per batch size, alternating.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Untimed runs of each model first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let _held = crate::hold_freed_memory();
    if args.rounds == 0 || args.batch.contains(&0) {
        bail!("--rounds and every --batch size must be positive");
    }
    let base = load(&args.model)?;
    let other_args = ModelArgs {
        model: Some(args.vs.clone()),
        load_epoch: args.vs_epoch,
        data_shape: args.model.data_shape.clone(),
    };
    let other = load(&other_args)?;
    if base.analysis.data_shape[1..] != other.analysis.data_shape[1..] {
        bail!(
            "the models take different inputs: {:?} and {:?}",
            base.analysis.data_shape,
            other.analysis.data_shape
        );
    }
    let macs = |a: &accnn::Analysis| a.layers.iter().map(|l| l.macs).sum::<u64>();
    let theoretical = macs(&base.analysis) as f64 / macs(&other.analysis).max(1) as f64;
    let runtimes = args.runtime.runtimes();
    let options = args.engine.options();
    let engines = if runtimes.contains(&Runtime::Accnn) {
        let a = Engine::new(&base.model, options).with_context(|| format!("model '{}'", base.name))?;
        let b = Engine::new(&other.model, options).with_context(|| format!("model '{}'", other.name))?;
        Some((a, b))
    } else {
        None
    };
    let ort = args.runtime.onnxruntime()?;
    let mut sessions = match &ort {
        Some(runtime) => Some((
            ort_session(runtime, &base, args.engine.threads)?,
            ort_session(runtime, &other, args.engine.threads)?,
        )),
        None => None,
    };
    say!(
        "{} vs {}: theoretical speed-up {theoretical:.3}x (conv + FC MACs)",
        base.name,
        other.name
    )?;
    let with_runtime = runtimes != [Runtime::Accnn];
    if with_runtime {
        say!(
            "{:>6}  {:<12}  {:>22}  {:>22}  {:>9}",
            "batch",
            "runtime",
            "MODEL ms (IQR)",
            "VS ms (IQR)",
            "speed-up"
        )?;
    } else {
        say!(
            "{:>6}  {:>22}  {:>22}  {:>9}",
            "batch",
            "MODEL ms (IQR)",
            "VS ms (IQR)",
            "speed-up"
        )?;
    }
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let mut shape = base.analysis.data_shape.clone();
        shape[0] = batch;
        let input = Tensor::randn(0f32, 1f32, shape.clone(), &Device::Cpu)?;
        let values = input.flatten_all()?.to_vec1::<f32>()?;
        // Every model in every runtime, alternating in one loop: load from elsewhere hits all alike.
        let mut runs: Vec<TimedRun<'_, anyhow::Error>> = Vec::new();
        let prepared = match &engines {
            Some((a, b)) => Some((a, b, a.prepare(&input)?, b.prepare(&input)?)),
            None => None,
        };
        let mut engine_a;
        let mut engine_b;
        if let Some((a, b, xa, xb)) = &prepared {
            engine_a = || a.forward(xa).map(drop).map_err(anyhow::Error::from);
            engine_b = || b.forward(xb).map(drop).map_err(anyhow::Error::from);
            runs.push(&mut engine_a);
            runs.push(&mut engine_b);
        }
        let mut ort_a;
        let mut ort_b;
        if let Some((a, b)) = sessions.as_mut() {
            let (values, shape) = (&values, &shape);
            ort_a = move || a.time_run(values, shape).map_err(anyhow::Error::from);
            ort_b = move || b.time_run(values, shape).map_err(anyhow::Error::from);
            runs.push(&mut ort_a);
            runs.push(&mut ort_b);
        }
        let latencies = alternate(&mut runs, args.warmup, args.rounds)?;
        let fmt = |l: &accnn_infer::timing::Latency| {
            let (q1, q3) = l.iqr();
            format!("{:.2} ({:.2}-{:.2})", l.median() * 1e3, q1 * 1e3, q3 * 1e3)
        };
        for (runtime, pair) in runtimes.iter().zip(latencies.chunks(2)) {
            let (a, b) = (&pair[0], &pair[1]);
            let speedup = a.median() / b.median();
            if with_runtime {
                say!(
                    "{batch:>6}  {:<12}  {:>22}  {:>22}  {speedup:>8.3}x",
                    runtime.name(),
                    fmt(a),
                    fmt(b)
                )?;
            } else {
                say!("{batch:>6}  {:>22}  {:>22}  {speedup:>8.3}x", fmt(a), fmt(b))?;
            }
            rows.push(format!(
                "{{\"batch\": {batch}, \"runtime\": \"{}\", \"model_ms\": {:.4}, \"vs_ms\": {:.4}, \"speedup\": {speedup:.4}}}",
                runtime.name(),
                a.median() * 1e3,
                b.median() * 1e3,
            ));
        }
    }
    if let Some(path) = &args.json {
        let text = format!(
            "{{\"model\": {:?}, \"vs\": {:?}, \"theoretical_speedup\": {theoretical:.4}, \"device\": \"{}\", \"dtype\": \"{}\", \"threads\": {}, \"results\": [{}]}}\n",
            base.name,
            other.name,
            args.engine.device,
            args.engine.dtype.as_str(),
            args.engine.threads,
            rows.join(", ")
        );
        accnn_graph::io::write_files_atomically(&[(path.as_path(), text.as_bytes())])?;
        say!("wrote {}", path.display())?;
    }
    Ok(())
}
