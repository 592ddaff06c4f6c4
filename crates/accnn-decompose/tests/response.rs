//! The data-aware factorisations against independent computations.

use accnn_decompose::{ConvSvd, KernelShape, LeastSquares, Precision, SecondMoment, WhitenedConvSvd};

fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

const SHAPE: KernelShape = KernelShape {
    filters: 6,
    channels: 4,
    height: 3,
    width: 2,
};

fn weight() -> Vec<f32> {
    let mut r = lcg(1);
    (0..SHAPE.len()).map(|_| r() as f32).collect()
}

/// Correlated patches: p = L z with a fixed mixing L, so Σ is far from a multiple of I.
fn patches(count: usize) -> Vec<f64> {
    let d = SHAPE.channels * SHAPE.height;
    let mut r = lcg(2);
    let mix: Vec<f64> = (0..d * d).map(|i| if i % (d + 1) == 0 { 3.0 } else { r() }).collect();
    let mut out = Vec::with_capacity(count * d);
    for _ in 0..count {
        let z: Vec<f64> = (0..d).map(|k| r() * (1.0 + k as f64)).collect();
        for i in 0..d {
            out.push((0..d).map(|k| mix[i * d + k] * z[k]).sum());
        }
    }
    out
}

/// The responses `Kᵀ p` of a kernel `kernel` of `SHAPE`, reshaped, to one vertical patch `p`,
/// `(n, j)`-ordered.
fn responses(kernel: &[f64], p: &[f64]) -> Vec<f64> {
    let KernelShape {
        filters,
        channels,
        height,
        width,
    } = SHAPE;
    let mut out = Vec::with_capacity(filters * width);
    for n in 0..filters {
        for j in 0..width {
            out.push(
                (0..channels * height)
                    .map(|r| kernel[((n * channels + r / height) * height + r % height) * width + j] * p[r])
                    .sum(),
            );
        }
    }
    out
}

/// E‖(A − V Hᵀ)ᵀ p‖² over the samples, A being the reshaped kernel and the pair's product rebuilt.
fn response_error(rebuilt: &[f32], samples: &[f64]) -> f64 {
    let d = SHAPE.channels * SHAPE.height;
    let difference: Vec<f64> = weight().iter().zip(rebuilt).map(|(w, r)| (w - r) as f64).collect();
    let total: f64 = samples
        .chunks(d)
        .map(|p| responses(&difference, p).iter().map(|e| e * e).sum::<f64>())
        .sum();
    total / (samples.len() / d) as f64
}

#[test]
fn isotropic_inputs_give_the_weight_svd() {
    let d = SHAPE.channels * SHAPE.height;
    let mut m = SecondMoment::new(d);
    let identity: Vec<f64> = (0..d * d).map(|i| if i % (d + 1) == 0 { 2.0 } else { 0.0 }).collect();
    m.add(&identity);
    let whitened = WhitenedConvSvd::new(&weight(), SHAPE, &m, 0.0).expect("factorises");
    let plain = ConvSvd::new(&weight(), SHAPE, 1, Precision::F64).expect("factorises");
    // Σ = 4/d·I scales every singular value by sqrt(4/d).
    let scale = (4.0 / d as f64).sqrt();
    for (a, b) in whitened.singular_values().iter().zip(plain.singular_values()[0]) {
        assert!((a - b * scale).abs() < 1e-9 * (1.0 + b), "{a} vs {b}");
    }
    let full = whitened
        .factors(&weight(), whitened.max_rank())
        .expect("full rank")
        .compose();
    for (a, b) in weight().iter().zip(&full) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn response_error_is_the_dropped_response_energy_and_beats_the_weight_svd() {
    let samples = patches(4000);
    let mut m = SecondMoment::new(SHAPE.channels * SHAPE.height);
    m.add(&samples);
    let whitened = WhitenedConvSvd::new(&weight(), SHAPE, &m, 0.0).expect("factorises");
    let plain = ConvSvd::new(&weight(), SHAPE, 1, Precision::F64).expect("factorises");
    for rank in 1..whitened.max_rank() {
        let dropped: f64 = whitened.singular_values()[rank..].iter().map(|s| s * s).sum();
        let err = response_error(&whitened.factors(&weight(), rank).expect("rank").compose(), &samples);
        assert!(
            (err - dropped).abs() < 1e-3 * (1.0 + dropped),
            "rank {rank}: {err} vs {dropped}"
        );
        let data_free = response_error(&plain.factors(rank).expect("rank").compose(), &samples);
        assert!(
            err <= data_free * (1.0 + 1e-9),
            "rank {rank}: {err} > weight SVD's {data_free}"
        );
    }
}

#[test]
fn the_response_moment_alone_gives_the_input_moments_factorisation() {
    let samples = patches(3000);
    let d = SHAPE.channels * SHAPE.height;
    let mut inputs = SecondMoment::new(d);
    inputs.add(&samples);
    let mut outputs = SecondMoment::new(SHAPE.filters * SHAPE.width);
    let kernel: Vec<f64> = weight().iter().map(|&w| w as f64).collect();
    let measured: Vec<f64> = samples.chunks(d).flat_map(|p| responses(&kernel, p)).collect();
    outputs.add(&measured);
    let by_inputs = WhitenedConvSvd::new(&weight(), SHAPE, &inputs, 0.0).expect("factorises");
    // The in-place mean is the mean.
    let (mean, count) = (outputs.mean(), outputs.count() as f64);
    let in_place = outputs.clone().into_mean();
    let sum = outputs.clone().into_sum();
    for j in 0..mean.ncols() {
        for i in 0..mean.nrows() {
            assert_eq!(in_place[(i, j)], mean[(i, j)]);
            assert!((in_place[(i, j)] - sum[(i, j)] / count).abs() <= 1e-15 * sum[(i, j)].abs().max(1.0));
        }
    }
    let by_outputs = WhitenedConvSvd::from_responses(&weight(), SHAPE, outputs, 0.0).expect("factorises");
    assert_eq!(by_inputs.max_rank(), by_outputs.max_rank());
    let top = by_inputs.singular_values()[0];
    for (a, b) in by_inputs.singular_values().iter().zip(by_outputs.singular_values()) {
        assert!((a - b).abs() < 1e-9 * top, "{a} vs {b}");
    }
    for rank in [1, 3, by_inputs.max_rank()] {
        let a = by_inputs.factors(&weight(), rank).expect("rank").compose();
        let b = by_outputs.factors(&weight(), rank).expect("rank").compose();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "rank {rank}: {x} vs {y}");
        }
    }
    // A moment of the wrong size is refused, not misread.
    assert!(WhitenedConvSvd::from_responses(&weight(), SHAPE, SecondMoment::new(5), 0.0).is_err());
}

#[test]
fn least_squares_recovers_an_exact_linear_map_streamed_in_blocks() {
    let (f, n, rows) = (7, 3, 200);
    let mut r = lcg(3);
    let truth: Vec<f64> = (0..f * n).map(|_| r()).collect();
    let features: Vec<f64> = (0..rows * f).map(|_| r()).collect();
    let targets: Vec<f64> = (0..rows)
        .flat_map(|i| {
            let x = &features[i * f..(i + 1) * f];
            let truth = &truth;
            (0..n).map(move |o| (0..f).map(|k| x[k] * truth[k * n + o]).sum::<f64>())
        })
        .collect();
    let mut ls = LeastSquares::new(f, n);
    for block in 0..4 {
        let (a, b) = (block * 50, (block + 1) * 50);
        ls.add(&features[a * f..b * f], &targets[a * n..b * n]);
    }
    assert_eq!(ls.count(), rows as u64);
    let b = ls.solve(0.0).expect("solves");
    for k in 0..f {
        for o in 0..n {
            assert!((b[(k, o)] - truth[k * n + o]).abs() < 1e-9);
        }
    }
}
