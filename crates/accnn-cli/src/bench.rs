//! `accnn bench`: measured speed-up of one model over another.

use std::path::PathBuf;

use accnn_infer::Engine;
use accnn_infer::timing::compare;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::Args;

use crate::flags::ModelArgs;
use crate::load;

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
    let options = args.engine.options();
    let a = Engine::new(&base.model, options).with_context(|| format!("model '{}'", base.name))?;
    let b = Engine::new(&other.model, options).with_context(|| format!("model '{}'", other.name))?;
    say!(
        "{} vs {}: theoretical speed-up {theoretical:.3}x (conv + FC MACs)",
        base.name,
        other.name
    )?;
    say!(
        "{:>6}  {:>22}  {:>22}  {:>9}",
        "batch",
        "MODEL ms (IQR)",
        "VS ms (IQR)",
        "speed-up"
    )?;
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let mut shape = base.analysis.data_shape.clone();
        shape[0] = batch;
        let input = Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?;
        let c = compare(&a, &b, &input, args.warmup, args.rounds)?;
        let fmt = |l: &accnn_infer::timing::Latency| {
            let (q1, q3) = l.iqr();
            format!("{:.2} ({:.2}-{:.2})", l.median() * 1e3, q1 * 1e3, q3 * 1e3)
        };
        say!(
            "{batch:>6}  {:>22}  {:>22}  {:>8.3}x",
            fmt(&c.a),
            fmt(&c.b),
            c.speedup()
        )?;
        rows.push(format!(
            "{{\"batch\": {batch}, \"model_ms\": {:.4}, \"vs_ms\": {:.4}, \"speedup\": {:.4}}}",
            c.a.median() * 1e3,
            c.b.median() * 1e3,
            c.speedup()
        ));
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
