//! Project automation: `cargo xtask <command>`.

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
    /// Regenerate the committed fixture `fixtures/vgg16-mini` (1x32x32 input, 10 classes).
    GenFixture,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::GenVgg(args) => vgg::generate(&args),
        Command::GenFixture => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("workspace root")?;
            let prefix = root.join("fixtures/vgg16-mini");
            vgg::generate(&vgg::VggArgs::mini(prefix.to_string_lossy().into_owned()))
        }
    }
}
