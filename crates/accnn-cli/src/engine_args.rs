//! Where and how a model runs: the flags `bench`, `eval` and `--cost latency` share.

use accnn_infer::{EngineOptions, Target};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Worker threads (0: every core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where to run: cpu, cuda (GPU 0) or cuda:N. CUDA needs a build made by `cargo xtask build-cuda`.
    #[arg(long, default_value = "cpu", value_parser = parse_target)]
    pub device: Target,
    /// Precision of weights and activations: f32, bf16 or f16 (half precisions run as candle ops;
    /// on a CPU they are slow, and meant for checking a GPU's numbers).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: candle_core::DType,
}

fn parse_target(text: &str) -> Result<Target, String> {
    Target::parse(text).map_err(|e| e.to_string())
}

fn parse_dtype(text: &str) -> Result<candle_core::DType, String> {
    accnn_infer::parse_dtype(text).map_err(|e| e.to_string())
}

impl EngineArgs {
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            threads: self.threads,
            target: self.device,
            dtype: self.dtype,
            ..Default::default()
        }
    }
}
