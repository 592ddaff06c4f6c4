//! `accnn inspect`: every node with its output shape, and every layer with its costs.

use anyhow::Result;

use crate::flags::ModelArgs;

pub(crate) fn run(args: &ModelArgs) -> Result<()> {
    let loaded = crate::load(args)?;
    say!("{}", loaded.inspection().trim_end())?;
    Ok(())
}
