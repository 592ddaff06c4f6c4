//! Factorisation time at VGG-16 sizes: conv5 (512x512x3x3) and fc6 (4096x25088), plus fc7.
//!
//! `cargo bench -p accnn-decompose` (fc6 alone takes about a minute per iteration: run it with
//! `cargo bench -p accnn-decompose -- fc6` when that is what you want).

use accnn_decompose::{ConvSvd, DenseSvd, KernelShape, Precision};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn random(n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

fn conv(c: &mut Criterion) {
    let shape = KernelShape {
        filters: 512,
        channels: 512,
        height: 3,
        width: 3,
    };
    let w = random(shape.len());
    let mut g = c.benchmark_group("conv5_512x512x3x3");
    g.sample_size(10);
    for precision in [Precision::F32, Precision::F64] {
        g.bench_function(format!("svd+factors K=384 {precision:?}"), |b| {
            b.iter(|| {
                let svd = ConvSvd::new(&w, shape, 1, precision).unwrap();
                svd.factors(384).unwrap()
            })
        });
    }
    g.finish();
}

fn dense(c: &mut Criterion, name: &str, outputs: usize, inputs: usize, precision: Precision) {
    let w = random(outputs * inputs);
    // faer's result must be finite at these sizes; Auto falls back to f64 otherwise.
    let svd = DenseSvd::new(&w, outputs, inputs, precision).unwrap();
    assert!(svd.singular_values().iter().all(|s| s.is_finite()));
    eprintln!("{name}: {precision:?} ran in {:?}", svd.precision());
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.bench_function(format!("svd+factors K={} {precision:?}", outputs / 2), |b| {
        b.iter(|| {
            DenseSvd::new(&w, outputs, inputs, precision)
                .unwrap()
                .factors(&w, outputs / 2)
                .unwrap()
        })
    });
    g.finish();
}

fn fc7(c: &mut Criterion) {
    dense(c, "fc7_4096x4096", 4096, 4096, Precision::Auto);
}

fn fc6(c: &mut Criterion) {
    dense(c, "fc6_4096x25088", 4096, 25088, Precision::Auto);
}

criterion_group!(benches, conv, fc7, fc6);
criterion_main!(benches);
