//! onnxruntime as a measured runtime: where a user deploys the model accnn writes, the speed-up that
//! counts is the one onnxruntime delivers.
//!
//! The shared library is loaded at run time, never linked: [`OnnxRuntime::load`] takes its path, or
//! reads it from `ORT_DYLIB_PATH`. The `onnxruntime` wheel ships one
//! (`site-packages/onnxruntime/capi/libonnxruntime.so.*`), version 1.20 or newer.
//!
//! ```no_run
//! # fn main() -> Result<(), accnn_ort::OrtError> {
//! let runtime = accnn_ort::OnnxRuntime::load(None)?;
//! let mut session = runtime.session(&std::fs::read("model.onnx").unwrap(), 2)?;
//! let outputs = session.run(&vec![0.0; 3 * 224 * 224], &[1, 3, 224, 224])?;
//! println!("{:?}", outputs[0].shape);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

/// The environment variable naming the onnxruntime shared library.
pub const LIBRARY_VARIABLE: &str = "ORT_DYLIB_PATH";

/// What can go wrong when loading onnxruntime or running a model in it.
#[derive(Debug, thiserror::Error)]
pub enum OrtError {
    /// No library was given and `ORT_DYLIB_PATH` is unset.
    #[error(
        "onnxruntime's shared library is needed: set {LIBRARY_VARIABLE} (or --ort-library) to libonnxruntime.so, which the onnxruntime wheel ships under site-packages/onnxruntime/capi/ (`cargo xtask onnxruntime` installs it and prints the path)"
    )]
    NotFound,
    #[error("cannot load onnxruntime from {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("onnxruntime: {0}")]
    Runtime(String),
    #[error("onnxruntime: the model's output '{name}' is not a float32 tensor")]
    Output { name: String },
}

fn runtime_error(e: impl std::fmt::Display) -> OrtError {
    OrtError::Runtime(e.to_string())
}

/// The library this process loaded and its environment (onnxruntime allows one of each).
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A loaded onnxruntime library and its environment.
pub struct OnnxRuntime {
    environment: Environment,
    library: PathBuf,
}

impl OnnxRuntime {
    /// Loads onnxruntime from `library`, or from the path in `ORT_DYLIB_PATH` when `None`. A process
    /// holds one library and one environment: later calls with the same library share them, and
    /// another library is refused.
    pub fn load(library: Option<&Path>) -> Result<Self, OrtError> {
        let library = match library {
            Some(path) => path.to_path_buf(),
            None => std::env::var_os(LIBRARY_VARIABLE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or(OrtError::NotFound)?,
        };
        if !library.is_file() {
            return Err(OrtError::Load {
                path: library,
                message: "no such file".into(),
            });
        }
        let mut loaded = LOADED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((path, environment)) = loaded.as_ref() {
            if !same_file(path, &library) {
                return Err(OrtError::Load {
                    path: library,
                    message: format!("this process already loaded onnxruntime from {}", path.display()),
                });
            }
            return Ok(OnnxRuntime {
                environment: environment.clone(),
                library,
            });
        }
        let load = |e: &dyn std::fmt::Display| OrtError::Load {
            path: library.clone(),
            message: e.to_string(),
        };
        let environment = ort::init_from(&library)
            .map_err(|e| load(&e))?
            .with_name("accnn")
            .build()
            .map_err(|e| load(&e))?;
        *loaded = Some((library.clone(), environment.clone()));
        Ok(OnnxRuntime { environment, library })
    }

    /// The library loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// A session for the ONNX model `onnx` (the bytes of a `.onnx` file), all graph optimisations on,
    /// `threads` intra-op threads (0: onnxruntime's default, every core) and one inter-op thread,
    /// whose spinning stops when a run returns (so that sessions timed in turn do not slow each other).
    pub fn session(&self, onnx: &[u8], threads: usize) -> Result<OrtSession, OrtError> {
        let session = self.builder(threads)?.commit_from_memory(onnx).map_err(runtime_error)?;
        Ok(OrtSession { session })
    }

    /// A session for the ONNX file at `path` (external data files are read from beside it), as
    /// [`OnnxRuntime::session`].
    pub fn session_from_file(&self, path: &Path, threads: usize) -> Result<OrtSession, OrtError> {
        let session = self.builder(threads)?.commit_from_file(path).map_err(runtime_error)?;
        Ok(OrtSession { session })
    }

    fn builder(&self, threads: usize) -> Result<ort::session::builder::SessionBuilder, OrtError> {
        let mut builder = Session::builder(&self.environment)
            .map_err(runtime_error)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(runtime_error)?
            .with_inter_threads(1)
            .map_err(runtime_error)?
            // Workers spin within a run (as deployed) but stop when it returns. Left spinning, a
            // session's idle workers take cores from whatever is timed next, another session or
            // accnn's engine: on 2 cores that doubled the engine's ResNet-18 time and made a 2x
            // decomposition look slower than the original in onnxruntime.
            .with_config_entry("session.force_spinning_stop", "1")
            .map_err(runtime_error)?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(runtime_error)?;
        }
        Ok(builder)
    }
}

/// One output of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct OrtOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A model loaded in onnxruntime, with one float32 input.
pub struct OrtSession {
    session: Session,
}

impl OrtSession {
    /// Runs the model on `input` of `shape` (batch first); every output as float32.
    pub fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<Vec<OrtOutput>, OrtError> {
        let names: Vec<String> = self.session.outputs().iter().map(|o| o.name().to_string()).collect();
        let tensor = TensorRef::from_array_view((shape.to_vec(), input)).map_err(runtime_error)?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(runtime_error)?;
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let (shape, data) = outputs[i]
                    .try_extract_tensor::<f32>()
                    .map_err(|_| OrtError::Output { name: name.clone() })?;
                Ok(OrtOutput {
                    shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                    data: data.to_vec(),
                    name,
                })
            })
            .collect()
    }

    /// Runs the model on `input` without reading its outputs back: what a timing measures.
    pub fn time_run(&mut self, input: &[f32], shape: &[usize]) -> Result<(), OrtError> {
        let tensor = TensorRef::from_array_view((shape.to_vec(), input)).map_err(runtime_error)?;
        self.session.run(ort::inputs![tensor]).map_err(runtime_error)?;
        Ok(())
    }
}
