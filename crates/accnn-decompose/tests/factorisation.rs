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
            let f = svd.factors(&w, rank).unwrap();
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
    let w = random(12, 6);
    let svd = DenseSvd::new(&w, 3, 4, Precision::Auto).unwrap();
    assert!(svd.factors(&w, 0).is_err());
    assert!(svd.factors(&w, 4).is_err());
    assert!(svd.factors(&w[..11], 2).is_err());
}

/// A `rows x cols` matrix `Q1 diag(s) Q2ᵀ` with known singular values `s` (random orthonormal
/// `Q1`, `Q2` from Gram-Schmidt), row-major.
fn with_spectrum(rows: usize, cols: usize, s: &[f64], seed: u64) -> Vec<f32> {
    let orthonormal = |n: usize, k: usize, seed: u64| {
        let raw = random(n * k, seed);
        let mut q: Vec<Vec<f64>> = Vec::new();
        for j in 0..k {
            let mut v: Vec<f64> = (0..n).map(|i| raw[i * k + j] as f64).collect();
            for _ in 0..2 {
                for u in &q {
                    let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
                }
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            q.push(v.into_iter().map(|a| a / norm).collect());
        }
        q
    };
    let (q1, q2) = (orthonormal(rows, s.len(), seed), orthonormal(cols, s.len(), seed + 1));
    (0..rows * cols)
        .map(|idx| {
            let (r, c) = (idx / cols, idx % cols);
            s.iter()
                .enumerate()
                .map(|(k, sk)| q1[k][r] * sk * q2[k][c])
                .sum::<f64>() as f32
        })
        .collect()
}

/// In f64, and in f32 within what squaring in single precision allows (see the module docs).
#[test]
fn the_gram_route_matches_the_svd_on_wide_and_tall_weights() {
    for ((rows, cols), precision) in [(24, 150), (150, 24)]
        .into_iter()
        .flat_map(|shape| [(shape, Precision::F64), (shape, Precision::F32)])
    {
        // Singular values within what f32 squaring resolves (its floor is ~1e-4 of the largest),
        // the tolerances scaled to the precision.
        let f32_route = precision == Precision::F32;
        let (value_tol, error_tol) = if f32_route { (1e-3, 1e-4) } else { (1e-6, 1e-5) };
        let s: Vec<f64> = (0..24).map(|k| 10.0 * 0.7f64.powi(k)).collect();
        let w = with_spectrum(rows, cols, &s, 11);
        let gram = DenseSvd::gram(&w, rows, cols, precision).unwrap();
        assert_eq!(gram.precision(), precision);
        let svd = DenseSvd::new(&w, rows, cols, Precision::F64).unwrap();
        assert_eq!(gram.max_rank(), 24);
        // Singular values: the constructed ones (f32 rounding of W aside), the SVD's, and the Gram
        // route's agree; squaring costs the smallest ones relative accuracy, not the large ones.
        for k in 0..24 {
            let (g, e) = (gram.singular_values()[k], svd.singular_values()[k]);
            assert!(
                (g - e).abs() <= value_tol * s[0],
                "{rows}x{cols} {precision:?} sigma_{k}: gram {g} svd {e}"
            );
            assert!(
                (e - s[k]).abs() <= 1e-5 * s[0],
                "{rows}x{cols} sigma_{k}: svd {e} built {}",
                s[k]
            );
        }
        for rank in [1, 5, 24] {
            let f = gram.factors(&w, rank).unwrap();
            let rebuilt: Vec<f64> = f.compose().iter().map(|&v| v as f64).collect();
            let err = frobenius(&w, &rebuilt);
            let expected = truncation_error(&[svd.singular_values()], rank);
            assert!(
                (err - expected).abs() <= error_tol * norm(&w),
                "{rows}x{cols} {precision:?} rank {rank}: error {err}, dropped singular values {expected}"
            );
            // The same product as the SVD's factors.
            let by_svd = svd.factors(&w, rank).unwrap().compose();
            let diff: f64 = by_svd
                .iter()
                .zip(&f.compose())
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                diff <= error_tol * norm(&w),
                "{rows}x{cols} {precision:?} rank {rank}: {diff}"
            );
        }
    }
}

#[test]
fn the_gram_route_keeps_a_rank_deficient_weight_exact() {
    // Rank 3 in a 10 x 40 matrix: the zero singular values must not produce NaN or noise.
    let w = with_spectrum(10, 40, &[5.0, 2.0, 1.0], 3);
    for (precision, floor) in [(Precision::F64, 1e-5), (Precision::F32, 5e-3)] {
        let gram = DenseSvd::gram(&w, 10, 40, precision).unwrap();
        assert!(gram.singular_values()[3..].iter().all(|&s| s < floor), "{precision:?}");
        let full = gram.factors(&w, 10).unwrap();
        assert!(full.reduce.iter().chain(&full.reconstruct).all(|v| v.is_finite()));
        let rebuilt: Vec<f64> = full.compose().iter().map(|&v| v as f64).collect();
        assert!(frobenius(&w, &rebuilt) <= 1e-5 * norm(&w), "{precision:?}");
    }
}

/// The Gram route of convolutions (what `Precision::Auto` takes for reshaped kernels over 1 M
/// elements) against the f64 SVD: the same spectrum, full rank reproduces the kernel, truncation
/// error the dropped singular values, grouped kernels group by group.
#[test]
fn the_conv_gram_route_matches_the_svd() {
    for (shape, groups) in [
        (
            KernelShape {
                filters: 16,
                channels: 12,
                height: 3,
                width: 3,
            },
            1,
        ),
        (
            KernelShape {
                filters: 12,
                channels: 4,
                height: 3,
                width: 2,
            },
            3,
        ),
    ] {
        let w = random(shape.len(), 9);
        let gram = ConvSvd::gram(&w, shape, groups, Precision::F32).unwrap();
        let svd = ConvSvd::new(&w, shape, groups, Precision::F64).unwrap();
        assert_eq!(gram.precision(), Precision::F32);
        let exact = ConvSvd::gram(&w, shape, groups, Precision::F64).unwrap();
        assert_eq!(exact.precision(), Precision::F64);
        for (a, b) in exact.singular_values().iter().zip(&svd.singular_values()) {
            assert!(a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= 1e-9 * b[0]));
        }
        assert_eq!(gram.max_rank(), svd.max_rank());
        let (sg, ss) = (gram.singular_values(), svd.singular_values());
        for (a, b) in sg.iter().zip(&ss) {
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() <= 1e-3 * b[0], "{x} vs {y}");
            }
        }
        let full = gram.factors(gram.max_rank()).unwrap();
        let rebuilt = rebuild_conv(
            &full.vertical,
            &full.horizontal,
            shape,
            groups,
            gram.max_rank() * groups,
        );
        assert!(frobenius(&w, &rebuilt) <= 1e-5 * norm(&w));
        for rank in [1, 3] {
            let f = gram.factors(rank).unwrap();
            let err = frobenius(
                &w,
                &rebuild_conv(&f.vertical, &f.horizontal, shape, groups, rank * groups),
            );
            let expected = truncation_error(&ss, rank);
            assert!(
                (err - expected).abs() <= 1e-4 * norm(&w),
                "rank {rank}: {err} vs {expected}"
            );
        }
    }
}

/// The factored tap sums equal the tap sums of the kernel the pair computes, built here
/// independently, for grouped and non-square kernels; the dense row sums those of the product.
#[test]
fn tap_sums_from_factors_match_the_composed_kernel() {
    for (shape, groups, rank_g) in [
        (
            KernelShape {
                filters: 6,
                channels: 4,
                height: 3,
                width: 3,
            },
            1,
            5,
        ),
        (
            KernelShape {
                filters: 8,
                channels: 6,
                height: 5,
                width: 2,
            },
            2,
            3,
        ),
        (
            KernelShape {
                filters: 4,
                channels: 3,
                height: 1,
                width: 1,
            },
            1,
            2,
        ),
    ] {
        let w = random(shape.len(), 21);
        let svd = ConvSvd::new(&w, shape, groups, Precision::F64).unwrap();
        let f = svd.factors(rank_g).unwrap();
        let rows: Vec<f64> = (0..shape.height).map(|i| 0.5 + 0.25 * i as f64).collect();
        let cols: Vec<f64> = (0..shape.width).map(|j| 1.0 - 0.2 * j as f64).collect();
        let rebuilt = rebuild_conv(&f.vertical, &f.horizontal, shape, groups, f.rank);
        let inner = shape.len() / shape.filters;
        let taps = shape.height * shape.width;
        let want: Vec<f64> = (0..shape.filters)
            .map(|n| {
                (0..inner)
                    .map(|k| rebuilt[n * inner + k] * rows[(k % taps) / shape.width] * cols[k % shape.width])
                    .sum()
            })
            .collect();
        let got = f.weighted_tap_sums(&rows, &cols);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{shape:?}: {a} vs {b}");
        }
        // The free function on the composed kernel agrees too.
        let composed = accnn_decompose::weighted_tap_sums(&f.compose(), shape.filters, &rows, &cols);
        for (a, b) in composed.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{shape:?}: {a} vs {b}");
        }
        // Per channel: the same sums before the channels are added up.
        let want_channels: Vec<f64> = (0..shape.filters * shape.channels)
            .map(|nc| {
                (0..taps)
                    .map(|t| rebuilt[nc * taps + t] * rows[t / shape.width] * cols[t % shape.width])
                    .sum()
            })
            .collect();
        let from_factors = f.channel_tap_sums(&rows, &cols);
        let from_kernel = accnn_decompose::channel_tap_sums(&f.compose(), shape.filters, &rows, &cols);
        assert_eq!(from_factors.len(), want_channels.len());
        for ((a, k), b) in from_factors.iter().zip(&from_kernel).zip(&want_channels) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{shape:?}: {a} vs {b}");
            assert!((k - b).abs() < 1e-4 * (1.0 + b.abs()), "{shape:?}: {k} vs {b}");
        }
    }
    let (outputs, inputs) = (9, 14);
    let w = random(outputs * inputs, 22);
    let f = DenseSvd::new(&w, outputs, inputs, Precision::F64)
        .unwrap()
        .factors(&w, 4)
        .unwrap();
    let product = f.compose();
    for (n, got) in f.row_sums().iter().enumerate() {
        let want: f64 = product[n * inputs..(n + 1) * inputs].iter().map(|&v| v as f64).sum();
        assert!(
            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
            "row {n}: {got} vs {want}"
        );
    }
}
