//! Measured against theoretical speed-up of single VGG-16 convolutions decomposed at the ranks of
//! the original tool's `vgg16-config.json`, on this CPU with accnn's engine, each pair timed in the
//! same run as the layer it replaces (first quartile of at least 30 runs each, batch 1):
//!
//! ```text
//! cargo run --release -p accnn-infer --example layer_speedups [-- THREADS [NAME-FILTER]]
//! ```

use accnn_graph::ir::ConvAttrs;
use accnn_infer::EngineOptions;
use accnn_infer::latency::{LayerSpec, time_layer};

/// A VGG-16 3x3 convolution: `channels` -> `filters` on a `size` x `size` input.
fn vgg_conv(channels: usize, filters: usize, size: usize) -> LayerSpec {
    LayerSpec::Conv {
        attrs: ConvAttrs::same([3, 3], filters),
        input: [channels, size, size],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let threads = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let filter = args.next();
    // (name, channels, filters, size, rank in vgg16-config.json)
    let layers = [
        ("conv1_1", 3, 64, 224, 5),
        ("conv1_2", 64, 64, 224, 32),
        ("conv2_1", 64, 128, 112, 64),
        ("conv2_2", 128, 128, 112, 64),
        ("conv3_1", 128, 256, 56, 96),
        ("conv3_2", 256, 256, 56, 160),
        ("conv3_3", 256, 256, 56, 192),
        ("conv4_1", 256, 512, 28, 256),
        ("conv4_2", 512, 512, 28, 256),
        ("conv4_3", 512, 512, 28, 320),
        ("conv5_1", 512, 512, 14, 384),
    ];
    let options = EngineOptions {
        threads,
        ..Default::default()
    };
    println!("{threads} threads, batch 1, kernels {}", options.kernels());
    for (name, channels, filters, size, rank) in layers {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let spec = vgg_conv(channels, filters, size);
        let whole = time_layer(&spec, None, 1, options, 30)?;
        let pair = time_layer(&spec, Some(rank), 1, options, 30)?;
        let macs = (size * size * channels * filters * 9) as f64;
        let pair_macs = (size * size * rank * 3 * (channels + filters)) as f64;
        println!(
            "{name}: whole {:.3} ms ({:.0} GMAC/s), K={rank} pair {:.3} ms ({:.0} GMAC/s): {:.2}x measured, {:.2}x theoretical",
            whole * 1e3,
            macs / whole / 1e9,
            pair * 1e3,
            pair_macs / pair / 1e9,
            whole / pair,
            macs / pair_macs
        );
    }
    Ok(())
}
