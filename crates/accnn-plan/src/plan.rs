//! Rank plans: choosing them and applying them.

use accnn_graph::cost::LayerKind;
use accnn_graph::rewrite::apply_splits;
use accnn_graph::{Model, Tensor};
use accnn_rank::{RankCandidate, RankConfig};

use crate::analysis::{Analysis, Layer};
use crate::correction::BiasCorrection;
use crate::factorise::Factorisation;
use crate::objective::{Objective, plan_seed};
use crate::per_layer::{LayerId, LayerSet, PerLayer};
use crate::report::{Report, plan_report};
use crate::{ConfigSection, Error, Precision};

/// Which layers a speed-up ratio budgets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Convolutions and fully-connected layers.
    #[default]
    All,
    /// Convolutions only, like the original tool; fully-connected layers stay whole.
    ConvOnly,
}

impl Scope {
    pub fn includes(self, kind: LayerKind) -> bool {
        self == Scope::All || kind == LayerKind::Convolution
    }
}

/// One layer to decompose and its rank per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedLayer {
    pub layer: LayerId,
    pub rank: usize,
}

/// The layers to decompose and their ranks; every other layer stays whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankPlan {
    pub layers: Vec<PlannedLayer>,
}

impl RankPlan {
    /// The plan an optimiser chose: `ranks[j]` (`None`: whole) for layer `layers[j]`.
    pub(crate) fn from_selection(ranks: &[Option<usize>], layers: &[LayerId]) -> Self {
        let layers = ranks
            .iter()
            .zip(layers)
            .filter_map(|(rank, &layer)| rank.map(|rank| PlannedLayer { layer, rank }))
            .collect();
        RankPlan { layers }
    }

    /// The plan in the original tool's `config.json` schema.
    pub fn to_config(&self, analysis: &Analysis) -> RankConfig {
        let mut config = RankConfig::default();
        for p in &self.layers {
            let layer = &analysis[p.layer];
            let entry = (layer.name.clone(), layer.width(p.rank));
            match layer.kind {
                LayerKind::Convolution => config.conv_params.push(entry),
                LayerKind::FullyConnected => config.fc_params.push(entry),
            }
        }
        config
    }

    /// The rank per group of `layer`, `None` when it stays whole.
    pub fn rank_of(&self, layer: LayerId) -> Option<usize> {
        self.layers.iter().find(|p| p.layer == layer).map(|p| p.rank)
    }

    /// The layers the plan decomposes.
    pub fn layer_set(&self) -> LayerSet {
        self.layers.iter().map(|p| p.layer).collect()
    }
}

/// Computes the SVD of every layer, calling `progress(layer, name)` as each is done.
pub fn factorise_all(
    model: &Model,
    analysis: &Analysis,
    precision: Precision,
    mut progress: impl FnMut(LayerId, &str),
) -> Result<PerLayer<Factorisation>, Error> {
    let all = analysis.select(|_| true);
    factorise_layers(model, analysis, &all, precision, &mut progress)
}

/// Like [`factorise_all`], for the layers of `wanted` only.
///
/// Layers are factorised concurrently, one worker per core (at most four), the costliest first:
/// the largest eigensolvers and SVDs are mostly sequential, so two of them, or one and the many
/// small ones, keep the cores busy together. `progress` is called on the calling thread, in the
/// order layers finish.
pub fn factorise_layers(
    model: &Model,
    analysis: &Analysis,
    wanted: &LayerSet,
    precision: Precision,
    progress: &mut impl FnMut(LayerId, &str),
) -> Result<PerLayer<Factorisation>, Error> {
    factorise_concurrently(
        analysis,
        wanted,
        |id| Factorisation::new(model, &analysis[id], precision),
        progress,
    )
}

/// Runs `factorise` on the layers of `wanted` concurrently, as [`factorise_layers`] does (one
/// worker per core, at most four, costliest layers first), for factorisations computed otherwise
/// (from calibration statistics). When layers fail, the error returned is that of the first failing
/// layer in graph order, whatever order the workers finish in; a failure skips the layers after it.
pub fn factorise_concurrently<T: Send, E: Send>(
    analysis: &Analysis,
    wanted: &LayerSet,
    factorise: impl Fn(LayerId) -> Result<T, E> + Sync,
    progress: &mut impl FnMut(LayerId, &str),
) -> Result<PerLayer<T>, E> {
    let mut order: Vec<LayerId> = wanted.iter().collect();
    // The SVD's cost grows with the cube of the reshaped kernel's smaller side times its larger.
    let cost = |id: &LayerId| {
        let l = &analysis[*id];
        l.params as f64 * (l.max_rank as f64)
    };
    order.sort_by(|a, b| cost(b).total_cmp(&cost(a)));
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(order.len().max(1));
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    // The graph index of the first layer known to fail: layers after it cannot change the error.
    let first_failed = AtomicUsize::new(usize::MAX);
    let mut out = PerLayer::new();
    let mut failure: Option<(LayerId, E)> = None;
    std::thread::scope(|scope| {
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let done = done.clone();
            let (order, next, first_failed, factorise) = (&order, &next, &first_failed, &factorise);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&id) = order.get(k) else { break };
                    if id.index() > first_failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    let result = factorise(id);
                    if result.is_err() {
                        first_failed.fetch_min(id.index(), Ordering::Relaxed);
                    }
                    if done.send((id, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done);
        for (id, result) in finished {
            match result {
                Ok(f) => {
                    progress(id, &analysis[id].name);
                    out.insert(id, f);
                }
                Err(e) if failure.as_ref().is_none_or(|(first, _)| id < *first) => failure = Some((id, e)),
                Err(_) => {}
            }
        }
    });
    match failure {
        Some((_, e)) => Err(e),
        None => Ok(out),
    }
}

/// The exact energy-product optimum whose MACs over the layers in `scope` are at most
/// `original / ratio`. Layers that no rank makes cheaper stay whole and count at full cost.
pub fn plan_for_ratio(
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    ratio: f64,
    scope: Scope,
) -> Result<RankPlan, Error> {
    plan_for_ratio_aligned(analysis, svds, ratio, scope, 1)
}

/// [`plan_for_ratio`] with every decomposed layer's width `K` a multiple of `align` (and at least
/// `align`); layers with no such rank cheaper than whole stay whole.
pub fn plan_for_ratio_aligned(
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    ratio: f64,
    scope: Scope,
    align: usize,
) -> Result<RankPlan, Error> {
    plan_exact(analysis, svds, ratio, scope, align, Factorisation::energy, false)
}

/// The exact optimum of `Σ ln profile(K)` under the MAC budget, `profile` giving each layer's
/// kept fraction at every rank.
fn plan_exact(
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    ratio: f64,
    scope: Scope,
    align: usize,
    profile: impl Fn(&Factorisation) -> Vec<f64>,
    every_layer: bool,
) -> Result<RankPlan, Error> {
    if align == 0 {
        return Err(Error::InvalidAlignment);
    }
    check_ratio(ratio)?;
    let in_scope: Vec<&Layer> = analysis.layers.iter().filter(|l| scope.includes(l.kind)).collect();
    let total: u64 = in_scope.iter().map(|l| l.macs).sum();
    let mut candidates = Vec::new();
    let mut candidate_layers = Vec::new();
    let mut fixed = 0u64;
    for layer in in_scope {
        match (svds.get(layer.id), layer.can_reduce_cost()) {
            (Some(svd), true) => {
                candidates.push(RankCandidate {
                    name: layer.name.clone(),
                    kind: match layer.kind {
                        LayerKind::Convolution => accnn_rank::LayerKind::Convolution,
                        LayerKind::FullyConnected => accnn_rank::LayerKind::FullyConnected,
                    },
                    original_cost: layer.macs,
                    cost_per_rank: layer.macs_per_rank,
                    rank_unit: layer.groups,
                    energy: profile(svd),
                });
                candidate_layers.push(layer.id);
            }
            _ => fixed += layer.macs,
        }
    }
    if total == 0 {
        return Err(Error::NothingToDecompose);
    }
    let allowed = (total as f64 / ratio).floor() as u64;
    let budget = allowed
        .checked_sub(fixed)
        .ok_or(Error::UnreachableRatio { ratio, fixed, allowed })?;
    let choices: Vec<accnn_rank::LayerChoices> =
        candidates.iter().map(|c| c.choices_with(align, every_layer)).collect();
    let selection = accnn_rank::select_among(&choices, budget).map_err(|cause| Error::Selection { ratio, cause })?;
    Ok(RankPlan::from_selection(&selection.ranks, &candidate_layers))
}

/// The plan `objective` chooses for `ratio` over the layers in `scope`, widths multiples of `align`.
/// [`Objective::Seed`] is the original's selector as it was: it budgets convolutions only and takes
/// no alignment (an `align` above 1 is refused).
pub fn plan_for_objective(
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    ratio: f64,
    scope: Scope,
    align: usize,
    objective: Objective,
) -> Result<RankPlan, Error> {
    match objective.exact_form() {
        Some((profile, every_layer)) => plan_exact(analysis, svds, ratio, scope, align, profile, every_layer),
        None if align > 1 => Err(Error::ObjectiveOption {
            objective: objective.name(),
            option: "a rank alignment",
        }),
        None => plan_seed(analysis, svds, ratio),
    }
}

/// A speed-up ratio must be a finite number of at least 1.
pub fn check_ratio(ratio: f64) -> Result<(), Error> {
    if ratio.is_finite() && ratio >= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidRatio { ratio })
    }
}

/// Costs of one layer in any unit (measured nanoseconds, say): whole, and at each probed rank per group.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCosts {
    pub whole: u64,
    pub ranks: Vec<(usize, u64)>,
}

/// The energy optimum under explicit per-layer costs: layers without costs are not budgeted and stay
/// whole. Ranks that cost as much as the whole layer or more are never chosen. Returns the plan and
/// the cost of the budgeted layers under it.
pub fn plan_for_costs(
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    costs: &PerLayer<LayerCosts>,
    budget: u64,
) -> Result<(RankPlan, u64), Error> {
    let mut choices = Vec::new();
    let mut ids = Vec::new();
    for (id, c) in costs.iter() {
        let Some(svd) = svds.get(id) else {
            continue;
        };
        choices.push(accnn_rank::LayerChoices {
            name: analysis[id].name.clone(),
            whole_cost: c.whole,
            ranks: c.ranks.clone(),
            energy: svd.energy(),
            must_decompose: false,
        });
        ids.push(id);
    }
    let selection = accnn_rank::select_among(&choices, budget).map_err(Error::CostSelection)?;
    Ok((RankPlan::from_selection(&selection.ranks, &ids), selection.cost))
}

/// The plan a `config.json` describes, checked against the model: every layer must exist, be of the
/// section's kind, and have a width that is a positive multiple of its groups within its maximum.
pub fn plan_from_config(analysis: &Analysis, config: &RankConfig) -> Result<RankPlan, Error> {
    let mut layers = Vec::new();
    let sections = [
        (ConfigSection::Conv, &config.conv_params),
        (ConfigSection::Fc, &config.fc_params),
    ];
    for (section, entries) in sections {
        for (name, width) in entries {
            let layer = analysis.layer(name).ok_or_else(|| Error::UnknownLayer {
                section,
                name: name.clone(),
            })?;
            if layer.kind != section.kind() {
                return Err(Error::WrongSection {
                    section,
                    layer: name.clone(),
                    kind: layer.kind,
                });
            }
            layers.push(PlannedLayer {
                layer: layer.id,
                rank: plan_width(layer, *width)?,
            });
        }
    }
    layers.sort_by_key(|p| p.layer);
    Ok(RankPlan { layers })
}

/// Every convolution and FC layer at its largest rank: the rewritten model computes exactly what the
/// original does (up to rounding), which makes it the reference check of a decomposition path.
pub fn full_rank_plan(analysis: &Analysis) -> RankPlan {
    let layers = analysis
        .layers
        .iter()
        .map(|l| PlannedLayer {
            layer: l.id,
            rank: l.max_rank,
        })
        .collect();
    RankPlan { layers }
}

/// Rank per group for a requested width `K`, or an error naming the layer and the valid range.
pub fn plan_width(layer: &Layer, width: usize) -> Result<usize, Error> {
    if width == 0 || width > layer.max_width() {
        return Err(Error::WidthOutOfRange {
            layer: layer.name.clone(),
            width,
            min: layer.groups,
            max: layer.max_width(),
        });
    }
    if !width.is_multiple_of(layer.groups) {
        return Err(Error::WidthNotMultiple {
            layer: layer.name.clone(),
            width,
            groups: layer.groups,
        });
    }
    Ok(width / layer.groups)
}

/// Rewrites the model by `plan`. `svds` must hold the factorisation of every planned layer. The model is
/// consumed so that its weights move into the result rather than being copied.
///
/// With `correction`, each decomposed layer with an estimated input level gets the data-free bias
/// correction ([`BiasCorrection`]; a layer without a bias gets one), and each convolution on the
/// main path its gain back; the report counts both.
pub fn apply_plan(
    mut model: Model,
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    plan: &RankPlan,
    correction: Option<&BiasCorrection>,
) -> Result<(Model, Report), Error> {
    let uses = model.graph.use_counts();
    let mut splits = Vec::with_capacity(plan.layers.len());
    let (mut corrected, mut gained) = (0, 0);
    for p in &plan.layers {
        let layer = &analysis[p.layer];
        let how = correction.and_then(|c| c.layer(p.layer));
        let svd = planned_svd(analysis, svds, p.layer)?;
        let split = svd.split(&model, layer, p.rank, how)?;
        corrected += usize::from(split.bias.is_some());
        gained += usize::from(how.is_some_and(|h| h.restore_gain) && matches!(svd, Factorisation::Conv(_)));
        splits.push(split);
        // Once its factors exist a layer's own weight is dead (unless another layer shares it): free
        // it now, not after every layer's factors were made (VGG-16's fc6 alone is 0.4 GB).
        if let Some(weight) = model.graph.nodes[layer.node].inputs.get(1)
            && uses[weight.node] == 1
        {
            // An empty stand-in keeps the variable recognisably a weight, so the rewrite drops it.
            let name = &model.graph.nodes[weight.node].name;
            if let Some(t) = model.args.get_mut(name) {
                *t = Tensor::new(vec![0], Vec::new())?;
            }
        }
    }
    let mut report = plan_report(analysis, svds, plan)?;
    report.bias_corrected = correction.map(|_| corrected);
    report.gain_restored = correction.map(|_| gained);
    Ok((apply_splits(model, splits)?, report))
}

/// The factorisation of a planned layer, or an error naming the layer.
pub(crate) fn planned_svd<'s>(
    analysis: &Analysis,
    svds: &'s PerLayer<Factorisation>,
    layer: LayerId,
) -> Result<&'s Factorisation, Error> {
    svds.get(layer).ok_or_else(|| Error::NotFactorised {
        layer: analysis[layer].name.clone(),
    })
}
