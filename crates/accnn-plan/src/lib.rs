//! accnn's planning layer: which layers of a model can be decomposed and what they cost, one
//! factorisation per layer, rank plans (from a speed-up ratio, explicit costs or a `config.json`),
//! and the rewritten model with its per-layer [`Report`].
//!
//! This is the part of accnn that needs no inference engine; the `accnn` crate drives it (with
//! calibration and measured latency) behind one call. Used alone:
//! 1. [`Analysis::new`]: shapes, and the convolution / fully-connected [`Layer`]s with their costs,
//!    each keyed by a [`LayerId`];
//! 2. [`factorise_all`] / [`factorise_layers`]: one SVD per layer (spatial for convolutions, Tai et
//!    al.; plain for dense layers), in a [`PerLayer`] map;
//! 3. a [`RankPlan`]: from a speed-up ratio ([`plan_for_ratio`], the exact energy-product optimum
//!    of [`accnn_rank`]), from a `config.json` ([`plan_from_config`]), or by hand;
//! 4. [`apply_plan`]: the rewritten model, and a [`Report`] of MACs and energy per layer.
//!
//! ```
//! # fn main() -> Result<(), accnn_plan::Error> {
//! # let model = accnn_plan::example_model();
//! use accnn_plan::{Analysis, Scope, factorise_all, plan_for_ratio, apply_plan};
//! let analysis = Analysis::new(&model, &[1, 3, 8, 8])?;
//! let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {})?;
//! let plan = plan_for_ratio(&analysis, &svds, 2.0, Scope::All)?;
//! let (fast, report) = apply_plan(model, &analysis, &svds, &plan, None)?;
//! assert!(report.speedup() > 1.9);
//! # let _ = fast;
//! # Ok(()) }
//! ```

mod analysis;
mod correction;
mod error;
mod factorise;
mod format;
mod objective;
mod per_layer;
mod plan;
mod report;

pub use accnn_decompose::Precision;
pub use accnn_graph::cost::LayerKind;
pub use analysis::{Analysis, Layer, SkippedLayer};
pub use correction::{BiasCorrection, LayerCorrection};
pub use error::{ConfigSection, Error};
pub use factorise::{Factorisation, layer_node};
pub use format::{
    EncodedModel, ModelBytes, ModelFile, ModelFormat, ModelSource, SaveAs, check_destination, encode_model, is_onnx,
};
pub use objective::{Objective, plan_seed, seed_layers};
pub use per_layer::{LayerId, LayerSet, PerLayer};
pub use plan::{
    LayerCosts, PlannedLayer, RankPlan, Scope, apply_plan, check_ratio, factorise_all, factorise_concurrently,
    factorise_layers, full_rank_plan, plan_for_costs, plan_for_objective, plan_for_ratio, plan_for_ratio_aligned,
    plan_from_config, plan_width,
};
pub use report::{LayerReport, Report, plan_report};

#[doc(hidden)]
/// A tiny two-convolution, one-FC model used in documentation examples.
pub fn example_model() -> accnn_graph::Model {
    use accnn_graph::ir::ConvAttrs;
    use accnn_graph::{ModelBuilder, Tensor};
    let fill = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 50.0).collect()).expect("shape")
    };
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let c1 = b.conv(
        "c1",
        x,
        ConvAttrs::same([3, 3], 16),
        fill(vec![16, 3, 3, 3]),
        Some(fill(vec![16])),
    );
    let c2 = b.conv(
        "c2",
        c1,
        ConvAttrs::same([3, 3], 16),
        fill(vec![16, 16, 3, 3]),
        Some(fill(vec![16])),
    );
    let fc = b.dense("fc", c2, fill(vec![10, 16 * 8 * 8]), None, true);
    b.build(&[fc]).expect("a valid graph")
}
