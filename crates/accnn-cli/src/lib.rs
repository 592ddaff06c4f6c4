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

/// Returns memory freed so far to the OS. The decomposition frees large blocks phase by phase (each
/// layer's SVD workspace, the original weights once rewritten), which mimalloc would otherwise keep:
/// without this, VGG-16's peak is 2.1 GB instead of its live data's 1.5 GB. Harmless when mimalloc is
/// not the global allocator (its heaps are then empty).
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc 2's `mi_option_purge_delay` (the position in its `mi_option_e`, which
/// `libmimalloc-sys` does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped while the returned guard lives, for what only runs models (`bench`,
/// `eval`, the Python package's `benchmark` and `evaluate`): mimalloc hands a freed block's pages
/// back to the OS 10 ms after it is freed, so each inference faulted its large activations in
/// afresh, the kernel zeroing every page (VGG-16 at 224, batch 1, 2 threads, `ACCNN_PROFILE`:
/// conv1_1 2.3-6.0 ms with it, 0.83-0.88 ms without; the whole model 90 → 83-87 ms). Dropping the
/// guard restores the previous delay and returns what was kept ([`release_freed_memory`] cannot
/// while purging is off), so a process that goes on to compress a model has its memory back.
/// Harmless when mimalloc is not the global allocator.
#[must_use = "freed memory is held only while the guard lives"]
pub fn hold_freed_memory() -> FreedMemoryHeld {
    // SAFETY: reads and sets one of mimalloc's global options; no pointers are involved.
    let previous = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    FreedMemoryHeld { previous }
}

/// See [`hold_freed_memory`].
pub struct FreedMemoryHeld {
    previous: std::ffi::c_long,
}

impl Drop for FreedMemoryHeld {
    fn drop(&mut self) {
        // SAFETY: as in `hold_freed_memory`.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, self.previous) };
        release_freed_memory();
    }
}

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

#[cfg(test)]
mod memory_tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: reads one of mimalloc's global options.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn held_memory_is_purged_again_once_the_guard_goes() {
        let before = purge_delay();
        // Option 15 is the purge delay: 10 ms unless the environment sets it (its neighbours
        // default to 1 and 0).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(before, 10);
        }
        {
            let _held = hold_freed_memory();
            assert_eq!(purge_delay(), -1);
        }
        assert_eq!(purge_delay(), before);
    }
}
