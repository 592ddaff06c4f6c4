//! Rank selection on VGG-16 at 224x224 (13 convolutions + 3 FC layers, ranks up to 4096).
//!
//! `cargo bench -p accnn-rank`. Two spectra: geometric decay (trained-like) and flat (random weights,
//! the hardest case for the exact search: many near-ties).

use accnn_rank::{LayerKind, RankCandidate, energy_profile, select_ranks};
use criterion::{Criterion, criterion_group, criterion_main};

/// (name, max rank, MACs whole, MACs per rank) of VGG-16's layers at 3x224x224.
const VGG16: [(&str, usize, u64, u64); 16] = [
    ("conv1_1", 9, 86_704_128, 10_084_032),
    ("conv1_2", 192, 1_849_688_064, 19_267_584),
    ("conv2_1", 192, 924_844_032, 7_225_344),
    ("conv2_2", 384, 1_849_688_064, 9_633_792),
    ("conv3_1", 384, 924_844_032, 3_612_672),
    ("conv3_2", 768, 1_849_688_064, 4_816_896),
    ("conv3_3", 768, 1_849_688_064, 4_816_896),
    ("conv4_1", 768, 924_844_032, 1_806_336),
    ("conv4_2", 1536, 1_849_688_064, 2_408_448),
    ("conv4_3", 1536, 1_849_688_064, 2_408_448),
    ("conv5_1", 1536, 462_422_016, 602_112),
    ("conv5_2", 1536, 462_422_016, 602_112),
    ("conv5_3", 1536, 462_422_016, 602_112),
    ("fc6", 4096, 102_760_448, 29_184),
    ("fc7", 4096, 16_777_216, 8_192),
    ("fc8", 1000, 4_096_000, 5_096),
];

fn layers(spectrum: impl Fn(usize, usize) -> f64) -> Vec<RankCandidate> {
    VGG16
        .iter()
        .enumerate()
        .map(|(l, &(name, rank, macs, per_rank))| {
            let values: Vec<f64> = (0..rank).map(|i| spectrum(l, i)).collect();
            RankCandidate {
                name: name.into(),
                kind: if name.starts_with("fc") {
                    LayerKind::FullyConnected
                } else {
                    LayerKind::Convolution
                },
                original_cost: macs,
                cost_per_rank: per_rank,
                rank_unit: 1,
                energy: energy_profile(&[&values]),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let decaying = layers(|l, i| (0.997 - 0.0003 * l as f64).powi(i as i32));
    // A random Gaussian matrix's spectrum falls roughly linearly (Marchenko–Pastur).
    let flat = layers(|l, i| 1.0 - i as f64 / (VGG16[l].1 as f64 + 1.0));
    let whole: u64 = VGG16.iter().map(|l| l.2).sum();
    let mut g = c.benchmark_group("select_ranks_vgg16");
    for (spectrum, layers) in [("decaying", &decaying), ("flat", &flat)] {
        for ratio in [2.0, 4.0] {
            let budget = (whole as f64 / ratio) as u64;
            g.bench_function(format!("{spectrum} x{ratio}"), |b| {
                b.iter(|| select_ranks(layers, budget).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
