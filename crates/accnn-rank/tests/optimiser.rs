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
