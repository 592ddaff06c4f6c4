//! Project automation: `cargo xtask <command>`.

mod bench_speedup;
mod build_cuda;
mod mxnet_check;
mod node_tests;
mod onnx_check;
mod onnxruntime;
mod peak_memory;
mod plot;
mod python_package;
mod real_models;
mod train;
mod vgg;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The results table: accuracy, MACs, theoretical and measured speed-up of every variant, plus
    /// the accuracy-vs-speed-up plot, under --out (default results/).
    BenchSpeedup(Box<bench_speedup::BenchSpeedupArgs>),
    /// Build `accnn` and this xtask with the CUDA path into target/cuda (no GPU or CUDA install
    /// needed: the CUDA 13.0 compiler comes from NVIDIA's PyPI wheels, the driver from a stub).
    BuildCuda(build_cuda::BuildCudaArgs),
    /// Write a VGG-16-topology MXNet checkpoint with weights from a fixed seed.
    GenVgg(vgg::VggArgs),
    /// Write a torchvision-style ResNet-18 ONNX model (BatchNorm kept) with weights from a fixed seed.
    GenResnet18 {
        /// The .onnx file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 18)]
        seed: u64,
        #[arg(long, default_value_t = 1000)]
        classes: usize,
    },
    /// Write VGG-16 as ONNX (3x224x224, MXNet's layer names, so that fixtures/vgg16-config.json
    /// applies) with weights from a fixed seed.
    GenVgg16Onnx {
        /// The .onnx file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 1000)]
        classes: usize,
    },
    /// Peak resident memory of `accnn` decomposing VGG-16 (generated with a fixed seed), against the
    /// model file's size.
    PeakMemory(peak_memory::PeakMemoryArgs),
    /// Train the fixture on Fashion-MNIST (candle autograd), fold BatchNorm, write fixtures/vgg16-mini;
    /// with --torch PY, train a converged VGG-16-topology or ResNet fixture with torch, as ONNX.
    TrainFixture(train::TrainArgs),
    /// Check that checkpoints accnn writes load and run in MXNet 1.9 (needs a Python with mxnet).
    MxnetCheck(mxnet_check::MxnetCheckArgs),
    /// Check that ONNX models accnn writes pass onnx.checker and match onnxruntime (needs a Python
    /// with onnx and onnxruntime).
    OnnxCheck(onnx_check::OnnxCheckArgs),
    /// Run ONNX's own backend node tests (from the onnx wheel) for every operator accnn claims,
    /// through accnn's importer and engine; print the table of passes per operator.
    NodeTests(node_tests::NodeTestsArgs),
    /// Read, run, rewrite and check real exports: the onnx wheel's model-zoo models and PaddleOCR's
    /// models from the rapidocr wheel, against onnxruntime (needs a Python with onnx, onnxruntime, pip).
    RealModels(real_models::RealModelsArgs),
    /// Install onnxruntime's shared library in a venv (target/onnx-venv) and print its path, for
    /// `--runtime onnxruntime` (ORT_DYLIB_PATH or --ort-library).
    Onnxruntime(onnxruntime::OnnxruntimeArgs),
    /// Build the Python wheel (abi3, manylinux) with maturin into target/wheels: its size and build time.
    Wheel(python_package::WheelArgs),
    /// A fresh venv, `pip install .`, then the Python package's pytest suite (crates/accnn-py/tests)
    /// against onnxruntime and the cargo-built `accnn`.
    PythonTests(python_package::PythonTestsArgs),
}

#[global_allocator]
static ALLOCATOR: accnn_cli::Allocator = accnn_cli::Allocator {};

fn main() -> Result<()> {
    // SAFETY: the first thing the program does; no other thread exists yet.
    unsafe { accnn_infer::quiet_candle_workers() };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    match Cli::parse().command {
        Command::GenVgg(args) => vgg::generate(&args),
        Command::BenchSpeedup(args) => bench_speedup::run(&args),
        Command::BuildCuda(args) => build_cuda::run(root, &args),
        Command::GenResnet18 { out, seed, classes } => {
            std::fs::write(&out, accnn_graph::onnx::zoo::resnet18(seed, classes))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::GenVgg16Onnx { out, seed, classes } => {
            std::fs::write(&out, accnn_graph::onnx::zoo::vgg16(seed, classes))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::MxnetCheck(args) => mxnet_check::run(root, &args),
        Command::OnnxCheck(args) => onnx_check::run(root, &args),
        Command::NodeTests(args) => node_tests::run(&args),
        Command::RealModels(args) => real_models::run(root, &args),
        Command::TrainFixture(args) => train::run(root, &args),
        Command::PeakMemory(args) => peak_memory::run(root, &args),
        Command::Onnxruntime(args) => onnxruntime::run(root, &args),
        Command::Wheel(args) => python_package::wheel(root, &args),
        Command::PythonTests(args) => python_package::python_tests(root, &args),
    }
}
