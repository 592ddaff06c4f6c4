//! MXNet checkpoints: `PREFIX-symbol.json` plus `PREFIX-EPOCH.params`.

mod ops;
mod params;
mod symbol;

use std::path::PathBuf;

pub use ops::{op_attrs, parse_op};

/// Parses a shape attribute such as MXNet's `__shape__` = `(1, 3, 224, 224)`; `None` if any
/// dimension is not a positive integer.
pub fn parse_tuple_shape(text: &str) -> Option<Vec<usize>> {
    let dims = ops::parse_tuple(text)?;
    dims.iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
        .collect()
}
pub use params::{ParamSet, ParamsFile, encode_params, parse_params, read_params};
pub use symbol::{parse_symbol, symbol_json};

use crate::error::GraphError;
use crate::io::{FileContent, write_contents_atomically};
use crate::ir::Model;

/// The two files of an MXNet checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointPaths {
    pub symbol: PathBuf,
    pub params: PathBuf,
}

impl CheckpointPaths {
    /// `PREFIX-symbol.json` and `PREFIX-%04d.params`, as MXNet's `save_checkpoint` names them.
    pub fn new(prefix: &str, epoch: u32) -> Self {
        CheckpointPaths {
            symbol: PathBuf::from(format!("{prefix}-symbol.json")),
            params: PathBuf::from(format!("{prefix}-{epoch:04}.params")),
        }
    }
}

/// Reads a checkpoint and checks that every weight the graph names is present.
pub fn load_checkpoint(prefix: &str, epoch: u32) -> Result<Model, GraphError> {
    let paths = CheckpointPaths::new(prefix, epoch);
    let text = std::fs::read_to_string(&paths.symbol).map_err(|e| GraphError::io(&paths.symbol, e))?;
    let graph = parse_symbol(&text, &paths.symbol)?;
    let set = read_params(&paths.params)?;
    Ok(Model {
        graph,
        args: set.args,
        aux: set.aux,
    })
}

/// Writes a checkpoint. Both files are written to temporary files beside their targets and renamed
/// into place only when both are complete, so an interrupted run leaves no partial checkpoint.
pub fn save_checkpoint(model: &Model, prefix: &str, epoch: u32) -> Result<CheckpointPaths, GraphError> {
    let paths = CheckpointPaths::new(prefix, epoch);
    let symbol = symbol_json(&model.graph);
    let params = ParamsFile {
        args: &model.args,
        aux: &model.aux,
    };
    write_contents_atomically(&[
        (paths.symbol.as_path(), FileContent::Bytes(symbol.as_bytes())),
        (paths.params.as_path(), FileContent::Streamed(&params)),
    ])?;
    Ok(paths)
}
