//! The Python package (`pyproject.toml`, `crates/accnn-py`), built and tested as a user gets it.
//!
//! - `cargo xtask wheel`: the wheel a release would publish (abi3, manylinux tag checked by maturin),
//!   built with maturin from its own venv, with its size and build time.
//! - `cargo xtask python-tests`: a fresh venv, `pip install .` from the checkout (maturin as pip's
//!   build backend), then the pytest suite of `crates/accnn-py/tests` against onnxruntime and the
//!   cargo-built `accnn`, after `mypy --strict` on the package; also the import time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

/// maturin, as `pyproject.toml`'s build-system asks.
const MATURIN: &str = "maturin>=1.16,<2";
/// What the tests need beside the package: the versions CI's onnx venv pins.
/// mypy checks the package's annotations and stubs (`--strict`).
const TEST_REQUIREMENTS: &[&str] = &[
    "numpy<2",
    "onnx==1.17.0",
    "onnxruntime==1.20.1",
    "pytest>=7",
    "mypy>=1.10",
];

#[derive(Args, Debug)]
pub struct WheelArgs {
    /// A Python 3.9+ with venv and pip, for maturin's venv (target/maturin-venv).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Where the wheel goes.
    #[arg(long, default_value = "target/wheels")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PythonTestsArgs {
    /// A Python 3.9+ with venv and pip; the fresh venv (target/py-test-venv) is made from it.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Extra arguments for pytest (after `--`).
    #[arg(last = true)]
    pub pytest: Vec<String>,
}

fn checked(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {what} ({command:?})"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn venv_bin(venv: &Path, name: &str) -> PathBuf {
    venv.join("bin").join(name)
}

/// Makes `venv` from `python` (from scratch when `fresh`) and installs `packages` in it.
fn venv_with(python: &Path, venv: &Path, fresh: bool, packages: &[&str]) -> Result<()> {
    if fresh && venv.exists() {
        std::fs::remove_dir_all(venv).with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    if !venv_bin(venv, "python").is_file() {
        checked(
            Command::new(python).arg("-m").arg("venv").arg(venv),
            "creating the venv",
        )?;
    }
    checked(
        Command::new(venv_bin(venv, "pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages),
        "pip install",
    )
}

pub fn wheel(root: &Path, args: &WheelArgs) -> Result<()> {
    let venv = root.join("target").join("maturin-venv");
    venv_with(&args.python, &venv, false, &[MATURIN])?;
    let out = root.join(&args.out);
    let started = Instant::now();
    checked(
        Command::new(venv_bin(&venv, "maturin"))
            .args(["build", "--release", "--out"])
            .arg(&out)
            .current_dir(root),
        "maturin build",
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let version = env!("CARGO_PKG_VERSION");
    let wheel = std::fs::read_dir(&out)
        .with_context(|| format!("cannot list {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("accnn-{version}-")) && n.ends_with(".whl"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .context("maturin wrote no wheel")?;
    let size = std::fs::metadata(&wheel)?.len();
    println!(
        "wheel {} ({:.1} MB) built in {seconds:.0} s",
        wheel.display(),
        size as f64 / 1e6
    );
    Ok(())
}

pub fn python_tests(root: &Path, args: &PythonTestsArgs) -> Result<()> {
    let venv = root.join("target").join("py-test-venv");
    venv_with(&args.python, &venv, true, TEST_REQUIREMENTS)?;
    let started = Instant::now();
    checked(
        Command::new(venv_bin(&venv, "pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(root),
        "pip install . (the accnn package)",
    )?;
    println!("pip install . took {:.0} s", started.elapsed().as_secs_f64());
    // The command the wheel's `accnn` must match.
    checked(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "accnn-cli"])
            .current_dir(root),
        "cargo build -p accnn-cli",
    )?;
    let python = venv_bin(&venv, "python");
    let started = Instant::now();
    checked(Command::new(&python).args(["-c", "import accnn"]), "import accnn")?;
    println!(
        "python -c 'import accnn' took {:.2} s (interpreter start included)",
        started.elapsed().as_secs_f64()
    );
    let package = root.join("crates").join("accnn-py");
    checked(
        Command::new(&python)
            .args(["-m", "mypy", "--strict", "--no-error-summary"])
            .arg(package.join("python").join("accnn")),
        "mypy --strict (the package's annotations and stubs)",
    )?;
    let tests = package.join("tests");
    checked(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-rs"])
            .arg(&tests)
            .args(&args.pytest)
            .env("ACCNN_CARGO_BIN", root.join("target").join("release").join("accnn"))
            // Away from the checkout, so that `import accnn` is the installed package.
            .current_dir(std::env::temp_dir()),
        "pytest",
    )
}
