//! Project automation: `cargo xtask <command>`.

mod mxnet_check;
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
    /// Write a VGG-16-topology MXNet checkpoint with weights from a fixed seed.
    GenVgg(vgg::VggArgs),
    /// Train the fixture on Fashion-MNIST (candle autograd), fold BatchNorm, write fixtures/vgg16-mini.
    TrainFixture(train::TrainArgs),
    /// Check that checkpoints accnn writes load and run in MXNet 1.9 (needs a Python with mxnet).
    MxnetCheck(mxnet_check::MxnetCheckArgs),
}

fn main() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    match Cli::parse().command {
        Command::GenVgg(args) => vgg::generate(&args),
        Command::MxnetCheck(args) => mxnet_check::run(root, &args),
        Command::TrainFixture(args) => train::run(root, &args),
    }
}
