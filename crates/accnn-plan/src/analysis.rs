//! Which layers can be decomposed, and what they cost whole and per unit of rank.

use accnn_graph::cost::{LayerKind, conv_macs};
use accnn_graph::rewrite::vertical_conv;
use accnn_graph::shape::{Shapes, conv_output_hw, infer_shapes};
use accnn_graph::{Model, Op};

use crate::Error;
use crate::per_layer::{LayerId, LayerSet};

/// A convolution or fully-connected layer of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The key of everything accnn computes for this layer.
    pub id: LayerId,
    /// The layer's node in the analysed model.
    pub node: usize,
    pub name: String,
    pub kind: LayerKind,
    /// Per-image multiply-accumulates of the layer left whole.
    pub macs: u64,
    pub params: u64,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// Weight shape: `(N, C/g, kh, kw)` or `(N, M)`.
    pub weight_shape: Vec<usize>,
    /// Convolution groups (1 for fully-connected layers).
    pub groups: usize,
    /// Largest rank per group of the factorisation.
    pub max_rank: usize,
    /// MACs of the decomposed pair per unit of rank per group.
    pub macs_per_rank: u64,
}

impl Layer {
    /// Intermediate channels (or features) of the pair at `rank_per_group`: what config.json stores.
    pub fn width(&self, rank_per_group: usize) -> usize {
        rank_per_group * self.groups
    }

    /// Largest `width` the factorisation supports.
    pub fn max_width(&self) -> usize {
        self.max_rank * self.groups
    }

    /// MACs after decomposition at `rank_per_group` (`None`: left whole).
    pub fn macs_at(&self, rank_per_group: Option<usize>) -> u64 {
        rank_per_group.map_or(self.macs, |k| k as u64 * self.macs_per_rank)
    }

    /// Whether some rank makes the layer cheaper than whole.
    pub fn can_reduce_cost(&self) -> bool {
        self.macs_per_rank < self.macs
    }
}

/// A convolution or fully-connected layer left whole because its input shape is unknown: it
/// depends on operators accnn does not interpret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLayer {
    pub name: String,
    /// The nodes responsible, as `(node name, operator)`, in graph order.
    pub blockers: Vec<(String, String)>,
}

impl std::fmt::Display for SkippedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let blockers: Vec<String> = self.blockers.iter().map(|(n, op)| format!("'{n}' ({op})")).collect();
        write!(
            f,
            "layer '{}': its input shape depends on {}, which accnn does not support",
            self.name,
            blockers.join(", ")
        )
    }
}

/// Shapes and the decomposable layers of a model for one input shape.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub data_shape: Vec<usize>,
    pub shapes: Shapes,
    pub layers: Vec<Layer>,
    /// Layers whose shapes depend on unsupported operators: they stay whole.
    pub skipped: Vec<SkippedLayer>,
}

impl Analysis {
    /// Infers shapes from `data_shape` (batch first) and lists every convolution and FC layer.
    pub fn new(model: &Model, data_shape: &[usize]) -> Result<Self, Error> {
        let shapes = infer_shapes(model, data_shape)?;
        let costs = accnn_graph::cost::layer_costs(model, &shapes);
        let mut layers = Vec::with_capacity(costs.len());
        for cost in costs {
            let node = &model.graph.nodes[cost.node];
            let input = node.inputs[0];
            let input_shape = shapes.outputs[input.node][input.output].clone();
            let output_shape = shapes.of(cost.node).to_vec();
            let weight_name = &model.graph.nodes[node.inputs[1].node].name;
            let weight_shape = model.param(weight_name).map(|t| t.shape().to_vec()).unwrap_or_default();
            let (groups, max_rank, macs_per_rank) = match &node.op {
                Op::Convolution(c) => {
                    let (h, w) = (input_shape[2], input_shape[3]);
                    let (kh, kw) = (c.kernel[0], c.kernel[1]);
                    let per_group_channels = input_shape[1] / c.num_group;
                    let filters_g = c.num_filter / c.num_group;
                    let max_rank = (per_group_channels * kh).min(filters_g * kw);
                    // The vertical half keeps the full input width (kernel width 1, no horizontal
                    // padding or stride), so its cost is counted on that width.
                    let v = vertical_conv(c, c.num_group);
                    let mid = conv_output_hw(&v, h, w).unwrap_or((0, 0));
                    let vertical = conv_macs(&v, input_shape[1], mid);
                    let horizontal = (c.num_filter * kw) as u64 * (output_shape[2] * output_shape[3]) as u64;
                    (c.num_group, max_rank, vertical + horizontal)
                }
                Op::FullyConnected(f) => {
                    let (rows, features) = f.rows_and_features(&input_shape)?;
                    (
                        1,
                        features.min(f.num_hidden),
                        rows as u64 * (features + f.num_hidden) as u64,
                    )
                }
                _ => continue,
            };
            layers.push(Layer {
                id: LayerId(layers.len()),
                node: cost.node,
                name: cost.name,
                kind: cost.kind,
                macs: cost.macs,
                params: cost.params,
                input_shape,
                output_shape,
                weight_shape,
                groups,
                max_rank,
                macs_per_rank,
            });
        }
        let skipped = model
            .graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| matches!(n.op, Op::Convolution(_) | Op::FullyConnected(_)) && !shapes.is_known(*i))
            .map(|(i, n)| SkippedLayer {
                name: n.name.clone(),
                blockers: shapes
                    .blockers(&model.graph, i)
                    .into_iter()
                    .filter_map(|b| match &model.graph.nodes[b].op {
                        Op::Opaque { op_type, .. } => Some((model.graph.nodes[b].name.clone(), op_type.clone())),
                        _ => None,
                    })
                    .collect(),
            })
            .collect();
        Ok(Analysis {
            data_shape: data_shape.to_vec(),
            shapes,
            layers,
            skipped,
        })
    }

    /// The layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The layer `id` names. Panics on an id of another analysis with more layers.
    pub fn get(&self, id: LayerId) -> &Layer {
        &self.layers[id.index()]
    }

    /// The layers `keep` selects.
    pub fn select(&self, keep: impl Fn(&Layer) -> bool) -> LayerSet {
        self.layers.iter().filter(|l| keep(l)).map(|l| l.id).collect()
    }

    /// Every layer some rank makes cheaper: what a ratio can decompose.
    pub fn reducible(&self) -> LayerSet {
        self.select(Layer::can_reduce_cost)
    }
}

impl std::ops::Index<LayerId> for Analysis {
    type Output = Layer;

    fn index(&self, id: LayerId) -> &Layer {
        self.get(id)
    }
}
