//! The one-layer models that `--cost latency` times, written as ONNX (`encode_standalone`) for other
//! runtimes: read back, they compute what the models themselves compute.

use accnn_graph::Op;
use accnn_graph::onnx::{decode_onnx, encode_standalone};
use accnn_infer::latency::{LayerSpec, layer_input_shape, layer_model};
use accnn_infer::{Engine, EngineOptions};
use candle_core::{Device, Tensor};

fn outputs(model: &accnn_graph::Model, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0).collect();
    let engine = Engine::new(model, EngineOptions::default()).unwrap();
    let x = Tensor::from_vec(x, shape.to_vec(), &Device::Cpu).unwrap();
    engine
        .run(&x)
        .unwrap()
        .remove(0)
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn every_timed_layer_reads_back_as_itself() {
    for spec in &LayerSpec::samples() {
        for rank in [None, Some(1), Some(3)] {
            let model = layer_model(spec, rank);
            let shape = layer_input_shape(spec, 2);
            let bytes = encode_standalone(&model, &shape, None).unwrap().model;
            let read = decode_onnx(&bytes, std::path::Path::new("chain.onnx"), None).unwrap();
            let (want, got) = (outputs(&model, &shape), outputs(&read.model, &shape));
            assert_eq!(want.len(), got.len(), "{spec:?} at {rank:?}");
            let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "{spec:?} at {rank:?}: largest difference {err}");
            // A pair holds two nodes, the layer one: the rank is what is timed.
            let layers = read
                .model
                .graph
                .nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Convolution(_) | Op::FullyConnected(_)))
                .count();
            assert_eq!(layers, if rank.is_some() { 2 } else { 1 }, "{spec:?}");
        }
    }
}
