//! Choosing every layer's rank for a low-rank CNN under a compute budget.
//!
//! The objective is the one of Zhang et al. (arXiv 1411.4229) used by the original accnn: maximise
//! `Σ_layers ln E_l(K_l)`, the log of the product of the energy each layer keeps, subject to
//! `Σ_layers cost_l(K_l) <= budget`. Here it is solved exactly as a multiple-choice knapsack
//! ([`knapsack::solve`]) where each layer may also stay whole (energy 1, its original cost): the
//! original's dynamic program keyed by exact cost is both slow and approximate.
//!
//! ```
//! use accnn_rank::{LayerKind, RankCandidate, select_ranks};
//! let layer = |name: &str, energy: Vec<f64>| RankCandidate {
//!     name: name.into(), kind: LayerKind::Convolution, original_cost: 90, cost_per_rank: 20,
//!     rank_unit: 1, energy,
//! };
//! let layers = [layer("a", vec![0.9, 0.99, 1.0]), layer("b", vec![0.5, 0.8, 1.0])];
//! // Two whole layers cost 180; a budget of 80 allows four ranks in total.
//! let plan = select_ranks(&layers, 80).unwrap();
//! assert_eq!(plan.ranks, vec![Some(1), Some(3)]);
//! ```

mod config;
pub mod knapsack;
pub mod seed;

pub use config::{RankConfig, RankConfigError};

/// What kind of layer a candidate is; decides its section in `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Convolution,
    FullyConnected,
}

/// One decomposable layer, as rank selection sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RankCandidate {
    pub name: String,
    pub kind: LayerKind,
    /// Cost of the layer left whole.
    pub original_cost: u64,
    /// Cost of the decomposed pair per unit of rank: the pair at rank `k` costs `k * cost_per_rank`.
    pub cost_per_rank: u64,
    /// Channels of the intermediate layer per unit of rank (a grouped convolution's group count).
    pub rank_unit: usize,
    /// `energy[k - 1]`: the fraction of energy kept at rank `k`, non-decreasing, in `(0, 1]`.
    pub energy: Vec<f64>,
}

impl RankCandidate {
    /// Ranks whose pair is strictly cheaper than the whole layer.
    pub fn useful_ranks(&self) -> std::ops::RangeInclusive<usize> {
        // A free pair (cost 0 per rank) is cheaper at every rank.
        let limit = self
            .original_cost
            .saturating_sub(1)
            .checked_div(self.cost_per_rank)
            .map_or(self.energy.len(), |k| k as usize);
        1..=limit.min(self.energy.len())
    }

    /// Whether some rank makes the layer cheaper; layers for which none does stay whole.
    pub fn can_reduce_cost(&self) -> bool {
        !self.useful_ranks().is_empty()
    }

    /// Cost at `rank` units, `None` standing for the layer left whole.
    pub fn cost(&self, rank: Option<usize>) -> u64 {
        rank.map_or(self.original_cost, |k| k as u64 * self.cost_per_rank)
    }
}

/// Ranks chosen for each candidate (in rank units; `None` = left whole), with the totals.
#[derive(Clone, Debug, PartialEq)]
pub struct RankSelection {
    pub ranks: Vec<Option<usize>>,
    pub cost: u64,
    /// `Σ ln E_l`, the objective reached.
    pub log_energy: f64,
    /// Branch-and-bound nodes visited.
    pub search_nodes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RankError {
    #[error(
        "the budget of {budget} is below the {minimum} the layers cost at their cheapest allowed ranks; the largest reachable speed-up is about {max_ratio:.2}x"
    )]
    Infeasible { budget: u64, minimum: u64, max_ratio: f64 },
    #[error("layer '{0}' has an energy profile that is empty or not in (0, 1]")]
    BadEnergy(String),
}

/// Cumulative energy fractions `E(k) = Σ_{i<k} σ_i² / Σ σ_i²` for `k = 1..=len`: the PCA energy kept at
/// rank `k`. Several spectra (one per convolution group, all cut at the same rank) are summed. An
/// all-zero weight keeps "all" of its zero energy at every rank.
///
/// ```
/// let e = accnn_rank::energy_profile(&[&[3.0, 1.0]]);
/// assert_eq!(e, vec![0.9, 1.0]);
/// ```
pub fn energy_profile(spectra: &[&[f64]]) -> Vec<f64> {
    let len = spectra.iter().map(|s| s.len()).min().unwrap_or(0);
    let total: f64 = spectra.iter().flat_map(|s| s.iter()).map(|s| s * s).sum();
    let mut acc = 0.0;
    (0..len)
        .map(|k| {
            acc += spectra.iter().map(|s| s[k] * s[k]).sum::<f64>();
            if total > 0.0 { (acc / total).min(1.0) } else { 1.0 }
        })
        .collect()
}

/// Floor on energies inside the logarithm, so that a rank keeping nothing is merely very bad.
const MIN_ENERGY: f64 = 1e-30;

/// How one layer may be decomposed: its cost whole and at each rank it may take, in any cost unit
/// (MACs, measured microseconds). Ranks are per group, `energy[k - 1]` is the energy rank `k` keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerChoices {
    pub name: String,
    pub whole_cost: u64,
    pub ranks: Vec<(usize, u64)>,
    pub energy: Vec<f64>,
    /// The layer must be decomposed: staying whole is no option, and ranks costing as much as the
    /// whole layer or more are (as the original accnn allowed them).
    pub must_decompose: bool,
}

impl RankCandidate {
    /// This layer's choices under its linear MAC cost, keeping only ranks whose width
    /// (`rank * rank_unit`, the filters of the first half) is a multiple of `align`.
    pub fn choices(&self, align: usize) -> LayerChoices {
        self.choices_with(align, false)
    }

    /// [`Self::choices`], or with `must_decompose` every aligned rank and no whole option.
    pub fn choices_with(&self, align: usize, must_decompose: bool) -> LayerChoices {
        let align = align.max(1);
        let ranks = if must_decompose {
            1..=self.energy.len()
        } else {
            self.useful_ranks()
        };
        LayerChoices {
            name: self.name.clone(),
            whole_cost: self.original_cost,
            ranks: ranks
                .filter(|&k| (k * self.rank_unit).is_multiple_of(align))
                .map(|k| (k, self.cost(Some(k))))
                .collect(),
            energy: self.energy.clone(),
            must_decompose,
        }
    }
}

/// Maximises `Σ ln E_l(K_l)` with `Σ cost_l(K_l) <= budget`, each layer either whole or decomposed at a
/// rank that makes it cheaper. Exact.
pub fn select_ranks(layers: &[RankCandidate], budget: u64) -> Result<RankSelection, RankError> {
    select_ranks_aligned(layers, budget, 1)
}

/// [`select_ranks`] with every chosen width a multiple of `align` (hardware-friendly ranks: GEMM
/// tiles, tensor-core multiples). A layer with no aligned rank cheaper than whole stays whole.
pub fn select_ranks_aligned(layers: &[RankCandidate], budget: u64, align: usize) -> Result<RankSelection, RankError> {
    let choices: Vec<LayerChoices> = layers.iter().map(|l| l.choices(align)).collect();
    select_among(&choices, budget)
}

/// The exact optimum over explicit per-rank costs (measured latencies, say). Options that cost as
/// much as the whole layer or more are never taken: a decomposition that is not faster is no option.
pub fn select_among(layers: &[LayerChoices], budget: u64) -> Result<RankSelection, RankError> {
    let mut items = Vec::with_capacity(layers.len());
    let mut labels: Vec<Vec<Option<usize>>> = Vec::with_capacity(layers.len());
    for layer in layers {
        let bad = layer.energy.is_empty()
            || layer
                .energy
                .iter()
                .any(|e| !(e.is_finite() && *e >= 0.0 && *e <= 1.0 + 1e-9))
            || layer.ranks.iter().any(|&(k, _)| k == 0 || k > layer.energy.len());
        if bad {
            return Err(RankError::BadEnergy(layer.name.clone()));
        }
        let (mut options, mut label) = if layer.must_decompose {
            (Vec::new(), Vec::new())
        } else {
            (
                vec![knapsack::Choice {
                    cost: layer.whole_cost,
                    value: 0.0,
                }],
                vec![None],
            )
        };
        let kept = |&&(_, c): &&(usize, u64)| layer.must_decompose || c < layer.whole_cost;
        for &(k, cost) in layer.ranks.iter().filter(kept) {
            options.push(knapsack::Choice {
                cost,
                value: layer.energy[k - 1].max(MIN_ENERGY).ln(),
            });
            label.push(Some(k));
        }
        items.push(options);
        labels.push(label);
    }
    let Some(solution) = knapsack::solve(&items, budget) else {
        let minimum: u64 = items.iter().map(|o| o.iter().map(|c| c.cost).min().unwrap_or(0)).sum();
        let whole: u64 = layers.iter().map(|l| l.whole_cost).sum();
        return Err(RankError::Infeasible {
            budget,
            minimum,
            max_ratio: whole as f64 / minimum.max(1) as f64,
        });
    };
    Ok(RankSelection {
        ranks: solution.picks.iter().zip(&labels).map(|(&k, l)| l[k]).collect(),
        cost: solution.cost,
        log_energy: solution.value,
        search_nodes: solution.nodes,
    })
}
