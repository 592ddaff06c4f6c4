//! Where the engine stands against onnxruntime, layer by layer: times single convolutions (whole,
//! or as their decomposed pair at a rank) in accnn's engine and in onnxruntime, alternating, and
//! prints each one's latency and GFLOP/s.
//!
//! ```text
//! export ORT_DYLIB_PATH=$(cargo xtask onnxruntime)      # without it, the engine alone
//! cargo run --release -p accnn --example layer_speed -- [THREADS] [BATCH]
//! LAYERS="64,224,64,3,1;64,224,64,3,1,32" cargo run --release -p accnn --example layer_speed
//! ```
//!
//! `LAYERS` lists `channels,size,filters,kernel,stride[,rank]` per layer (square images, `same`
//! padding; the kernel `k` or `khxkw`, e.g. `3x1` for a pair's vertical half);
//! by default ResNet-18's convolutions at 224 and some VGG-16 ones. Layers timed alone miss what
//! a runtime does across layers (onnxruntime keeps its blocked layout between them; here it
//! converts in and out), so this says where kernels differ, not what whole models take.

use std::error::Error;

use accnn_graph::ir::ConvAttrs;
use accnn_graph::shape::infer_shapes;
use accnn_infer::latency::{LayerSpec, layer_input_shape, layer_model};
use accnn_infer::timing::alternate;
use accnn_infer::{Engine, EngineOptions};
use candle_core::{DType, Device, Tensor};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A `kh x kw` convolution of `channels` inputs at `size` (square), `same`-padded.
fn conv(channels: usize, size: usize, filters: usize, [kh, kw]: [usize; 2], stride: usize) -> LayerSpec {
    let mut attrs = ConvAttrs::same([kh, kw], filters);
    attrs.stride = [stride, stride];
    LayerSpec::Conv {
        attrs,
        input: [channels, size, size],
    }
}

/// A layer to time, whole (`None`) or as its pair at a rank.
type Case = (LayerSpec, Option<usize>);

fn defaults() -> Vec<Case> {
    vec![
        (conv(3, 224, 64, [7, 7], 2), None),
        (conv(64, 56, 64, [3, 3], 1), None),
        (conv(64, 56, 128, [3, 3], 2), None),
        (conv(128, 28, 128, [3, 3], 1), None),
        (conv(256, 14, 256, [3, 3], 1), None),
        (conv(512, 7, 512, [3, 3], 1), None),
        (conv(64, 56, 64, [3, 3], 1), Some(48)),
        (conv(128, 28, 128, [3, 3], 1), Some(96)),
        (conv(256, 14, 256, [3, 3], 1), Some(192)),
        (conv(512, 7, 512, [3, 3], 1), Some(384)),
        (conv(64, 224, 64, [3, 3], 1), None),
        (conv(64, 224, 64, [3, 3], 1), Some(32)),
        (conv(256, 56, 256, [3, 3], 1), None),
    ]
}

/// A kernel size: `k` (square) or `khxkw` (`3x1`: the vertical half of a pair on its own).
fn kernel(text: &str) -> Result<[usize; 2], std::num::ParseIntError> {
    Ok(match text.split_once('x') {
        Some((h, w)) => [h.trim().parse()?, w.trim().parse()?],
        None => {
            let k = text.trim().parse()?;
            [k, k]
        }
    })
}

fn parse(list: &str) -> Result<Vec<Case>, Box<dyn Error>> {
    list.split(';')
        .map(|layer| {
            let fields: Vec<&str> = layer.split(',').collect();
            let bad = |e: &dyn std::fmt::Display| format!("LAYERS entry '{layer}': {e}");
            let number = |i: usize| fields[i].trim().parse::<usize>().map_err(|e| bad(&e));
            if !(5..=6).contains(&fields.len()) {
                return Err(bad(&"want channels,size,filters,kernel,stride[,rank]").into());
            }
            let spec = conv(
                number(0)?,
                number(1)?,
                number(2)?,
                kernel(fields[3]).map_err(|e| bad(&e))?,
                number(4)?,
            );
            let rank = if fields.len() == 6 { Some(number(5)?) } else { None };
            Ok((spec, rank))
        })
        .collect()
}

/// mimalloc 2's `mi_option_purge_delay` (see accnn-cli's `memory.rs`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> Result<(), Box<dyn Error>> {
    // Freed memory kept mapped, as `accnn bench` does: otherwise each run faults its output in
    // afresh and the kernel's page zeroing is timed with the convolution (1.3-1.8x on a 224-pixel
    // layer's output).
    // SAFETY: sets one of mimalloc's global options; no pointers are involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let threads = args.next().transpose()?.unwrap_or(2);
    let batch = args.next().transpose()?.unwrap_or(1);
    let layers = match std::env::var("LAYERS") {
        Ok(list) => parse(&list)?,
        Err(_) => defaults(),
    };
    let ort = accnn_ort::OnnxRuntime::load(None).ok();
    for (spec, rank) in &layers {
        let model = layer_model(spec, *rank);
        let shape = layer_input_shape(spec, batch);
        let shapes = infer_shapes(&model, &shape)?;
        let nodes = &model.graph.nodes;
        let macs: u64 = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| {
                let input = node.inputs.first()?;
                Some(node.op.macs(shapes.of(input.node), shapes.of(i)))
            })
            .sum();
        let flops = 2.0 * (macs * batch as u64) as f64;
        let engine = Engine::new(
            &model,
            EngineOptions {
                threads,
                ..Default::default()
            },
        )?;
        let x = engine.prepare(&Tensor::ones(shape.clone(), DType::F32, &Device::Cpu)?)?;
        let data = vec![1f32; shape.iter().product()];
        let mut session = match &ort {
            Some(runtime) => {
                let bytes = accnn_graph::onnx::encode_standalone(&model, &shape, None)?.model;
                Some(runtime.session(&bytes, threads)?)
            }
            None => None,
        };
        let mut run_engine = || engine.forward(&x).map(drop).map_err(|e| e.to_string());
        let mut run_ort = || match session.as_mut() {
            Some(s) => s.time_run(&data, &shape).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        let rounds = ((2e10 / flops.max(1.0)) as usize).clamp(10, 400);
        let latencies = alternate(&mut [&mut run_engine, &mut run_ort], 3, rounds)?;
        let (e, o) = (latencies[0].median(), latencies[1].median());
        let rank = rank.map_or("whole".to_string(), |k| format!("rank {k}"));
        print!(
            "{:<48} {rank:>9}  engine {:8.3} ms {:5.0} GF/s",
            spec.key(),
            e * 1e3,
            flops / e / 1e9
        );
        if ort.is_some() {
            print!(
                "  onnxruntime {:8.3} ms {:5.0} GF/s  engine/ort {:.2}",
                o * 1e3,
                flops / o / 1e9,
                e / o
            );
        }
        println!();
    }
    Ok(())
}
