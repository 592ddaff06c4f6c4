//! `cargo xtask build-cuda`: builds `accnn` (and this xtask) with the CUDA path, on a machine
//! without a GPU or a CUDA installation.
//!
//! What a CUDA build of candle needs, and where it comes from here:
//! - `nvcc` and the CUDA 13.0 headers and libraries: NVIDIA's PyPI wheels, pinned to 13.0 so that
//!   the binary runs on a driver-580 machine, installed with `pip --target` under
//!   `target/cuda-toolchain` (nothing system-wide). An existing toolkit is used instead when
//!   `CUDA_HOME` names one.
//! - `libcuda.so` to link against: the driver is not in any wheel, so a stub with an empty function
//!   for every driver symbol cudarc declares is compiled with gcc. Its soname is `libcuda.so.1`, so
//!   the binary loads the real driver where it runs.
//!
//! The result goes to its own target directory (`target/cuda`), leaving the CPU build alone, with
//! gzipped copies in `target/cuda/carry` for machines that take only small uploads
//! (`xtask/gpu-check.sh` unpacks them). The binaries need the CUDA 13 runtime libraries (cuBLAS, cuRAND, NVRTC) and an NVIDIA driver where
//! they run; nothing else (no Rust toolchain, no network).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

/// The CUDA 13.0 wheels (pinned: a newer minor version needs a newer driver than 580).
const WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-nvvm==13.0.88",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
    "nvidia-cuda-nvrtc==13.0.88",
];

#[derive(Args, Debug)]
pub struct BuildCudaArgs {
    /// Compute capability of the GPU the binary is for (90: H100 and H200; 89: L4/L40; 80: A100).
    #[arg(long, default_value = "90")]
    pub compute_cap: String,
    /// Python with pip, to install the CUDA wheels (when CUDA_HOME does not name a toolkit).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Where the wheels and the driver stub go [default: target/cuda-toolchain].
    #[arg(long)]
    pub toolchain: Option<PathBuf>,
    /// Cargo profile to build.
    #[arg(long, default_value = "release")]
    pub profile: String,
}

pub fn run(root: &Path, args: &BuildCudaArgs) -> Result<()> {
    let toolchain = args
        .toolchain
        .clone()
        .unwrap_or_else(|| root.join("target").join("cuda-toolchain"));
    let cuda_home = match std::env::var_os("CUDA_HOME").map(PathBuf::from) {
        Some(home) if home.join("bin").join("nvcc").is_file() => {
            println!("using the CUDA toolkit in {}", home.display());
            home
        }
        _ => install_wheels(&toolchain, &args.python)?,
    };
    let lib = cuda_home.join("lib");
    link_unversioned(&lib)?;
    let stubs = toolchain.join("stubs");
    write_driver_stub(root, &stubs)?;

    let path = std::env::join_paths(
        std::iter::once(cuda_home.join("bin"))
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let library_path = std::env::join_paths([lib.clone(), stubs.clone()])?;
    let target_dir = root.join("target").join("cuda");
    println!(
        "building accnn and xtask with CUDA (compute capability {}) into {}",
        args.compute_cap,
        target_dir.display()
    );
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--profile", &args.profile, "-p", "accnn-cli", "-p", "xtask"])
        .args(["--features", "accnn-cli/cuda,xtask/cuda", "--target-dir"])
        .arg(&target_dir)
        .env("CUDA_HOME", &cuda_home)
        .env("CUDA_PATH", &cuda_home)
        .env("CUDA_COMPUTE_CAP", &args.compute_cap)
        .env("CUDARC_CUDA_VERSION", "13000")
        .env("PATH", path)
        .env("LIBRARY_PATH", &library_path)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the CUDA build failed ({status})");
    }
    let dir = target_dir.join(if args.profile == "dev" { "debug" } else { &args.profile });
    // Compressed copies to carry to a GPU machine: the binaries hold candle's PTX, which gzip
    // shrinks about fourfold (56 MB -> 14 MB for accnn).
    let carry = target_dir.join("carry");
    std::fs::create_dir_all(&carry)?;
    for bin in ["accnn", "xtask"] {
        let p = dir.join(bin);
        let size = std::fs::metadata(&p)
            .with_context(|| format!("{} was not built", p.display()))?
            .len();
        let packed = carry.join(format!("{bin}.gz"));
        let file = std::fs::File::create(&packed).with_context(|| format!("cannot create {}", packed.display()))?;
        let status = Command::new("gzip")
            .arg("-c")
            .arg(&p)
            .stdout(file)
            .status()
            .context("cannot run gzip")?;
        if !status.success() {
            bail!("gzip {} failed ({status})", p.display());
        }
        println!(
            "built {} ({:.1} MB; gzipped to carry: {}, {:.1} MB)",
            p.display(),
            size as f64 / 1e6,
            packed.display(),
            std::fs::metadata(&packed)?.len() as f64 / 1e6
        );
    }
    println!(
        "Run it where an NVIDIA driver (>= 580) and the CUDA 13 libraries are, e.g.\n  \
         LD_LIBRARY_PATH=/usr/local/cuda/lib64 {} bench -m MODEL --vs NEW --device cuda --dtype bf16",
        dir.join("accnn").display()
    );
    Ok(())
}

/// Installs the pinned wheels under `toolchain/py` (once) and returns their CUDA_HOME.
fn install_wheels(toolchain: &Path, python: &str) -> Result<PathBuf> {
    let target = toolchain.join("py");
    let home = target.join("nvidia").join("cu13");
    if home.join("bin").join("nvcc").is_file() {
        println!("using the CUDA wheels in {}", home.display());
        return Ok(home);
    }
    println!("installing CUDA 13.0 wheels into {}", target.display());
    let status = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&target)
        .args(WHEELS)
        .status()
        .with_context(|| format!("cannot run '{python} -m pip'"))?;
    if !status.success() || !home.join("bin").join("nvcc").is_file() {
        bail!("installing the CUDA wheels failed ({status}); is {python} able to reach PyPI?");
    }
    Ok(home)
}

/// `libfoo.so` links next to each `libfoo.so.N`: the linker looks for the unversioned name, the
/// wheels ship only versioned ones.
fn link_unversioned(lib: &Path) -> Result<()> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("cannot list {}", lib.display()))?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some((stem, _version)) = name.split_once(".so.") else {
            continue;
        };
        let link = lib.join(format!("{stem}.so"));
        if !link.exists() {
            std::os::unix::fs::symlink(&name, &link).with_context(|| format!("cannot create {}", link.display()))?;
        }
    }
    Ok(())
}

/// Compiles `stubs/libcuda.so`: an empty function for each driver API function cudarc declares.
fn write_driver_stub(root: &Path, stubs: &Path) -> Result<()> {
    let library = stubs.join("libcuda.so");
    if library.is_file() {
        return Ok(());
    }
    let bindings = cudarc_dir(root)?.join("src").join("driver").join("sys").join("mod.rs");
    let text = std::fs::read_to_string(&bindings).with_context(|| format!("cannot read {}", bindings.display()))?;
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub unsafe fn "))
        .filter_map(|l| l.split('(').next())
        .filter(|name| name.starts_with("cu"))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() < 100 {
        bail!("found only {} driver functions in {}", names.len(), bindings.display());
    }
    std::fs::create_dir_all(stubs)?;
    let source = stubs.join("libcuda-stub.c");
    let body: String = names
        .iter()
        .map(|n| format!("int {n}(void) {{ return 999; }}\n"))
        .collect();
    std::fs::write(
        &source,
        format!("/* Link-time stand-in for the NVIDIA driver. */\n{body}"),
    )?;
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .context("cannot run gcc")?;
    if !status.success() {
        bail!("compiling the driver stub failed ({status})");
    }
    println!("wrote {} ({} driver functions)", library.display(), names.len());
    Ok(())
}

/// The source folder of the cudarc crate the CUDA build resolves to.
fn cudarc_dir(root: &Path) -> Result<PathBuf> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--features", "accnn-infer/cuda"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "cudarc")
        .and_then(|p| p["manifest_path"].as_str())
        .and_then(|m| Path::new(m).parent().map(Path::to_path_buf))
        .context("cargo metadata lists no cudarc package")
}
