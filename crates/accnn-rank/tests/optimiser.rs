//! The rank optimiser against exhaustive search, and config.json handling.

use std::path::Path;

use accnn_rank::knapsack::{Choice, solve};
use accnn_rank::{LayerKind, RankCandidate, RankConfig, RankError, energy_profile, select_ranks};
use rand::{Rng, SeedableRng};

/// Best value over every combination, by enumeration.
fn brute_force(items: &[Vec<Choice>], budget: u64) -> Option<f64> {
    let mut best: Option<f64> = None;
    let mut idx = vec![0usize; items.len()];
    loop {
        let cost: u64 = idx.iter().zip(items).map(|(&k, o)| o[k].cost).sum();
        let value: f64 = idx.iter().zip(items).map(|(&k, o)| o[k].value).sum();
        if cost <= budget && best.is_none_or(|b| value > b) {
            best = Some(value);
        }
        let mut d = 0;
        loop {
            if d == items.len() {
                return best;
            }
            idx[d] += 1;
            if idx[d] < items[d].len() {
                break;
            }
            idx[d] = 0;
            d += 1;
        }
    }
}

#[test]
fn knapsack_matches_brute_force_on_random_instances() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for case in 0..400 {
        let n_items = rng.random_range(1..=5);
        let items: Vec<Vec<Choice>> = (0..n_items)
            .map(|_| {
                (0..rng.random_range(1..=6))
                    .map(|_| Choice {
                        cost: rng.random_range(1..=40),
                        value: rng.random_range(-10.0..0.0),
                    })
                    .collect()
            })
            .collect();
        let budget = rng.random_range(0..=120);
        let expected = brute_force(&items, budget);
        let got = solve(&items, budget);
        match (expected, got) {
            (None, None) => {}
            (Some(v), Some(s)) => {
                assert!(
                    (v - s.value).abs() < 1e-9,
                    "case {case}: brute force {v}, solver {}",
                    s.value
                );
                assert!(s.cost <= budget);
                let recomputed: f64 = s.picks.iter().zip(&items).map(|(&k, o)| o[k].value).sum();
                assert!((recomputed - s.value).abs() < 1e-12);
            }
            (e, g) => panic!("case {case}: brute force {e:?}, solver {g:?}"),
        }
    }
}

/// A layer whose singular values decay as `decay^i`, like a trained layer's.
fn layer(name: &str, max_rank: usize, decay: f64, original_cost: u64, cost_per_rank: u64) -> RankCandidate {
    let spectrum: Vec<f64> = (0..max_rank).map(|i| decay.powi(i as i32)).collect();
    RankCandidate {
        name: name.into(),
        kind: LayerKind::Convolution,
        original_cost,
        cost_per_rank,
        rank_unit: 1,
        energy: energy_profile(&[&spectrum]),
    }
}

#[test]
fn selection_matches_brute_force_with_keep_options() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for case in 0..100 {
        let layers: Vec<RankCandidate> = (0..rng.random_range(1..=4))
            .map(|i| {
                let max_rank = rng.random_range(1..=7);
                let per_rank = rng.random_range(1..=20);
                layer(
                    &format!("l{i}"),
                    max_rank,
                    rng.random_range(0.3..0.99),
                    rng.random_range(5..=100),
                    per_rank,
                )
            })
            .collect();
        let whole: u64 = layers.iter().map(|l| l.original_cost).sum();
        let budget = rng.random_range(0..=whole);
        // Independent enumeration over rank or whole, for ranks strictly cheaper than whole.
        let items: Vec<Vec<Choice>> = layers
            .iter()
            .map(|l| {
                let mut o = vec![Choice {
                    cost: l.original_cost,
                    value: 0.0,
                }];
                for k in 1..=l.energy.len() {
                    if (k as u64) * l.cost_per_rank < l.original_cost {
                        o.push(Choice {
                            cost: k as u64 * l.cost_per_rank,
                            value: l.energy[k - 1].ln(),
                        });
                    }
                }
                o
            })
            .collect();
        match (brute_force(&items, budget), select_ranks(&layers, budget)) {
            (Some(v), Ok(sel)) => {
                assert!((v - sel.log_energy).abs() < 1e-9, "case {case}");
                assert!(sel.cost <= budget);
                for (l, r) in layers.iter().zip(&sel.ranks) {
                    if let Some(k) = r {
                        assert!(
                            (*k as u64) * l.cost_per_rank < l.original_cost,
                            "a rank that does not save MACs"
                        );
                    }
                }
            }
            (None, Err(RankError::Infeasible { .. })) => {}
            (e, g) => panic!("case {case}: {e:?} vs {g:?}"),
        }
    }
}

#[test]
fn vgg_sized_selection_meets_the_budget_within_two_percent() {
    // VGG-16's 13 convolutions and 3 FC layers at 224x224: (max rank, MACs, MACs per rank).
    let convs: [(usize, u64, u64); 13] = [
        (9, 86_704_128, 10_084_032),
        (192, 1_849_688_064, 19_267_584),
        (192, 924_844_032, 7_225_344),
        (384, 1_849_688_064, 9_633_792),
        (384, 924_844_032, 3_612_672),
        (768, 1_849_688_064, 4_816_896),
        (768, 1_849_688_064, 4_816_896),
        (768, 924_844_032, 1_806_336),
        (1536, 1_849_688_064, 2_408_448),
        (1536, 1_849_688_064, 2_408_448),
        (1536, 462_422_016, 602_112),
        (1536, 462_422_016, 602_112),
        (1536, 462_422_016, 602_112),
    ];
    let mut layers: Vec<RankCandidate> = convs
        .iter()
        .enumerate()
        .map(|(i, &(r, m, c))| layer(&format!("conv{i}"), r, 0.995 - 0.0002 * i as f64, m, c))
        .collect();
    for (name, r, m, c) in [
        ("fc6", 4096, 102_760_448, 29_184),
        ("fc7", 4096, 16_777_216, 8_192),
        ("fc8", 1000, 4_096_000, 5_096),
    ] {
        let mut l = layer(name, r, 0.999, m, c);
        l.kind = LayerKind::FullyConnected;
        layers.push(l);
    }
    let whole: u64 = layers.iter().map(|l| l.original_cost).sum();
    for ratio in [1.5, 2.0, 3.0, 4.0] {
        let budget = (whole as f64 / ratio) as u64;
        let sel = select_ranks(&layers, budget).unwrap();
        assert!(sel.cost <= budget);
        let achieved = whole as f64 / sel.cost as f64;
        assert!(
            (achieved / ratio - 1.0).abs() < 0.02,
            "ratio {ratio}: achieved {achieved}"
        );
    }
}

#[test]
fn infeasible_budget_names_the_reachable_ratio() {
    let layers = [layer("a", 4, 0.9, 100, 10)];
    match select_ranks(&layers, 5) {
        Err(RankError::Infeasible {
            minimum: 10, max_ratio, ..
        }) => assert!((max_ratio - 10.0).abs() < 1e-9),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_round_trips_and_rejects_nonsense() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vgg16-config.json")).unwrap();
    let config = RankConfig::parse(&text, Path::new("vgg16-config.json")).unwrap();
    assert_eq!(config.conv_params.len(), 13);
    assert_eq!(config.conv_params[0], ("conv1_1".to_string(), 5));
    assert_eq!(config.rank_of("fc6"), Some(2048));
    assert_eq!(RankConfig::parse(&config.to_json(), Path::new("x")).unwrap(), config);
    let err = |t: &str| RankConfig::parse(t, Path::new("c.json")).unwrap_err().to_string();
    assert!(err(r#"{"conv_params": {"conv1": 0}}"#).contains("c.json: conv_params.conv1: rank 0"));
    assert!(err(r#"{"conv_params": {"conv1": -3}}"#).contains("non-negative integer"));
    assert!(err(r#"{"layers": {}}"#).contains("unknown section 'layers'"));
    assert!(err(r#"{"conv_params": {"a": 1}, "fc_params": {"a": 2}}"#).contains("listed twice"));
    assert!(err("[1]").contains("expected an object"));
}

/// Alignment: every chosen width is a multiple of the alignment, the budget holds, and the optimum
/// equals brute force over the aligned ranks.
#[test]
fn aligned_selection_is_the_optimum_over_aligned_ranks() {
    use accnn_rank::{LayerKind, RankCandidate, select_ranks_aligned};
    let layer = |name: &str, unit: usize, energy: Vec<f64>| RankCandidate {
        name: name.into(),
        kind: LayerKind::Convolution,
        original_cost: 100,
        cost_per_rank: 9,
        rank_unit: unit,
        energy,
    };
    let ramp = |n: usize, p: f64| (1..=n).map(|k| (k as f64 / n as f64).powf(p)).collect::<Vec<_>>();
    let layers = [
        layer("a", 1, ramp(10, 0.3)),
        layer("b", 2, ramp(10, 0.5)),
        layer("c", 1, ramp(10, 0.8)),
    ];
    for align in [1, 2, 4] {
        for budget in [60, 120, 180, 250] {
            let got = select_ranks_aligned(&layers, budget, align);
            // Brute force over whole or every aligned, cheaper rank.
            let options: Vec<Vec<Option<usize>>> = layers
                .iter()
                .map(|l| {
                    let mut o = vec![None];
                    o.extend(
                        (1..=10)
                            .filter(|k| (k * l.rank_unit) % align == 0 && l.cost(Some(*k)) < 100)
                            .map(Some),
                    );
                    o
                })
                .collect();
            let mut best: Option<(f64, Vec<Option<usize>>)> = None;
            for a in &options[0] {
                for b in &options[1] {
                    for c in &options[2] {
                        let pick = [*a, *b, *c];
                        let cost: u64 = pick.iter().zip(&layers).map(|(k, l)| l.cost(*k)).sum();
                        if cost > budget {
                            continue;
                        }
                        let value: f64 = pick
                            .iter()
                            .zip(&layers)
                            .map(|(k, l)| k.map_or(0.0, |k| l.energy[k - 1].ln()))
                            .sum();
                        if best.as_ref().is_none_or(|(v, _)| value > *v + 1e-12) {
                            best = Some((value, pick.to_vec()));
                        }
                    }
                }
            }
            match (best, got) {
                (Some((value, _)), Ok(sel)) => {
                    assert!((sel.log_energy - value).abs() < 1e-9, "align {align} budget {budget}");
                    assert!(sel.cost <= budget);
                    for (k, l) in sel.ranks.iter().zip(&layers) {
                        if let Some(k) = k {
                            assert_eq!((k * l.rank_unit) % align, 0, "width multiple of {align}");
                        }
                    }
                }
                (None, Err(_)) => {}
                (b, g) => panic!("align {align} budget {budget}: brute force {b:?}, optimiser {g:?}"),
            }
        }
    }
}

/// Explicit cost tables (measured latencies): options that are not cheaper than the whole layer are
/// never taken, and the budget holds.
#[test]
fn measured_costs_skip_decompositions_that_are_not_faster() {
    use accnn_rank::{LayerChoices, select_among};
    // Layer "slow" is slower decomposed at every rank (like rank 100 and 150 in the issue's figures).
    let layers = [
        LayerChoices {
            name: "fast".into(),
            whole_cost: 1000,
            ranks: vec![(1, 300), (2, 500), (3, 900)],
            energy: vec![0.6, 0.9, 1.0],
            must_decompose: false,
        },
        LayerChoices {
            name: "slow".into(),
            whole_cost: 200,
            ranks: vec![(1, 250), (2, 400)],
            energy: vec![0.99, 1.0],
            must_decompose: false,
        },
    ];
    let sel = select_among(&layers, 750).expect("feasible");
    assert_eq!(sel.ranks, vec![Some(2), None]);
    assert_eq!(sel.cost, 700);
    // Even with budget to spare the slow decomposition is not chosen.
    let sel = select_among(&layers, 10_000).expect("feasible");
    assert_eq!(sel.ranks[1], None);
    // Below what the cheapest options cost: infeasible, with the reachable ratio.
    assert!(select_among(&layers, 400).is_err());
}

#[test]
fn a_layer_that_must_be_decomposed_never_stays_whole() {
    use accnn_rank::{LayerChoices, RankError, select_among};
    let layer = |must_decompose| LayerChoices {
        name: "conv".into(),
        whole_cost: 100,
        // Rank 2 costs more than the layer whole: allowed only when it must be decomposed.
        ranks: vec![(1, 60), (2, 120)],
        energy: vec![0.5, 1.0],
        must_decompose,
    };
    // With room for anything, a free layer stays whole (energy 1 at cost 100)...
    assert_eq!(select_among(&[layer(false)], 1000).unwrap().ranks, vec![None]);
    // ...and one that must be decomposed takes its best rank, even above the whole cost.
    assert_eq!(select_among(&[layer(true)], 1000).unwrap().ranks, vec![Some(2)]);
    assert_eq!(select_among(&[layer(true)], 100).unwrap().ranks, vec![Some(1)]);
    // Out of reach: the reachable ratio is the whole cost over the cheapest rank's.
    match select_among(&[layer(true)], 50) {
        Err(RankError::Infeasible { minimum, max_ratio, .. }) => {
            assert_eq!(minimum, 60);
            assert!((max_ratio - 100.0 / 60.0).abs() < 1e-12);
        }
        other => panic!("expected Infeasible, got {other:?}"),
    }
}
