//! `--runtime`: where `bench` and `eval` run a model, accnn's engine or onnxruntime.

use std::path::{Path, PathBuf};

use accnn_ort::{OnnxRuntime, OrtSession};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

/// A runtime models can be run and timed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// accnn's own engine (`--device`, `--dtype`, `--threads`).
    Accnn,
    /// onnxruntime's CPU execution provider, all graph optimisations on (`--threads`); an MXNet
    /// checkpoint runs as its ONNX export.
    Onnxruntime,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Accnn => "accnn",
            Runtime::Onnxruntime => "onnxruntime",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Where models run: accnn (the engine), onnxruntime (the shared library from --ort-library or
    /// ORT_DYLIB_PATH), or, for bench, both comma separated, timed side by side in one run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "accnn")]
    pub runtime: Vec<Runtime>,
    /// onnxruntime's shared library, libonnxruntime.so (the onnxruntime wheel ships it under
    /// site-packages/onnxruntime/capi/) [default: $ORT_DYLIB_PATH].
    #[arg(long, value_name = "FILE")]
    pub ort_library: Option<PathBuf>,
}

impl RuntimeArgs {
    /// The runtimes asked for, each once, accnn's engine first (the order `bench` times and prints
    /// them in, whatever order the flag gave).
    pub fn runtimes(&self) -> Vec<Runtime> {
        [Runtime::Accnn, Runtime::Onnxruntime]
            .into_iter()
            .filter(|r| self.runtime.contains(r))
            .collect()
    }

    /// The runtime `--cost latency` times in (one only).
    pub fn latency_runtime(&self) -> Result<accnn::LatencyRuntime> {
        match self.runtimes().as_slice() {
            [Runtime::Accnn] => Ok(accnn::LatencyRuntime::Engine),
            [Runtime::Onnxruntime] => Ok(accnn::LatencyRuntime::Onnxruntime {
                library: self.ort_library.clone(),
            }),
            _ => bail!("--runtime: --cost latency times in one runtime, accnn or onnxruntime"),
        }
    }

    /// onnxruntime, loaded when one of the runtimes asked for is onnxruntime.
    pub fn onnxruntime(&self) -> Result<Option<OnnxRuntime>> {
        if !self.runtimes().contains(&Runtime::Onnxruntime) {
            return Ok(None);
        }
        let runtime = OnnxRuntime::load(self.ort_library.as_deref()).map_err(|e| match &self.ort_library {
            Some(path) => anyhow::anyhow!("--ort-library {}: {e}", path.display()),
            None => anyhow::anyhow!("--runtime onnxruntime: {e}"),
        })?;
        Ok(Some(runtime))
    }
}

/// A session of `model` in onnxruntime: its ONNX file as it is (external data found beside it), or
/// an MXNet checkpoint written as a new ONNX model.
pub fn ort_session(runtime: &OnnxRuntime, model: &accnn::LoadedModel, threads: usize) -> Result<OrtSession> {
    let spec = &model.name;
    let session = if accnn::is_onnx(spec) {
        runtime.session_from_file(Path::new(spec), threads)
    } else {
        let onnx = accnn_graph::onnx::encode_standalone(&model.model, &model.analysis.data_shape, None)
            .with_context(|| format!("model '{spec}' as ONNX, for onnxruntime"))?;
        runtime.session(&onnx.model, threads)
    };
    session.with_context(|| format!("model '{spec}' in onnxruntime"))
}
