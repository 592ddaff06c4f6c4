//! Helpers shared by the binary's end-to-end tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `accnn` binary with `args` in `cwd`.
pub fn accnn(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accnn"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("accnn runs")
}
