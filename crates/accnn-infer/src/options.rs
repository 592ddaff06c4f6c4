//! Where and how a model runs: device, precision, kernels.

use candle_core::{DType, Device};

use crate::InferError;

/// The processor a model runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal; needs a build with the `cuda` feature.
    Cuda(usize),
}

impl Target {
    /// `cpu`, `cuda` (GPU 0) or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self, InferError> {
        match text {
            "cpu" => Ok(Target::Cpu),
            "cuda" => Ok(Target::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Target::Cuda)
                .ok_or_else(|| InferError::Unsupported(format!("unknown device '{text}': use cpu, cuda or cuda:N"))),
        }
    }

    /// The candle device: fails with a clear message where this build or machine has no CUDA.
    pub fn device(self) -> Result<Device, InferError> {
        match self {
            Target::Cpu => Ok(Device::Cpu),
            Target::Cuda(ordinal) if !cfg!(feature = "cuda") => Err(InferError::Unsupported(format!(
                "--device cuda:{ordinal}: this build of accnn has no CUDA support (build one with `cargo xtask build-cuda`)"
            ))),
            Target::Cuda(ordinal) => Device::new_cuda(ordinal)
                .map_err(|e| InferError::Unsupported(format!("cannot open CUDA device {ordinal}: {e}"))),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cpu => f.write_str("cpu"),
            Target::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// `f32`, `bf16` or `f16`: the precisions the engine runs in.
pub fn parse_dtype(text: &str) -> Result<DType, InferError> {
    match text {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => Err(InferError::Unsupported(format!(
            "unknown dtype '{text}': use f32, bf16 or f16"
        ))),
    }
}

/// How to run a model.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Worker threads; 0 uses every core.
    pub threads: usize,
    /// Apply a ReLU inside the convolution it follows, and on accnn's CPU kernels a residual `Add`
    /// (and the ReLU after it) too (default). Off, every convolution's own output stays observable
    /// through [`Engine::run_collect`](crate::Engine::run_collect).
    pub fuse_activations: bool,
    /// Run convolutions as GEMMs over shifted views or im2col (the path for CPUs without AVX-512)
    /// even where the AVX-512 micro-kernel is available: for comparing the two.
    pub portable_kernels: bool,
    /// Where to run.
    pub target: Target,
    /// Precision of weights and activations: f32, or bf16/f16 (which run as candle ops).
    pub dtype: DType,
    /// Run convolutions, dense layers and pooling as candle tensor ops, the path every GPU and
    /// every half precision takes, instead of accnn's CPU kernels: for testing and comparing it.
    pub candle_ops: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 0,
            fuse_activations: true,
            portable_kernels: false,
            target: Target::Cpu,
            dtype: DType::F32,
            candle_ops: false,
        }
    }
}

impl EngineOptions {
    /// The worker threads these options mean: `threads`, or every core for 0.
    pub fn workers(&self) -> usize {
        if self.threads == 0 {
            rayon::current_num_threads()
        } else {
            self.threads
        }
    }

    /// Whether layers run as candle ops: accnn's own kernels are f32 CPU code, anything else is not.
    pub fn uses_candle_ops(&self) -> bool {
        self.candle_ops || self.dtype != DType::F32 || self.target != Target::Cpu
    }

    /// The kernels these options run, with their generation: part of every cached timing's key,
    /// since timings of other kernels or an older generation say nothing about these.
    pub fn kernels(&self) -> &'static str {
        if self.uses_candle_ops() {
            "candle-1"
        } else {
            cpu_kernels(self.portable_kernels)
        }
    }
}

/// Which CPU convolution kernels this machine runs (with `portable` asked for, the portable ones),
/// with their generation: part of every cached timing's key, since timings of other kernels or
/// an older generation say nothing about these.
pub fn cpu_kernels(portable: bool) -> &'static str {
    if !portable && crate::conv::direct_available() {
        "avx512-4"
    } else {
        "portable-2"
    }
}
