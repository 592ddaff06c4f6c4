//! The original accnn's rank selection (`tools/accnn/rank_selection.py` of MXNet), reproduced so
//! that its users get its ranks and every other objective can be compared against it.
//!
//! What the original does, and this module with it:
//! - only convolutions are budgeted; the budget is `Σ kh·kw·N·C·H·W / ratio` over all of them,
//!   where `H x W` is the layer's *input* size (the original's cost model ignores stride);
//! - every convolution is decomposed, at a rank `K` in `1..=min(C·kh, N·kw, N)`, costing
//!   `K · kw·(N + C)·H·W`, even where that is more than the layer whole (no layer stays whole);
//! - the objective is `Σ_l ln Σ_{i<K_l} σ_{l,i}`: the log of each layer's kept sum of *singular
//!   values*, not of their squares (the original never squares them). Its sums are unnormalised;
//!   dividing each layer's by its total shifts the objective by a constant and changes no choice,
//!   so [`singular_value_profile`] reports fractions;
//! - the original's dynamic program is keyed by exact integer cost, so it is exact: its optimum is
//!   the optimum [`crate::knapsack::solve`] finds on the same items (ties aside).

use crate::{LayerChoices, RankError, RankSelection, select_among};

/// One convolution as the original's selector sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedLayer {
    pub name: String,
    /// `(N, C, kh, kw)`.
    pub kernel: [usize; 4],
    /// Height and width of the layer's input.
    pub input_hw: [usize; 2],
    /// Singular values of the `(C·kh) x (N·kw)` reshaped kernel, largest first.
    pub singular_values: Vec<f64>,
}

impl SeedLayer {
    /// The original's MACs of the layer whole, over its input size.
    pub fn whole_cost(&self) -> u64 {
        let [n, c, kh, kw] = self.kernel.map(|d| d as u64);
        let [h, w] = self.input_hw.map(|d| d as u64);
        kh * kw * n * c * h * w
    }

    /// The original's cost of the decomposed pair per unit of rank: `kw·(N + C)·H·W`.
    pub fn cost_per_rank(&self) -> u64 {
        let [n, c, _, kw] = self.kernel.map(|d| d as u64);
        let [h, w] = self.input_hw.map(|d| d as u64);
        kw * (n + c) * h * w
    }

    /// The largest rank the original considers: `min(C·kh, N·kw, N)`.
    pub fn max_rank(&self) -> usize {
        self.singular_values.len().min(self.kernel[0])
    }
}

/// Cumulative singular-value fractions `Σ_{i<k} σ_i / Σ σ_i` for `k = 1..=len` (the fraction of
/// the nuclear norm kept). Several spectra (one per convolution group, all cut at the same rank)
/// are summed, as in [`crate::energy_profile`].
///
/// ```
/// let p = accnn_rank::seed::singular_value_profile(&[&[3.0, 1.0]]);
/// assert_eq!(p, vec![0.75, 1.0]);
/// ```
pub fn singular_value_profile(spectra: &[&[f64]]) -> Vec<f64> {
    let len = spectra.iter().map(|s| s.len()).min().unwrap_or(0);
    let total: f64 = spectra.iter().flat_map(|s| s.iter()).sum();
    let mut acc = 0.0;
    (0..len)
        .map(|k| {
            acc += spectra.iter().map(|s| s[k]).sum::<f64>();
            if total > 0.0 { (acc / total).min(1.0) } else { 1.0 }
        })
        .collect()
}

/// The original's ranks for a speed-up `ratio` over convolution MACs: `ranks[l]` for `layers[l]`,
/// never `None` (every layer is decomposed).
pub fn select_seed(layers: &[SeedLayer], ratio: f64) -> Result<RankSelection, RankError> {
    let whole: u64 = layers.iter().map(SeedLayer::whole_cost).sum();
    // The original compares integer costs with the float `EC / ratio`: the same as the floor.
    let budget = (whole as f64 / ratio).floor() as u64;
    let mut choices = Vec::with_capacity(layers.len());
    for layer in layers {
        let bad =
            layer.singular_values.is_empty() || layer.singular_values.iter().any(|s| !(s.is_finite() && *s >= 0.0));
        if bad || layer.max_rank() == 0 {
            return Err(RankError::BadEnergy(layer.name.clone()));
        }
        let per_rank = layer.cost_per_rank();
        choices.push(LayerChoices {
            name: layer.name.clone(),
            whole_cost: layer.whole_cost(),
            ranks: (1..=layer.max_rank()).map(|k| (k, k as u64 * per_rank)).collect(),
            energy: singular_value_profile(&[&layer.singular_values]),
            must_decompose: true,
        });
    }
    select_among(&choices, budget)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};

    use super::*;

    /// The original's dynamic program, transcribed step for step: states keyed by exact cost, each
    /// layer extending every state by every rank, unnormalised cumulative sums inside the log.
    fn original_dp(layers: &[SeedLayer], ratio: f64) -> Vec<usize> {
        let ec: f64 = layers.iter().map(|l| l.whole_cost() as f64).sum::<f64>() / ratio;
        let mut dp: HashMap<u64, f64> = HashMap::from([(0, 0.0)]);
        let mut back: Vec<HashMap<u64, (usize, u64)>> = Vec::new();
        for layer in layers {
            let mut cum = layer.singular_values.clone();
            for i in 1..cum.len() {
                cum[i] += cum[i - 1];
            }
            let mut next: HashMap<u64, f64> = HashMap::new();
            let mut choice = HashMap::new();
            let mut states: Vec<(u64, f64)> = dp.iter().map(|(&c, &v)| (c, v)).collect();
            states.sort_by_key(|s| s.0);
            for (now_c, now_v) in states {
                for (d, kept) in cum.iter().enumerate().take(layer.kernel[0]) {
                    let c = now_c + (d as u64 + 1) * layer.cost_per_rank();
                    if c as f64 > ec {
                        continue;
                    }
                    let v = now_v + kept.ln();
                    if next.get(&c).is_none_or(|&old| v > old) {
                        next.insert(c, v);
                        choice.insert(c, (d, now_c));
                    }
                }
            }
            dp = next;
            back.push(choice);
        }
        let (mut c, _) = dp
            .iter()
            .map(|(&c, &v)| (c, v))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("feasible");
        let mut ranks = vec![0; layers.len()];
        for i in (0..layers.len()).rev() {
            let (d, prev) = back[i][&c];
            ranks[i] = d + 1;
            c = prev;
        }
        ranks
    }

    fn random_layer(rng: &mut impl Rng, name: usize) -> SeedLayer {
        let n = rng.random_range(2..9);
        let c = rng.random_range(1..7);
        let (kh, kw) = (rng.random_range(1..4), rng.random_range(1..4));
        let hw = rng.random_range(1..5);
        let len = (c * kh).min(n * kw);
        let mut s: Vec<f64> = (0..len).map(|_| rng.random_range(0.01..10.0)).collect();
        s.sort_by(|a, b| b.total_cmp(a));
        SeedLayer {
            name: format!("conv{name}"),
            kernel: [n, c, kh, kw],
            input_hw: [hw, hw],
            singular_values: s,
        }
    }

    #[test]
    fn seed_selection_matches_a_transcription_of_the_original_dynamic_program() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut compared = 0;
        for case in 0..200 {
            let layers: Vec<SeedLayer> = (0..rng.random_range(1..5)).map(|i| random_layer(&mut rng, i)).collect();
            let ratio = rng.random_range(1.0..3.0);
            let Ok(ours) = select_seed(&layers, ratio) else {
                // Infeasible for the original too: even rank 1 everywhere is over its budget.
                let minimum: u64 = layers.iter().map(SeedLayer::cost_per_rank).sum();
                let whole: u64 = layers.iter().map(SeedLayer::whole_cost).sum();
                assert!(minimum as f64 > whole as f64 / ratio, "case {case}");
                continue;
            };
            let theirs = original_dp(&layers, ratio);
            let ours: Vec<usize> = ours.ranks.iter().map(|k| k.expect("all decomposed")).collect();
            // Equal objective (ties may pick different ranks); in practice the same ranks.
            let value = |ranks: &[usize]| -> f64 {
                ranks
                    .iter()
                    .zip(&layers)
                    .map(|(&k, l)| l.singular_values[..k].iter().sum::<f64>().ln())
                    .sum()
            };
            assert!(
                (value(&ours) - value(&theirs)).abs() < 1e-9,
                "case {case}: {ours:?} vs {theirs:?}"
            );
            assert_eq!(ours, theirs, "case {case}");
            compared += 1;
        }
        assert!(compared > 100, "only {compared} feasible cases");
    }

    #[test]
    fn every_layer_is_decomposed_even_above_its_whole_cost() {
        // A 1-channel 3x3 convolution: C·kh = 3, and rank 3 costs 3·(N+1)·3 > 9·N.
        let layer = SeedLayer {
            name: "conv1".into(),
            kernel: [8, 1, 3, 3],
            input_hw: [4, 4],
            singular_values: vec![3.0, 2.0, 1.0],
        };
        assert!(3 * layer.cost_per_rank() > layer.whole_cost());
        let chosen = select_seed(std::slice::from_ref(&layer), 1.0).expect("feasible");
        // At ratio 1 the budget is the whole cost: rank 3 does not fit, rank 2 does.
        assert_eq!(chosen.ranks, vec![Some(2)]);
        assert!((chosen.log_energy - (5.0f64 / 6.0).ln()).abs() < 1e-12);
    }

    #[test]
    fn an_unreachable_ratio_names_the_largest_reachable_one() {
        let layer = SeedLayer {
            name: "conv1".into(),
            kernel: [4, 4, 3, 3],
            input_hw: [2, 2],
            singular_values: vec![1.0; 12],
        };
        // Whole: 9·16·4 = 576; rank 1: 3·8·4 = 96, so at most 6x.
        match select_seed(&[layer], 7.0) {
            Err(RankError::Infeasible { max_ratio, .. }) => assert!((max_ratio - 6.0).abs() < 1e-12),
            other => panic!("expected Infeasible, got {other:?}"),
        }
    }
}
