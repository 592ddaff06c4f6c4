//! The `accnn` command as a library: [`run_from`] parses arguments, dispatches, prints and returns the
//! exit code, so that the binary (`src/main.rs`) and the Python package's `accnn` entry point are the
//! same program.
//!
//! `run_from` dispatches; `flags` turns arguments into one checked request; the `accnn` library does
//! the work; `errors` words its errors for the flags ([`explain`], shared with the Python bindings).

/// `println!` that neither panics nor stops the work when the reader of stdout has gone away
/// (`accnn … | head`): the model is still written. Other write errors are returned.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        match writeln!(std::io::stdout().lock(), $($arg)*) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }};
}

mod accelerate;
mod bench;
mod calibrate;
mod data;
mod engine_args;
mod errors;
mod eval;
mod finetune;
mod flags;
mod inspect;
mod memory;
mod runtime_args;

use std::ffi::OsString;

use accnn::LoadedModel;
use anyhow::Result;
use clap::Parser;

use accelerate::Asked;
use flags::{Cli, Command, ModelArgs};

pub use accelerate::{refit_bar, svd_bar};
pub use errors::explain;
pub use eval::count_bar;

/// The allocator the `accnn` binary (and the Python extension) installs: large, short-lived buffers
/// (activations, SVD workspaces) are reused instead of being returned to the OS and faulted in again on
/// every layer, which glibc's allocator does for big blocks.
pub type Allocator = mimalloc::MiMalloc;

pub use memory::{FreedMemoryHeld, PhaseMemory, hold_freed_memory, release_freed_memory};

/// Reads the model as it is (no BatchNorm folding), warning about non-finite weights.
pub(crate) fn load(args: &ModelArgs) -> Result<LoadedModel> {
    loaded(accnn::load_model(args.input()?, args.shape()?.as_deref(), false))
}

/// A model read by the library, with its warnings printed and its error worded for the flags.
pub(crate) fn loaded(read: Result<LoadedModel, accnn::Error>) -> Result<LoadedModel> {
    let loaded = read.map_err(errors::explain)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        None => {
            let args = &cli.accelerate;
            let asked = match args.requested() {
                Some((ratio, scope)) => Asked::Ratio(ratio, scope),
                None => Asked::Config,
            };
            let source = args.calibration_source();
            accelerate::run(args.request(&cli.model)?, source, asked)
        }
        Some(Command::Conv(args)) => accelerate::run(
            args.request(accnn::LayerKind::Convolution)?,
            args.calibration_source(),
            Asked::Layer,
        ),
        Some(Command::Fc(args)) => accelerate::run(
            args.request(accnn::LayerKind::FullyConnected)?,
            args.calibration_source(),
            Asked::Layer,
        ),
        Some(Command::Inspect { model }) => inspect::run(model),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Eval(args)) => eval::run(args),
        Some(Command::Finetune(args)) => finetune::run(args),
    }
}

/// Runs the `accnn` command on `args` (the program name first, as `std::env::args_os` gives them):
/// the output on stdout, errors as one `error: …` line on stderr; returns the exit status (0: success,
/// 1: the work failed, 2: the arguments were refused).
pub fn run_from<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // --help and --version land here too, with a zero exit code.
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
