//! One SVD per layer, computed once and reused for energies and factors.

use accnn_decompose::{ConvSvd, DenseSvd, KernelShape, Precision, WhitenedConvSvd};
use accnn_graph::cost::LayerKind;
use accnn_graph::rewrite::LayerSplit;
use accnn_graph::{Model, Tensor};

use crate::Error;
use crate::analysis::Layer;
use crate::correction::{LayerCorrection, corrected_bias, restored_gain, tap_coverage};

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

/// The bias of the layer at `node` of `model`, if it has one.
fn layer_bias(model: &Model, node: usize) -> Option<&Tensor> {
    let n = model.graph.nodes.get(node)?;
    let has_bias = match &n.op {
        accnn_graph::Op::Convolution(c) => !c.no_bias,
        accnn_graph::Op::FullyConnected(f) => !f.no_bias,
        _ => false,
    };
    if !has_bias {
        return None;
    }
    model.param(&model.graph.nodes[n.inputs.get(2)?.node].name)
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
        accnn_rank::energy_profile(&self.singular_values())
    }

    /// Fraction of the singular-value sum (nuclear norm) kept at per-group rank `1..=max_rank`.
    pub fn singular_value_fraction(&self) -> Vec<f64> {
        accnn_rank::seed::singular_value_profile(&self.singular_values())
    }

    /// Singular values, largest first, one list per convolution group (response energies' square
    /// roots when data-aware).
    pub fn singular_values(&self) -> Vec<&[f64]> {
        match self {
            Factorisation::Conv(s) => s.singular_values(),
            Factorisation::Dense(s) => vec![s.singular_values()],
            Factorisation::Response { svd, .. } => vec![svd.singular_values()],
        }
    }

    /// The graph rewrite replacing `layer` by its pair at `rank_per_group`, in `model`: the model the
    /// layer was analysed in, or one derived from it in which earlier layers were already replaced
    /// (the layer is found by name). Dense factors project the layer's weight as `model` holds it.
    ///
    /// With `correction` ([`crate::BiasCorrection::layer`]) the second half's bias gets the
    /// response to the layer's estimated input level that the truncation lost added to it (a
    /// layer without a bias gets one), and a convolution on the main path has its lost gain
    /// restored (the second half scaled, its bias moved so that the response to the level stays
    /// the original's); factors fitted on calibration data are not corrected (their refit already
    /// matches the responses).
    pub fn split(
        &self,
        model: &Model,
        layer: &Layer,
        rank_per_group: usize,
        correction: Option<LayerCorrection>,
    ) -> Result<LayerSplit, Error> {
        let wrap = |e: accnn_decompose::DecomposeError| Error::Layer {
            layer: layer.name.clone(),
            message: e.to_string(),
        };
        let node = layer_node(model, layer)?;
        let tensor = |shape: Vec<usize>, data: Vec<f32>| Tensor::new(shape, data);
        let (rows, cols) = tap_coverage(layer, &model.graph.nodes[node].op);
        // The second half's corrected bias from the per-filter coverage-weighted tap sums of the
        // original and of the pair (as the pair will be written, gain included).
        let corrected = |level: f64, original: &[f64], approx: &[f64]| -> Result<Tensor, Error> {
            // A layer without a bias (one before a BatchNorm that was not folded) gets one.
            let zeros = vec![0f32; original.len()];
            let bias = layer_bias(model, node).map_or(&zeros[..], Tensor::data);
            Ok(tensor(
                vec![original.len()],
                corrected_bias(bias, original, approx, level),
            )?)
        };
        Ok(match self {
            Factorisation::Conv(s) => {
                let mut f = s.factors(rank_per_group).map_err(wrap)?;
                let bias = match correction {
                    None => None,
                    Some(LayerCorrection { level, restore_gain }) => {
                        // Per (filter, channel) once: the gain reads them, the bias their sums.
                        let weight = layer_weight(model, node, &layer.name)?;
                        let filters = weight.shape().first().copied().unwrap_or(0);
                        let original = accnn_decompose::channel_tap_sums(weight.data(), filters, &rows, &cols);
                        let approx = f.channel_tap_sums(&rows, &cols);
                        let gain = if restore_gain {
                            let kept = self.energy().get(rank_per_group - 1).copied().unwrap_or(1.0);
                            restored_gain(&original, &approx, kept)
                        } else {
                            1.0
                        };
                        if gain != 1.0 {
                            for h in &mut f.horizontal {
                                *h = (*h as f64 * gain) as f32;
                            }
                        }
                        let per_filter = |sums: &[f64], scale: f64| -> Vec<f64> {
                            let channels = f.shape.channels.max(1);
                            sums.chunks(channels).map(|c| scale * c.iter().sum::<f64>()).collect()
                        };
                        Some(corrected(
                            level,
                            &per_filter(&original, 1.0),
                            &per_filter(&approx, gain),
                        )?)
                    }
                };
                let (vs, hs) = (f.vertical_shape().to_vec(), f.horizontal_shape().to_vec());
                LayerSplit {
                    bias,
                    ..LayerSplit::new(node, tensor(vs, f.vertical)?, tensor(hs, f.horizontal)?)
                }
            }
            Factorisation::Dense(s) => {
                let weight = layer_weight(model, node, &layer.name)?;
                let f = s.factors(weight.data(), rank_per_group).map_err(wrap)?;
                let bias = match correction {
                    None => None,
                    Some(LayerCorrection { level, .. }) => {
                        let original = accnn_decompose::weighted_tap_sums(weight.data(), f.outputs, &rows, &cols);
                        Some(corrected(level, &original, &f.row_sums())?)
                    }
                };
                LayerSplit {
                    bias,
                    ..LayerSplit::new(
                        node,
                        tensor(vec![f.rank, f.inputs], f.reduce)?,
                        tensor(vec![f.outputs, f.rank], f.reconstruct)?,
                    )
                }
            }
            Factorisation::Response { svd, kind } => {
                let weight = layer_weight(model, node, &layer.name)?;
                let f = svd.factors(weight.data(), rank_per_group).map_err(wrap)?;
                let (vs, hs) = (f.vertical_shape().to_vec(), f.horizontal_shape().to_vec());
                let (vs, hs) = match kind {
                    LayerKind::Convolution => (vs, hs),
                    LayerKind::FullyConnected => (vec![vs[0], vs[1]], vec![hs[0], hs[1]]),
                };
                LayerSplit::new(node, tensor(vs, f.vertical)?, tensor(hs, f.horizontal)?)
            }
        })
    }
}

/// The node of `layer` in `model`: at its analysed index, or found by name in a rewritten model.
pub fn layer_node(model: &Model, layer: &Layer) -> Result<usize, Error> {
    let at_index = model.graph.nodes.get(layer.node).is_some_and(|n| n.name == layer.name);
    if at_index {
        return Ok(layer.node);
    }
    model
        .graph
        .nodes
        .iter()
        .rposition(|n| n.name == layer.name && !matches!(n.op, accnn_graph::Op::Variable))
        .ok_or_else(|| Error::Layer {
            layer: layer.name.clone(),
            message: "not found in the model being rewritten".into(),
        })
}
