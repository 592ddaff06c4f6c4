//! Error type of the graph crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, checking or rewriting a model.
///
/// Messages name the file, node or layer involved so that a command-line user can act on them.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    // `error`, not `source`: the message already holds it, and a source would print it twice in
    // a cause chain.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("node '{node}': unsupported operator '{op}'")]
    UnsupportedOp { node: String, op: String },
    #[error("node '{node}': {message}")]
    Node { node: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl GraphError {
    pub(crate) fn node(node: &str, message: impl Into<String>) -> Self {
        GraphError::Node {
            node: node.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> Self {
        GraphError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        GraphError::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }
}
