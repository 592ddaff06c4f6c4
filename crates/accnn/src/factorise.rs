//! One SVD per layer, computed once and reused for energies and factors.

use accnn_decompose::{ConvSvd, DenseSvd, KernelShape, Precision, WhitenedConvSvd};
use accnn_graph::cost::LayerKind;
use accnn_graph::rewrite::LayerSplit;
use accnn_graph::{Model, Tensor};

use crate::Error;
use crate::analysis::Layer;

/// The SVD of one layer's weight, or the response-weighted one fitted on calibration data.
pub enum Factorisation {
    Conv(ConvSvd),
    Dense(DenseSvd),
    /// Data-aware: singular values are response energies. A dense layer is held as a 1x1
    /// convolution; `kind` says which the layer is.
    Response {
        svd: WhitenedConvSvd,
        kind: LayerKind,
    },
}

/// The weight of the convolution or FC layer at `node` of `model`.
pub(crate) fn layer_weight<'m>(model: &'m Model, node: usize, layer: &str) -> Result<&'m Tensor, Error> {
    let missing = |message: String| Error::Layer {
        layer: layer.to_string(),
        message,
    };
    let weight_node = model
        .graph
        .nodes
        .get(node)
        .and_then(|n| n.inputs.get(1))
        .ok_or_else(|| missing("has no weight input".into()))?;
    let weight_name = &model.graph.nodes[weight_node.node].name;
    model
        .param(weight_name)
        .ok_or_else(|| missing(format!("weight '{weight_name}' is missing")))
}

impl Factorisation {
    /// Computes the SVD of `layer`'s weight.
    pub fn new(model: &Model, layer: &Layer, precision: Precision) -> Result<Self, Error> {
        let weight = layer_weight(model, layer.node, &layer.name)?;
        let wrap = |e: accnn_decompose::DecomposeError| Error::Layer {
            layer: layer.name.clone(),
            message: e.to_string(),
        };
        Ok(match layer.kind {
            LayerKind::Convolution => {
                let s = weight.shape();
                let shape = KernelShape {
                    filters: s[0],
                    channels: s[1],
                    height: s[2],
                    width: s[3],
                };
                Factorisation::Conv(ConvSvd::new(weight.data(), shape, layer.groups, precision).map_err(wrap)?)
            }
            LayerKind::FullyConnected => {
                let s = weight.shape();
                Factorisation::Dense(DenseSvd::new(weight.data(), s[0], s[1], precision).map_err(wrap)?)
            }
        })
    }

    /// Energy kept at per-group rank `1..=max_rank`.
    pub fn energy(&self) -> Vec<f64> {
        match self {
            Factorisation::Conv(s) => accnn_rank::energy_profile(&s.singular_values()),
            Factorisation::Dense(s) => accnn_rank::energy_profile(&[s.singular_values()]),
            Factorisation::Response { svd, .. } => accnn_rank::energy_profile(&[svd.singular_values()]),
        }
    }

    /// The graph rewrite replacing `layer` by its pair at `rank_per_group`. `model` holds the
    /// layer's original weight, at node `node` (dense factors project it; see [`DenseSvd`]).
    pub fn split(&self, model: &Model, node: usize, layer: &Layer, rank_per_group: usize) -> Result<LayerSplit, Error> {
        let wrap = |e: accnn_decompose::DecomposeError| Error::Layer {
            layer: layer.name.clone(),
            message: e.to_string(),
        };
        Ok(match self {
            Factorisation::Conv(s) => {
                let f = s.factors(rank_per_group).map_err(wrap)?;
                let (vs, hs) = (f.vertical_shape().to_vec(), f.horizontal_shape().to_vec());
                LayerSplit::Conv {
                    node: layer.node,
                    vertical: Tensor::new(vs, f.vertical)?,
                    horizontal: Tensor::new(hs, f.horizontal)?,
                }
            }
            Factorisation::Dense(s) => {
                let weight = layer_weight(model, node, &layer.name)?;
                let f = s.factors(weight.data(), rank_per_group).map_err(wrap)?;
                LayerSplit::Fc {
                    node: layer.node,
                    reduce: Tensor::new(vec![f.rank, f.inputs], f.reduce)?,
                    reconstruct: Tensor::new(vec![f.outputs, f.rank], f.reconstruct)?,
                }
            }
            Factorisation::Response { svd, kind } => {
                let f = svd.factors(rank_per_group).map_err(wrap)?;
                let (vs, hs) = (f.vertical_shape().to_vec(), f.horizontal_shape().to_vec());
                match kind {
                    LayerKind::Convolution => LayerSplit::Conv {
                        node: layer.node,
                        vertical: Tensor::new(vs, f.vertical)?,
                        horizontal: Tensor::new(hs, f.horizontal)?,
                    },
                    LayerKind::FullyConnected => LayerSplit::Fc {
                        node: layer.node,
                        reduce: Tensor::new(vec![vs[0], vs[1]], f.vertical)?,
                        reconstruct: Tensor::new(vec![hs[0], hs[1]], f.horizontal)?,
                    },
                }
            }
        })
    }
}
