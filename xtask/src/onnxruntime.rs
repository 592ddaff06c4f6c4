//! `cargo xtask onnxruntime`: the onnxruntime shared library that `--runtime onnxruntime` loads,
//! installed from the `onnxruntime` wheel in a venv, its path printed for `ORT_DYLIB_PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The onnxruntime the project tests with (CI's onnx venv pins the same).
pub const WHEEL: &str = "onnxruntime==1.20.1";

#[derive(clap::Args, Debug)]
pub struct OnnxruntimeArgs {
    /// A Python 3.9+ with venv and pip.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// The venv to install onnxruntime in (reused when it has it already).
    #[arg(long, default_value = "target/onnx-venv")]
    pub venv: PathBuf,
}

/// The shared library of the onnxruntime installed for `python`.
pub fn library(python: &Path) -> Result<PathBuf> {
    let script = "import glob, os, onnxruntime\n\
                  capi = os.path.join(os.path.dirname(onnxruntime.__file__), 'capi')\n\
                  print(sorted(glob.glob(os.path.join(capi, 'libonnxruntime.so*')))[-1])";
    let out = Command::new(python)
        .args(["-c", script])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} has no onnxruntime with a shared library: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

pub fn run(root: &Path, args: &OnnxruntimeArgs) -> Result<()> {
    let venv = root.join(&args.venv);
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        let status = Command::new(&args.python).arg("-m").arg("venv").arg(&venv).status()?;
        if !status.success() {
            bail!("cannot create the venv {}", venv.display());
        }
    }
    if library(&python).is_err() {
        let status = Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", WHEEL, "numpy<2"])
            .status()?;
        if !status.success() {
            bail!("pip install {WHEEL} failed");
        }
    }
    let lib = library(&python)?;
    eprintln!("onnxruntime for --runtime onnxruntime (export ORT_DYLIB_PATH, or pass --ort-library):");
    println!("{}", lib.display());
    Ok(())
}
