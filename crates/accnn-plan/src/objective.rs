//! What a speed-up ratio's rank plan maximises.

use accnn_graph::cost::LayerKind;
use accnn_rank::seed::{SeedLayer, select_seed};

use crate::Error;
use crate::analysis::Analysis;
use crate::factorise::Factorisation;
use crate::per_layer::{LayerId, LayerSet, PerLayer};
use crate::plan::{RankPlan, check_ratio};

/// A layer's kept fraction at every rank, from its factorisation.
pub(crate) type KeptFraction = fn(&Factorisation) -> Vec<f64>;

/// The objective that chooses every layer's rank for a ratio (`--rank-search`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Objective {
    /// `Σ ln E(K)` with `E` the PCA energy (squared singular values) kept, solved exactly; a layer
    /// may stay whole.
    #[default]
    Energy,
    /// `Σ ln N(K)` with `N` the fraction of the singular-value sum (nuclear norm) kept, solved
    /// exactly under accnn's MAC counts; a layer may stay whole.
    Nuclear,
    NuclearAll,
    EnergyAll,
    /// The original accnn tool's selector as it was ([`accnn_rank::seed`]): every convolution
    /// decomposed, `Σ ln` of kept singular-value sums, its cost model (input size, stride ignored),
    /// convolutions only whatever the scope. A user of the original gets the original's ranks.
    Seed,
}

impl Objective {
    /// The name `--rank-search` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Objective::Energy => "energy",
            Objective::Nuclear => "nuclear",
            Objective::NuclearAll => "nuclear-all",
            Objective::EnergyAll => "energy-all",
            Objective::Seed => "seed",
        }
    }

    /// Every objective, in the order reports and tables list them.
    pub const ALL: [Objective; 5] = [
        Objective::Energy,
        Objective::Nuclear,
        Objective::NuclearAll,
        Objective::EnergyAll,
        Objective::Seed,
    ];

    /// The objective named `name`.
    pub fn from_name(name: &str) -> Option<Objective> {
        Objective::ALL.into_iter().find(|o| o.name() == name)
    }

    /// For the objectives solved exactly under accnn's MAC counts: each layer's kept fraction at
    /// every rank, and whether every layer must be decomposed. `None` for [`Objective::Seed`], which
    /// has its own cost model.
    pub(crate) fn exact_form(self) -> Option<(KeptFraction, bool)> {
        match self {
            Objective::Energy => Some((Factorisation::energy, false)),
            Objective::Nuclear => Some((Factorisation::singular_value_fraction, false)),
            Objective::EnergyAll => Some((Factorisation::energy, true)),
            Objective::NuclearAll => Some((Factorisation::singular_value_fraction, true)),
            Objective::Seed => None,
        }
    }

    /// What the objective maximises, in words, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Objective::Energy => "Σ ln(kept PCA energy), exact, layers may stay whole",
            Objective::Nuclear => "Σ ln(kept singular-value sum), exact, layers may stay whole",
            Objective::NuclearAll => "Σ ln(kept singular-value sum), exact, every layer decomposed",
            Objective::EnergyAll => "Σ ln(kept PCA energy), exact, every layer decomposed",
            Objective::Seed => {
                "the original accnn's selector: Σ ln(kept singular-value sum), every convolution decomposed"
            }
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;

    /// ```
    /// assert_eq!("seed".parse(), Ok(accnn_plan::Objective::Seed));
    /// ```
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Objective::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Objective::ALL.iter().map(|o| o.name()).collect();
            format!("expected one of {}, got '{name}'", names.join(", "))
        })
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The layers the original tool decomposes: every ungrouped convolution (it could not read grouped
/// ones), even where no rank is cheaper than the layer whole.
pub fn seed_layers(analysis: &Analysis) -> LayerSet {
    analysis.select(|l| l.kind == LayerKind::Convolution && l.groups == 1)
}

/// The original tool's ranks for `ratio` over convolution MACs (its own cost model): every
/// ungrouped convolution factorised in `svds` is decomposed; grouped ones, which the original
/// could not read, and FC layers stay whole.
pub fn plan_seed(analysis: &Analysis, svds: &PerLayer<Factorisation>, ratio: f64) -> Result<RankPlan, Error> {
    check_ratio(ratio)?;
    let mut layers = Vec::new();
    let mut ids: Vec<LayerId> = Vec::new();
    for id in seed_layers(analysis).iter() {
        let layer = &analysis[id];
        let Some(svd) = svds.get(id) else {
            continue;
        };
        let w = &layer.weight_shape;
        let input = &layer.input_shape;
        if w.len() != 4 || input.len() != 4 {
            continue;
        }
        layers.push(SeedLayer {
            name: layer.name.clone(),
            kernel: [w[0], w[1], w[2], w[3]],
            input_hw: [input[2], input[3]],
            singular_values: svd.singular_values().first().map(|s| s.to_vec()).unwrap_or_default(),
        });
        ids.push(layer.id);
    }
    if layers.is_empty() {
        return Err(Error::NothingToDecompose);
    }
    let selection = select_seed(&layers, ratio).map_err(|cause| Error::Selection { ratio, cause })?;
    let ranks: Vec<Option<usize>> = selection.ranks;
    Ok(RankPlan::from_selection(&ranks, &ids))
}
