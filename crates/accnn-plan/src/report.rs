//! What a plan does to each layer: MACs, parameters and kept energy, and the printed table.

use accnn_graph::cost::LayerKind;

use crate::Error;
use crate::analysis::Analysis;
use crate::factorise::Factorisation;
use crate::per_layer::PerLayer;
use crate::plan::{RankPlan, Scope, planned_svd};

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
    /// What chose the ranks, printed next to the kept energy (a `--rank-search` objective, a
    /// config file); `None` leaves it unsaid.
    pub chosen_by: Option<String>,
    /// With data-free bias correction: how many decomposed layers had their bias corrected.
    pub bias_corrected: Option<usize>,
    /// With data-free correction: how many decomposed convolutions on the main path had their lost
    /// gain restored.
    pub gain_restored: Option<usize>,
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
        match &self.chosen_by {
            Some(by) => writeln!(
                f,
                "kept energy: sum of ln(energy) over the layers {log_energy:.3}; ranks chosen by {by}"
            )?,
            None => writeln!(f, "kept energy: sum of ln(energy) over the layers {log_energy:.3}")?,
        }
        if let Some(n) = self.bias_corrected {
            let decomposed = self.layers.iter().filter(|l| l.width.is_some()).count();
            writeln!(
                f,
                "bias correction: {n} of {decomposed} decomposed layers given back the response to their input's estimated mean (data-free; --no-bias-correction turns it off)"
            )?;
            if let Some(g) = self.gain_restored.filter(|&g| g > 0) {
                writeln!(
                    f,
                    "gain restored: {g} decomposed spatial convolutions every path to the output passes through given back the response energy they lost (off with the bias correction)"
                )?;
            }
        }
        writeln!(
            f,
            "theoretical speed-up: {:.3}x whole model (conv + fc), {:.3}x convolutions alone",
            self.speedup(),
            self.conv_speedup()
        )
    }
}

/// MACs, parameters and kept energy of every layer under `plan`, without rewriting anything.
pub fn plan_report(analysis: &Analysis, svds: &PerLayer<Factorisation>, plan: &RankPlan) -> Result<Report, Error> {
    let mut energies = PerLayer::new();
    for p in &plan.layers {
        let svd = planned_svd(analysis, svds, p.layer)?;
        energies.insert(p.layer, svd.energy().get(p.rank - 1).copied().unwrap_or(1.0));
    }
    let layers = analysis
        .layers
        .iter()
        .map(|l| {
            let rank = plan.rank_of(l.id);
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
                energy: energies.get(l.id).copied().unwrap_or(1.0),
            }
        })
        .collect();
    Ok(Report {
        layers,
        chosen_by: None,
        bias_corrected: None,
        gain_restored: None,
    })
}
