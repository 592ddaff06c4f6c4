//! accnn: make a trained CNN faster by low-rank decomposition of its layers.
//!
//! The pipeline, each step usable alone:
//! 1. [`Analysis::new`]: shapes, and the convolution / fully-connected [`Layer`]s with their costs;
//! 2. [`Factorisation::new`]: one SVD per layer (spatial for convolutions, Tai et al.; plain for
//!    dense layers);
//! 3. a [`RankPlan`]: from a speed-up ratio ([`plan_for_ratio`], the exact energy-product optimum
//!    of [`accnn_rank`]), from a `config.json` ([`plan_from_config`]), or by hand;
//! 4. [`apply_plan`]: the rewritten model, and a [`Report`] of MACs and energy per layer.
//!
//! ```
//! # fn main() -> Result<(), accnn::Error> {
//! # let model = accnn::example_model();
//! use accnn::{Analysis, Scope, factorise_all, plan_for_ratio, apply_plan};
//! let analysis = Analysis::new(&model, &[1, 3, 8, 8])?;
//! let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {})?;
//! let plan = plan_for_ratio(&analysis, &svds, 2.0, Scope::All)?;
//! let (fast, report) = apply_plan(model, &analysis, &svds, &plan)?;
//! assert!(report.speedup() > 1.9);
//! # let _ = fast;
//! # Ok(()) }
//! ```

mod analysis;
mod factorise;
mod format;
mod plan;

pub use accnn_decompose::Precision;
pub use accnn_graph::cost::LayerKind;
pub use analysis::{Analysis, Layer};
pub use factorise::Factorisation;
pub use format::{EncodedModel, ModelBytes, ModelFile, ModelSource, check_destination, encode_model, is_onnx};
pub use plan::{
    LayerCosts, LayerReport, PlannedLayer, RankPlan, Report, Scope, apply_plan, factorise_all, factorise_where,
    full_rank_plan, plan_for_costs, plan_for_ratio, plan_for_ratio_aligned, plan_from_config, plan_report,
};

/// Errors of the pipeline; each names the layer or file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Graph(#[from] accnn_graph::GraphError),
    #[error(transparent)]
    Config(#[from] accnn_rank::RankConfigError),
    #[error("layer '{layer}': {message}")]
    Layer { layer: String, message: String },
    #[error("{0}")]
    Plan(String),
}

#[doc(hidden)]
/// A tiny two-convolution, one-FC model used in documentation examples.
pub fn example_model() -> accnn_graph::Model {
    use accnn_graph::ir::{ConvAttrs, FcAttrs};
    use accnn_graph::{Entry, Model, Node, Op, Tensor};
    let mut model = Model::default();
    let mut push = |name: &str, op: Op, inputs: Vec<usize>| {
        let attrs = accnn_graph::mxnet::op_attrs(&op).expect("symmetric padding");
        model.graph.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.into_iter().map(Entry::new).collect(),
            attrs,
        });
        model.graph.nodes.len() - 1
    };
    let conv = |filters| Op::Convolution(ConvAttrs::same([3, 3], filters));
    let d = push("data", Op::Variable, vec![]);
    let w1 = push("c1_weight", Op::Variable, vec![]);
    let b1 = push("c1_bias", Op::Variable, vec![]);
    let c1 = push("c1", conv(16), vec![d, w1, b1]);
    let w2 = push("c2_weight", Op::Variable, vec![]);
    let b2 = push("c2_bias", Op::Variable, vec![]);
    let c2 = push("c2", conv(16), vec![c1, w2, b2]);
    let w3 = push("fc_weight", Op::Variable, vec![]);
    let fc = push(
        "fc",
        Op::FullyConnected(FcAttrs {
            num_hidden: 10,
            no_bias: true,
            flatten: true,
        }),
        vec![c2, w3],
    );
    model.graph.heads = vec![Entry::new(fc)];
    let fill = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 50.0).collect()).expect("shape")
    };
    model.args.insert("c1_weight".into(), fill(vec![16, 3, 3, 3]));
    model.args.insert("c1_bias".into(), fill(vec![16]));
    model.args.insert("c2_weight".into(), fill(vec![16, 16, 3, 3]));
    model.args.insert("c2_bias".into(), fill(vec![16]));
    model.args.insert("fc_weight".into(), fill(vec![10, 16 * 8 * 8]));
    model
}
