//! `--rank-search seed`, the original tool's selector, checked against a brute force written from
//! the original's definitions (not through `accnn_rank`).

use accnn_plan::{Analysis, LayerKind, Objective, Scope, factorise_all, plan_for_objective};

/// Singular values of the original's `(C·kh) x (N·kw)` reshape of a kernel, by power iteration on
/// the smaller Gram matrix with deflation (independent of faer).
fn singular_values(w: &[f32], [n, c, kh, kw]: [usize; 4]) -> Vec<f64> {
    let (rows, cols) = (c * kh, n * kw);
    let a = |r: usize, q: usize| -> f64 {
        let (ci, i) = (r / kh, r % kh);
        let (ni, j) = (q / kw, q % kw);
        w[((ni * c + ci) * kh + i) * kw + j] as f64
    };
    // A A^T or A^T A, whichever is smaller: the same non-zero eigenvalues.
    let (side, inner) = (rows.min(cols), rows.max(cols));
    let at = |i: usize, k: usize| if rows <= cols { a(i, k) } else { a(k, i) };
    let mut gram = vec![0.0; side * side];
    for r in 0..side {
        for s in 0..side {
            gram[r * side + s] = (0..inner).map(|k| at(r, k) * at(s, k)).sum();
        }
    }
    let mut out = Vec::new();
    for _ in 0..side {
        let mut v: Vec<f64> = (0..side).map(|i| 1.0 + i as f64 * 0.01).collect();
        let mut lambda = 0.0;
        for _ in 0..3000 {
            let mut next: Vec<f64> = (0..side)
                .map(|r| (0..side).map(|s| gram[r * side + s] * v[s]).sum())
                .collect();
            let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            next.iter_mut().for_each(|x| *x /= norm);
            lambda = norm;
            v = next;
        }
        out.push(lambda.max(0.0).sqrt());
        for r in 0..side {
            for s in 0..side {
                gram[r * side + s] -= lambda * v[r] * v[s];
            }
        }
    }
    out
}

#[test]
fn seed_plan_is_the_brute_force_optimum_of_the_original_objective() {
    let model = accnn_plan::example_model();
    let analysis = Analysis::new(&model, &[1, 3, 8, 8]).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    let convs: Vec<_> = analysis
        .layers
        .iter()
        .filter(|l| l.kind == LayerKind::Convolution)
        .collect();
    assert_eq!(convs.len(), 2);
    // The original's terms per layer: cost per rank kw·(N+C)·H·W, whole cost kh·kw·N·C·H·W (input
    // size), value ln Σ_{i<K} σ_i, K in 1..=min(C·kh, N·kw, N).
    let terms: Vec<(u64, u64, Vec<f64>)> = convs
        .iter()
        .map(|l| {
            let w = model.param(&format!("{}_weight", l.name)).unwrap();
            let s = w.shape();
            let kernel = [s[0], s[1], s[2], s[3]];
            let (h, wd) = (l.input_shape[2] as u64, l.input_shape[3] as u64);
            let (n, c, kh, kw) = (s[0] as u64, s[1] as u64, s[2] as u64, s[3] as u64);
            let sv = singular_values(w.data(), kernel);
            let max = sv.len().min(s[0]);
            let cum: Vec<f64> = (1..=max).map(|k| sv[..k].iter().sum::<f64>().ln()).collect();
            (kw * (n + c) * h * wd, kh * kw * n * c * h * wd, cum)
        })
        .collect();
    let whole: u64 = terms.iter().map(|t| t.1).sum();
    for ratio in [1.2, 1.5, 2.0, 3.0] {
        let budget = (whole as f64 / ratio).floor() as u64;
        let mut best = (f64::NEG_INFINITY, vec![]);
        for k0 in 1..=terms[0].2.len() {
            for k1 in 1..=terms[1].2.len() {
                let cost = k0 as u64 * terms[0].0 + k1 as u64 * terms[1].0;
                let value = terms[0].2[k0 - 1] + terms[1].2[k1 - 1];
                if cost <= budget && value > best.0 {
                    best = (value, vec![k0, k1]);
                }
            }
        }
        // Any scope: the original budgets convolutions only, and the FC layer stays whole.
        let plan = plan_for_objective(&analysis, &svds, ratio, Scope::All, 1, Objective::Seed).unwrap();
        let ranks: Vec<usize> = convs.iter().map(|l| plan.rank_of(l.id).expect("decomposed")).collect();
        assert_eq!(ranks, best.1, "ratio {ratio}");
        assert_eq!(plan.layers.len(), 2, "ratio {ratio}: the FC layer stays whole");
    }
}

#[test]
fn seed_takes_no_alignment() {
    let model = accnn_plan::example_model();
    let analysis = Analysis::new(&model, &[1, 3, 8, 8]).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    let err = plan_for_objective(&analysis, &svds, 2.0, Scope::All, 8, Objective::Seed).unwrap_err();
    assert_eq!(err.to_string(), "the 'seed' rank search does not take a rank alignment");
}

/// Singular values of a row-major `rows x cols` matrix (power iteration, as above).
fn matrix_singular_values(w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    // A 1x1 "kernel" of `rows` filters over `cols` channels reshapes to cols x rows: the same values.
    singular_values(w, [rows, cols, 1, 1])
}

#[test]
fn exact_objectives_are_the_brute_force_optima_of_what_they_state_within_budget() {
    let model = accnn_plan::example_model();
    let analysis = Analysis::new(&model, &[1, 3, 8, 8]).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    // Each layer's singular values from its weight, independently of accnn's SVD.
    let spectra: Vec<Vec<f64>> = analysis
        .layers
        .iter()
        .map(|l| {
            let w = model.param(&format!("{}_weight", l.name)).unwrap();
            let s = w.shape();
            match l.kind {
                LayerKind::Convolution => singular_values(w.data(), [s[0], s[1], s[2], s[3]]),
                LayerKind::FullyConnected => matrix_singular_values(w.data(), s[0], s[1]),
            }
        })
        .collect();
    let fraction = |s: &[f64], k: usize, squared: bool| -> f64 {
        let p = |x: f64| if squared { x * x } else { x };
        s[..k].iter().map(|&x| p(x)).sum::<f64>() / s.iter().map(|&x| p(x)).sum::<f64>()
    };
    for (objective, squared, every_layer) in [
        (Objective::Energy, true, false),
        (Objective::Nuclear, false, false),
        (Objective::EnergyAll, true, true),
        (Objective::NuclearAll, false, true),
    ] {
        for ratio in [1.3, 2.0, 3.0] {
            let total: u64 = analysis.layers.iter().map(|l| l.macs).sum();
            let budget = (total as f64 / ratio).floor() as u64;
            // Every layer's options: whole (unless it must be decomposed), or a rank cheaper than
            // whole (any rank when it must be decomposed).
            let options: Vec<Vec<(Option<usize>, u64, f64)>> = analysis
                .layers
                .iter()
                .zip(&spectra)
                .map(|(l, s)| {
                    let mut o: Vec<(Option<usize>, u64, f64)> = (1..=l.max_rank)
                        .map(|k| (Some(k), k as u64 * l.macs_per_rank, fraction(s, k, squared).ln()))
                        .filter(|&(_, c, _)| every_layer || c < l.macs)
                        .collect();
                    if !every_layer {
                        o.push((None, l.macs, 0.0));
                    }
                    o
                })
                .collect();
            let mut best: (f64, Vec<Option<usize>>) = (f64::NEG_INFINITY, vec![]);
            for a in &options[0] {
                for b in &options[1] {
                    for c in &options[2] {
                        let cost = a.1 + b.1 + c.1;
                        let value = a.2 + b.2 + c.2;
                        if cost <= budget && value > best.0 + 1e-9 {
                            best = (value, vec![a.0, b.0, c.0]);
                        }
                    }
                }
            }
            let plan = plan_for_objective(&analysis, &svds, ratio, Scope::All, 1, objective).unwrap();
            let ranks: Vec<Option<usize>> = analysis.layers.iter().map(|l| plan.rank_of(l.id)).collect();
            let cost: u64 = analysis.layers.iter().map(|l| l.macs_at(plan.rank_of(l.id))).sum();
            assert!(
                cost <= budget,
                "{objective} at {ratio}: {cost} over the budget {budget}"
            );
            let value: f64 = ranks
                .iter()
                .zip(&spectra)
                .map(|(k, s)| k.map_or(0.0, |k| fraction(s, k, squared).ln()))
                .sum();
            assert!(
                (value - best.0).abs() < 1e-6,
                "{objective} at {ratio}: {ranks:?} ({value}) vs the brute force's {:?} ({})",
                best.1,
                best.0
            );
        }
    }
}
