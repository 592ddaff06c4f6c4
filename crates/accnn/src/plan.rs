//! Rank plans: choosing them, applying them, reporting on them.

use accnn_graph::cost::LayerKind;
use accnn_graph::rewrite::apply_splits;
use accnn_graph::{Model, Tensor};
use accnn_rank::{RankCandidate, RankConfig, select_ranks_aligned};

use crate::analysis::{Analysis, Layer};
use crate::factorise::Factorisation;
use crate::{Error, Precision};

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

/// One layer to decompose: its index in [`Analysis::layers`] and its rank per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedLayer {
    pub layer: usize,
    pub rank: usize,
}

/// The layers to decompose and their ranks; every other layer stays whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankPlan {
    pub layers: Vec<PlannedLayer>,
}

impl RankPlan {
    /// The plan an optimiser chose: `ranks[j]` (`None`: whole) for analysis layer `layers[j]`.
    fn from_selection(ranks: &[Option<usize>], layers: &[usize]) -> Self {
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
            let layer = &analysis.layers[p.layer];
            let entry = (layer.name.clone(), layer.width(p.rank));
            match layer.kind {
                LayerKind::Convolution => config.conv_params.push(entry),
                LayerKind::FullyConnected => config.fc_params.push(entry),
            }
        }
        config
    }

    fn rank_of(&self, layer: usize) -> Option<usize> {
        self.layers.iter().find(|p| p.layer == layer).map(|p| p.rank)
    }
}

/// Computes the SVD of every layer `wanted` selects, in graph order, calling `progress(i, name)`
/// before layer `i`. The result is aligned with [`Analysis::layers`].
pub fn factorise_all(
    model: &Model,
    analysis: &Analysis,
    precision: Precision,
    mut progress: impl FnMut(usize, &str),
) -> Result<Vec<Option<Factorisation>>, Error> {
    factorise_where(model, analysis, precision, |_| true, &mut progress)
}

/// Like [`factorise_all`], for the layers `wanted` selects only (the others get `None`).
pub fn factorise_where(
    model: &Model,
    analysis: &Analysis,
    precision: Precision,
    wanted: impl Fn(&Layer) -> bool,
    progress: &mut impl FnMut(usize, &str),
) -> Result<Vec<Option<Factorisation>>, Error> {
    analysis
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            if !wanted(layer) {
                return Ok(None);
            }
            progress(i, &layer.name);
            Factorisation::new(model, layer, precision).map(Some)
        })
        .collect()
}

/// The exact energy-product optimum whose MACs over the layers in `scope` are at most
/// `original / ratio`. Layers that no rank makes cheaper stay whole and count at full cost.
pub fn plan_for_ratio(
    analysis: &Analysis,
    svds: &[Option<Factorisation>],
    ratio: f64,
    scope: Scope,
) -> Result<RankPlan, Error> {
    plan_for_ratio_aligned(analysis, svds, ratio, scope, 1)
}

/// [`plan_for_ratio`] with every decomposed layer's width `K` a multiple of `align` (and at least
/// `align`); layers with no such rank cheaper than whole stay whole.
pub fn plan_for_ratio_aligned(
    analysis: &Analysis,
    svds: &[Option<Factorisation>],
    ratio: f64,
    scope: Scope,
    align: usize,
) -> Result<RankPlan, Error> {
    if align == 0 {
        return Err(Error::Plan("--align must be at least 1".into()));
    }
    if !(ratio.is_finite() && ratio >= 1.0) {
        return Err(Error::Plan(format!(
            "--ratio must be a number of at least 1, got {ratio}"
        )));
    }
    let in_scope: Vec<usize> = (0..analysis.layers.len())
        .filter(|&i| scope.includes(analysis.layers[i].kind))
        .collect();
    let total: u64 = in_scope.iter().map(|&i| analysis.layers[i].macs).sum();
    let mut candidates = Vec::new();
    let mut candidate_layers = Vec::new();
    let mut fixed = 0u64;
    for &i in &in_scope {
        let layer = &analysis.layers[i];
        match (&svds.get(i).and_then(Option::as_ref), layer.can_reduce_cost()) {
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
                    energy: svd.energy(),
                });
                candidate_layers.push(i);
            }
            _ => fixed += layer.macs,
        }
    }
    if total == 0 {
        return Err(Error::Plan(
            "the model has no convolution or fully-connected layer to decompose".into(),
        ));
    }
    let target = (total as f64 / ratio).floor() as u64;
    let budget = target.checked_sub(fixed).ok_or_else(|| {
        Error::Plan(format!(
            "ratio {ratio} is unreachable: the layers that cannot be decomposed already cost {fixed} of the {target} MACs allowed"
        ))
    })?;
    let selection =
        select_ranks_aligned(&candidates, budget, align).map_err(|e| Error::Plan(format!("ratio {ratio}: {e}")))?;
    Ok(RankPlan::from_selection(&selection.ranks, &candidate_layers))
}

/// Costs of one layer in any unit (measured nanoseconds, say): whole, and at each probed rank per group.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCosts {
    pub whole: u64,
    pub ranks: Vec<(usize, u64)>,
}

/// The energy optimum under explicit per-layer costs: `costs[i]` for [`Analysis::layers`]`[i]`
/// (`None`: not budgeted, stays whole). Ranks that cost as much as the whole layer or more are never
/// chosen. Returns the plan and the cost of the budgeted layers under it.
pub fn plan_for_costs(
    analysis: &Analysis,
    svds: &[Option<Factorisation>],
    costs: &[Option<LayerCosts>],
    budget: u64,
) -> Result<(RankPlan, u64), Error> {
    let mut choices = Vec::new();
    let mut indices = Vec::new();
    for (i, c) in costs.iter().enumerate() {
        let (Some(c), Some(svd)) = (c, svds.get(i).and_then(Option::as_ref)) else {
            continue;
        };
        choices.push(accnn_rank::LayerChoices {
            name: analysis.layers[i].name.clone(),
            whole_cost: c.whole,
            ranks: c.ranks.clone(),
            energy: svd.energy(),
        });
        indices.push(i);
    }
    let selection = accnn_rank::select_among(&choices, budget).map_err(|e| Error::Plan(e.to_string()))?;
    Ok((RankPlan::from_selection(&selection.ranks, &indices), selection.cost))
}

/// The plan a `config.json` describes, checked against the model: every layer must exist, be of the
/// section's kind, and have a width that is a positive multiple of its groups within its maximum.
pub fn plan_from_config(analysis: &Analysis, config: &RankConfig) -> Result<RankPlan, Error> {
    let mut layers = Vec::new();
    let sections = [
        (LayerKind::Convolution, &config.conv_params, "conv_params"),
        (LayerKind::FullyConnected, &config.fc_params, "fc_params"),
    ];
    for (kind, entries, section) in sections {
        for (name, width) in entries {
            let index = analysis.layers.iter().position(|l| &l.name == name).ok_or_else(|| {
                Error::Plan(format!(
                    "{section}: the model has no convolution or fully-connected layer named '{name}'"
                ))
            })?;
            let layer = &analysis.layers[index];
            if layer.kind != kind {
                let other = if section == "conv_params" {
                    "fc_params"
                } else {
                    "conv_params"
                };
                return Err(Error::Plan(format!(
                    "{section}: layer '{name}' is a {:?} layer; list it under {other}",
                    layer.kind
                )));
            }
            plan_width(layer, *width).map(|rank| layers.push(PlannedLayer { layer: index, rank }))?;
        }
    }
    layers.sort_by_key(|p| p.layer);
    Ok(RankPlan { layers })
}

/// Every convolution and FC layer at its largest rank: the rewritten model computes exactly what the
/// original does (up to rounding), which makes it the reference check of a decomposition path.
pub fn full_rank_plan(analysis: &Analysis) -> RankPlan {
    let layers = (0..analysis.layers.len())
        .map(|layer| PlannedLayer {
            layer,
            rank: analysis.layers[layer].max_rank,
        })
        .collect();
    RankPlan { layers }
}

/// Rank per group for a requested width `K`, or an error naming the layer and the valid range.
pub(crate) fn plan_width(layer: &Layer, width: usize) -> Result<usize, Error> {
    let err = |message: String| Error::Layer {
        layer: layer.name.clone(),
        message,
    };
    if width == 0 || width > layer.max_width() {
        return Err(err(format!(
            "K = {width} is out of range: it must be between {} and {}",
            layer.groups,
            layer.max_width()
        )));
    }
    if !width.is_multiple_of(layer.groups) {
        return Err(err(format!(
            "K = {width} must be a multiple of the layer's {} groups",
            layer.groups
        )));
    }
    Ok(width / layer.groups)
}

/// What decomposition did to one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    pub name: String,
    pub kind: LayerKind,
    /// Intermediate width `K` (as in config.json), `None` when the layer stayed whole.
    pub width: Option<usize>,
    pub max_width: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    /// Fraction of the weight's energy kept (1 when whole).
    pub energy: f64,
}

/// Per-layer and total effect of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub layers: Vec<LayerReport>,
}

impl Report {
    fn ratio(&self, keep: impl Fn(&LayerReport) -> bool) -> f64 {
        let (before, after) = self
            .layers
            .iter()
            .filter(|l| keep(l))
            .fold((0u64, 0u64), |(b, a), l| (b + l.macs_before, a + l.macs_after));
        before as f64 / after.max(1) as f64
    }

    /// Theoretical speed-up over all convolution and fully-connected MACs.
    pub fn speedup(&self) -> f64 {
        self.ratio(|_| true)
    }

    /// Theoretical speed-up over convolution MACs alone.
    pub fn conv_speedup(&self) -> f64 {
        self.ratio(|l| l.kind == LayerKind::Convolution)
    }

    /// Speed-up over the layers a ratio budgets.
    pub fn scope_speedup(&self, scope: Scope) -> f64 {
        self.ratio(|l| scope.includes(l.kind))
    }

    pub fn macs(&self) -> (u64, u64) {
        self.layers
            .iter()
            .fold((0, 0), |(b, a), l| (b + l.macs_before, a + l.macs_after))
    }

    pub fn params(&self) -> (u64, u64) {
        self.layers
            .iter()
            .fold((0, 0), |(b, a), l| (b + l.params_before, a + l.params_after))
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name_w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).max(5);
        writeln!(
            f,
            "{:<name_w$}  {:>4}  {:>11}  {:>14}  {:>14}  {:>7}  {:>8}",
            "layer", "type", "K / max", "MACs before", "MACs after", "speed", "energy"
        )?;
        for l in &self.layers {
            let kind = if l.kind == LayerKind::Convolution { "conv" } else { "fc" };
            let k = l
                .width
                .map_or_else(|| format!("- / {}", l.max_width), |w| format!("{w} / {}", l.max_width));
            writeln!(
                f,
                "{:<name_w$}  {:>4}  {:>11}  {:>14}  {:>14}  {:>6.2}x  {:>7.2}%",
                l.name,
                kind,
                k,
                l.macs_before,
                l.macs_after,
                l.macs_before as f64 / l.macs_after.max(1) as f64,
                100.0 * l.energy
            )?;
        }
        let (before, after) = self.macs();
        let (pb, pa) = self.params();
        writeln!(f, "total MACs {before} -> {after}; parameters {pb} -> {pa}")?;
        // The objective rank selection maximises: plans of equal cost compare by it.
        let log_energy: f64 = self.layers.iter().map(|l| l.energy.max(f64::MIN_POSITIVE).ln()).sum();
        writeln!(f, "kept energy: sum of ln(energy) over the layers {log_energy:.3}")?;
        writeln!(
            f,
            "theoretical speed-up: {:.3}x whole model (conv + fc), {:.3}x convolutions alone",
            self.speedup(),
            self.conv_speedup()
        )
    }
}

/// Rewrites the model by `plan`. `svds` must hold the factorisation of every planned layer. The model is
/// consumed so that its weights move into the result rather than being copied.
pub fn apply_plan(
    mut model: Model,
    analysis: &Analysis,
    svds: &[Option<Factorisation>],
    plan: &RankPlan,
) -> Result<(Model, Report), Error> {
    let uses = model.graph.use_counts();
    let mut splits = Vec::with_capacity(plan.layers.len());
    for p in &plan.layers {
        let layer = &analysis.layers[p.layer];
        splits.push(planned_svd(analysis, svds, p.layer)?.split(&model, layer.node, layer, p.rank)?);
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
    let report = plan_report(analysis, svds, plan)?;
    Ok((apply_splits(model, splits)?, report))
}

fn planned_svd<'s>(
    analysis: &Analysis,
    svds: &'s [Option<Factorisation>],
    layer: usize,
) -> Result<&'s Factorisation, Error> {
    svds.get(layer).and_then(Option::as_ref).ok_or_else(|| Error::Layer {
        layer: analysis.layers[layer].name.clone(),
        message: "no factorisation was computed".into(),
    })
}

/// MACs, parameters and kept energy of every layer under `plan`, without rewriting anything.
pub fn plan_report(analysis: &Analysis, svds: &[Option<Factorisation>], plan: &RankPlan) -> Result<Report, Error> {
    let mut energies = vec![1.0; analysis.layers.len()];
    for p in &plan.layers {
        let svd = planned_svd(analysis, svds, p.layer)?;
        energies[p.layer] = svd.energy().get(p.rank - 1).copied().unwrap_or(1.0);
    }
    let layers = analysis
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let rank = plan.rank_of(i);
            let params_after = match (rank, l.kind) {
                (None, _) => l.params,
                (Some(k), LayerKind::Convolution) => {
                    let w = &l.weight_shape;
                    let bias = l.params - (w.iter().product::<usize>() as u64);
                    (l.width(k) * w[1] * w[2] + w[0] * k * w[3]) as u64 + bias
                }
                (Some(k), LayerKind::FullyConnected) => {
                    let w = &l.weight_shape;
                    let bias = l.params - (w[0] * w[1]) as u64;
                    (k * (w[0] + w[1])) as u64 + bias
                }
            };
            LayerReport {
                name: l.name.clone(),
                kind: l.kind,
                width: rank.map(|k| l.width(k)),
                max_width: l.max_width(),
                macs_before: l.macs,
                macs_after: l.macs_at(rank),
                params_before: l.params,
                params_after,
                energy: energies[i],
            }
        })
        .collect();
    Ok(Report { layers })
}
