//! Errors of planning, in the library's terms: each variant holds the values involved, so that a
//! front end can word them for its own flags.

use std::path::PathBuf;

use accnn_graph::cost::LayerKind;

use crate::format::ModelFormat;

/// A section of a `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSection {
    /// `conv_params`: convolutions.
    Conv,
    /// `fc_params`: fully-connected layers.
    Fc,
}

impl ConfigSection {
    /// The section's key in `config.json`.
    pub fn key(self) -> &'static str {
        match self {
            ConfigSection::Conv => "conv_params",
            ConfigSection::Fc => "fc_params",
        }
    }

    /// The kind of layer the section lists.
    pub fn kind(self) -> LayerKind {
        match self {
            ConfigSection::Conv => LayerKind::Convolution,
            ConfigSection::Fc => LayerKind::FullyConnected,
        }
    }

    /// The section a layer of `kind` belongs in.
    pub fn of(kind: LayerKind) -> Self {
        match kind {
            LayerKind::Convolution => ConfigSection::Conv,
            LayerKind::FullyConnected => ConfigSection::Fc,
        }
    }
}

/// Errors of the planning layer; each names the layer, file or value involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Graph(#[from] accnn_graph::GraphError),
    #[error(transparent)]
    Config(#[from] accnn_rank::RankConfigError),
    #[error("layer '{layer}': {message}")]
    Layer { layer: String, message: String },
    #[error("the speed-up ratio must be a number of at least 1, got {ratio}")]
    InvalidRatio { ratio: f64 },
    #[error("the rank alignment must be at least 1")]
    InvalidAlignment,
    #[error("the '{objective}' rank search does not take {option}")]
    ObjectiveOption {
        objective: &'static str,
        option: &'static str,
    },
    #[error("the model has no convolution or fully-connected layer to decompose")]
    NothingToDecompose,
    #[error(
        "ratio {ratio} is unreachable: the layers that cannot be decomposed already cost {fixed} of the {allowed} MACs allowed"
    )]
    UnreachableRatio { ratio: f64, fixed: u64, allowed: u64 },
    #[error("ratio {ratio}: {cause}")]
    Selection { ratio: f64, cause: accnn_rank::RankError },
    #[error(transparent)]
    CostSelection(accnn_rank::RankError),
    #[error("{}: the model has no convolution or fully-connected layer named '{name}'", section.key())]
    UnknownLayer { section: ConfigSection, name: String },
    #[error("{}: layer '{layer}' is a {kind:?} layer; list it under {}", section.key(), ConfigSection::of(*kind).key())]
    WrongSection {
        section: ConfigSection,
        layer: String,
        kind: LayerKind,
    },
    #[error("layer '{layer}': K = {width} is out of range: it must be between {min} and {max}")]
    WidthOutOfRange {
        layer: String,
        width: usize,
        min: usize,
        max: usize,
    },
    #[error("layer '{layer}': K = {width} must be a multiple of the layer's {groups} groups")]
    WidthNotMultiple { layer: String, width: usize, groups: usize },
    #[error("layer '{layer}': no factorisation was computed")]
    NotFactorised { layer: String },
    #[error("{dest}: {}", format.destination_rule())]
    DestinationFormat { dest: String, format: ModelFormat },
    #[error("{dest}: a model read from ONNX is written as ONNX; accnn does not convert it to MXNet")]
    Conversion { dest: String },
    #[error("{dest} would overwrite the input file {}; choose another name", input.display())]
    WouldOverwrite { dest: String, input: PathBuf },
}
