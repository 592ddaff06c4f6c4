//! `accnn`: accelerate a trained CNN by low-rank decomposition of its layers. The command lives in the
//! crate's library ([`accnn_cli::run_from`]), shared with the Python package's entry point.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: accnn_cli::Allocator = accnn_cli::Allocator {};

fn main() -> ExitCode {
    // SAFETY: the first thing the program does; no other thread exists yet.
    unsafe { accnn_infer::quiet_candle_workers() };
    ExitCode::from(accnn_cli::run_from(std::env::args_os()))
}
