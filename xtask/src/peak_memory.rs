//! `cargo xtask peak-memory`: the peak resident memory of `accnn` decomposing VGG-16, next to the
//! size of the model file (the target is under 3x).
//!
//! The release binary runs as a child process; its peak is the `ru_maxrss` the kernel reports for
//! that child when it is reaped (`wait4`), so nothing samples or guesses.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug)]
pub struct PeakMemoryArgs {
    /// A VGG-16 MXNet prefix (epoch 1); generated with a fixed seed under --work when not given.
    #[arg(long)]
    pub model: Option<String>,
    /// Where to put the generated model and the outputs.
    #[arg(long, default_value = "target/peak-memory")]
    pub work: PathBuf,
    /// The runs to measure: accnn arguments after `-m MODEL`, one run per value.
    #[arg(long, default_values_t = vec!["--ratio 2.4".to_string(), "--config fixtures/vgg16-config.json".to_string()])]
    pub run: Vec<String>,
}

/// Runs `command` to completion: whether it succeeded, and its peak resident memory in bytes.
fn run_measured(command: &mut Command) -> Result<(bool, u64)> {
    let child = command.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes only the status and the rusage struct it is given; the child is reaped
    // here, and std's `Child` never waits on drop.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
            bail!("wait4 failed: {}", std::io::Error::last_os_error());
        }
        usage
    };
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, usage.ru_maxrss as u64 * 1024))
}

pub fn run(root: &Path, args: &PeakMemoryArgs) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "accnn-cli"])
        .current_dir(root)
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p accnn-cli failed");
    }
    let accnn = root.join("target/release/accnn");
    let work = root.join(&args.work);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            let prefix = work.join("vgg16").to_string_lossy().into_owned();
            if !Path::new(&format!("{prefix}-0001.params")).exists() {
                let vgg = crate::vgg::VggArgs::full(prefix.clone());
                crate::vgg::generate(&vgg)?;
            }
            prefix
        }
    };
    let params = PathBuf::from(format!("{model}-0001.params"));
    let size = std::fs::metadata(&params)
        .with_context(|| format!("cannot read {}", params.display()))?
        .len();
    println!("model {model}: params file {:.1} MB", size as f64 / 1e6);
    println!("| run | peak resident memory | / model file |");
    println!("|---|---|---|");
    for (i, extra) in args.run.iter().enumerate() {
        let out = work.join(format!("out{i}")).to_string_lossy().into_owned();
        let config_out = work.join(format!("out{i}.json"));
        let mut command = Command::new(&accnn);
        command
            .args(["-m", &model])
            .args(extra.split_whitespace())
            .args(["--save-model", &out, "--config-out"])
            .arg(&config_out)
            .current_dir(root)
            .stdout(std::process::Stdio::null());
        let (ok, peak) = run_measured(&mut command).with_context(|| format!("running {}", accnn.display()))?;
        if !ok {
            bail!("accnn -m {model} {extra} failed");
        }
        println!(
            "| `accnn -m MODEL {extra}` | {:.2} GB | {:.2}x |",
            peak as f64 / 1e9,
            peak as f64 / size as f64
        );
    }
    Ok(())
}
