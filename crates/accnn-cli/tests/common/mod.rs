//! Helpers shared by the binary's end-to-end tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fixture's input preprocessing: Fashion-MNIST's mean and deviation, 28x28 padded to 32x32.
#[allow(dead_code)] // not every test binary uses it
pub const FASHION_MNIST_INPUT: [&str; 6] = ["--mean", "0.286", "--std", "0.353", "--pad", "2"];

/// Runs the `accnn` binary with `args` in `cwd`.
pub fn accnn(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accnn"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("accnn runs")
}

/// Every file under `dir` with its bytes.
#[allow(dead_code)] // not every test binary uses it
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}
