//! Factorisations checked against sums computed here, independently of the crate's own `compose`.

use accnn_decompose::{ConvSvd, DenseSvd, KernelShape, Precision, truncation_error};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// `W[n,c,i,j] = Σ_k V[k,c,i,0] H[n,k,0,j]` within each group, in f64.
fn rebuild_conv(v: &[f32], h: &[f32], s: KernelShape, groups: usize, rank: usize) -> Vec<f64> {
    let (rg, fg) = (rank / groups, s.filters / groups);
    let mut w = vec![0.0; s.len()];
    for n in 0..s.filters {
        for c in 0..s.channels {
            for i in 0..s.height {
                for j in 0..s.width {
                    let mut acc = 0.0;
                    for kl in 0..rg {
                        let k = (n / fg) * rg + kl;
                        acc += v[(k * s.channels + c) * s.height + i] as f64 * h[(n * rg + kl) * s.width + j] as f64;
                    }
                    w[((n * s.channels + c) * s.height + i) * s.width + j] = acc;
                }
            }
        }
    }
    w
}

fn frobenius(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn full_rank_spatial_pair_reproduces_non_square_and_grouped_kernels() {
    for (shape, groups) in [
        (
            KernelShape {
                filters: 8,
                channels: 5,
                height: 3,
                width: 3,
            },
            1,
        ),
        (
            KernelShape {
                filters: 6,
                channels: 4,
                height: 5,
                width: 2,
            },
            1,
        ),
        (
            KernelShape {
                filters: 8,
                channels: 3,
                height: 3,
                width: 3,
            },
            4,
        ),
    ] {
        let w = random(shape.len(), 1);
        let svd = ConvSvd::new(&w, shape, groups, Precision::Auto).unwrap();
        assert_eq!(
            svd.max_rank(),
            (shape.channels * shape.height).min(shape.filters / groups * shape.width)
        );
        let f = svd.factors(svd.max_rank()).unwrap();
        assert_eq!(
            f.vertical_shape(),
            [groups * svd.max_rank(), shape.channels, shape.height, 1]
        );
        let rebuilt = rebuild_conv(&f.vertical, &f.horizontal, shape, groups, f.rank);
        assert!(frobenius(&w, &rebuilt) / norm(&w) < 1e-6, "{shape:?} groups {groups}");
    }
}

#[test]
fn truncation_error_equals_the_dropped_singular_values() {
    let shape = KernelShape {
        filters: 16,
        channels: 12,
        height: 3,
        width: 3,
    };
    let w = random(shape.len(), 2);
    let svd = ConvSvd::new(&w, shape, 1, Precision::F64).unwrap();
    let sv = svd.singular_values();
    // The singular values carry the whole energy: Σσ² = ‖W‖².
    let energy: f64 = sv[0].iter().map(|s| s * s).sum();
    assert!((energy.sqrt() - norm(&w)).abs() / norm(&w) < 1e-9);
    for rank in [1, 5, 17, 35] {
        let f = svd.factors(rank).unwrap();
        let err = frobenius(&w, &rebuild_conv(&f.vertical, &f.horizontal, shape, 1, rank));
        let expected = truncation_error(&sv, rank);
        assert!(
            (err - expected).abs() / expected < 1e-4,
            "rank {rank}: {err} vs {expected}"
        );
    }
}

#[test]
fn leading_singular_value_matches_power_iteration() {
    // An independent estimate of σ₁ of the reshaped kernel A[(c,i),(n,j)].
    let shape = KernelShape {
        filters: 10,
        channels: 7,
        height: 3,
        width: 3,
    };
    let w = random(shape.len(), 3);
    let (m, n) = (shape.channels * shape.height, shape.filters * shape.width);
    let a = |r: usize, col: usize| {
        let (c, i, f, j) = (r / 3, r % 3, col / 3, col % 3);
        w[((f * shape.channels + c) * 3 + i) * 3 + j] as f64
    };
    let mut x = vec![1.0; n];
    let mut sigma = 0.0;
    for _ in 0..500 {
        let y: Vec<f64> = (0..m).map(|r| (0..n).map(|c| a(r, c) * x[c]).sum()).collect();
        let z: Vec<f64> = (0..n).map(|c| (0..m).map(|r| a(r, c) * y[r]).sum()).collect();
        let len = z.iter().map(|v| v * v).sum::<f64>().sqrt();
        sigma = len.sqrt();
        x = z.iter().map(|v| v / len).collect();
    }
    let svd = ConvSvd::new(&w, shape, 1, Precision::Auto).unwrap();
    assert!((svd.singular_values()[0][0] - sigma).abs() / sigma < 1e-6);
}

#[test]
fn dense_factors_rebuild_the_weight_and_truncate_optimally() {
    let (rows, cols) = (20, 33);
    let w = random(rows * cols, 4);
    for precision in [Precision::F32, Precision::F64] {
        let svd = DenseSvd::new(&w, rows, cols, precision).unwrap();
        let tol = if precision == Precision::F32 { 1e-4 } else { 1e-6 };
        for rank in [1, 7, 20] {
            let f = svd.factors(rank).unwrap();
            let rebuilt: Vec<f64> = (0..rows * cols)
                .map(|idx| {
                    let (r, c) = (idx / cols, idx % cols);
                    (0..rank)
                        .map(|k| f.reconstruct[r * rank + k] as f64 * f.reduce[k * cols + c] as f64)
                        .sum()
                })
                .collect();
            let err = frobenius(&w, &rebuilt);
            let expected = truncation_error(&[svd.singular_values()], rank);
            assert!(
                (err - expected).abs() <= tol * norm(&w),
                "rank {rank}: {err} vs {expected}"
            );
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let shape = KernelShape {
        filters: 2,
        channels: 2,
        height: 3,
        width: 3,
    };
    assert!(ConvSvd::new(&[0.0; 5], shape, 1, Precision::Auto).is_err());
    let mut w = random(shape.len(), 5);
    w[3] = f32::NAN;
    assert!(matches!(
        ConvSvd::new(&w, shape, 1, Precision::Auto),
        Err(accnn_decompose::DecomposeError::NonFinite)
    ));
    let svd = DenseSvd::new(&random(12, 6), 3, 4, Precision::Auto).unwrap();
    assert!(svd.factors(0).is_err());
    assert!(svd.factors(4).is_err());
}
