//! Models written as new ONNX files (`accnn_graph::onnx::encode_standalone`) compute what the IR
//! computed: each is read back by accnn's ONNX importer (itself checked against ONNX's backend node
//! tests) and both are evaluated by the reference interpreter.

use std::path::Path;

use accnn_graph::ModelBuilder;
use accnn_graph::ir::{Activation, BatchNormAttrs, ConvAttrs, Padding2d, PoolAttrs, PoolConvention, PoolKind};
use accnn_graph::onnx::{decode_onnx, encode_standalone};
use accnn_graph::{Model, Op, Tensor};
use accnn_reference::{Array, evaluate};

fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// The largest difference between `model` and its standalone ONNX copy, read back, on one input.
fn round_trip_error(model: &Model, input_shape: &[usize], seed: u64) -> Result<f64, String> {
    let written = encode_standalone(model, input_shape, None).map_err(|e| e.to_string())?;
    let read =
        decode_onnx(&written.model, Path::new("standalone.onnx"), None).map_err(|e| format!("reading back: {e}"))?;
    // Positive inputs where logarithms and square roots need them.
    let x = Array::new(input_shape.to_vec(), values(input_shape.iter().product(), seed));
    let expected = evaluate(model, &x).map_err(|e| format!("reference on the original: {e}"))?;
    let got = evaluate(&read.model, &x).map_err(|e| format!("reference on the copy: {e}"))?;
    if expected.len() != got.len() {
        return Err(format!("{} outputs became {}", expected.len(), got.len()));
    }
    let mut worst: f64 = 0.0;
    for (e, g) in expected.iter().zip(&got) {
        if e.shape != g.shape {
            return Err(format!("output shape {:?} became {:?}", e.shape, g.shape));
        }
        for (a, b) in e.data.iter().zip(&g.data) {
            let d = if a.is_nan() && b.is_nan() {
                0.0
            } else {
                (a - b).abs() / (1.0 + a.abs())
            };
            worst = worst.max(if d.is_nan() { f64::INFINITY } else { d });
        }
    }
    Ok(worst)
}

/// Every operator's conformance sample survives the trip, but those ONNX opset 17 cannot express,
/// which are refused with a message naming the node.
#[test]
fn every_operator_sample_round_trips_through_a_new_onnx_model() {
    let samples = accnn_graph::ops::samples();
    let mut refused = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        match round_trip_error(&sample.model, &sample.input_shape, 70 + i as u64) {
            Ok(error) => assert!(error < 1e-5, "{}: outputs differ by {error}", sample.name),
            Err(message) => refused.push(format!("{}: {message}", sample.name)),
        }
    }
    // What opset 17 lacks: wrap padding (19), antialiased and half_pixel_symmetric resizing (18, 19),
    // and MXNet pooling whose last window ONNX drops.
    for r in &refused {
        let known = ["opset 18", "opset 19", "ceil_mode gives fewer", "overhang"];
        assert!(known.iter().any(|k| r.contains(k)), "unexpected refusal: {r}");
    }
    assert!(refused.len() <= 4, "refused: {refused:#?}");
    assert!(
        samples.len() - refused.len() > 60,
        "{} round-tripped",
        samples.len() - refused.len()
    );
}

/// An MXNet-style classifier: fixed-gamma BatchNorm, MXNet `full` pooling, Flatten + FC, and the
/// SoftmaxOutput head with its label input (dropped, as inference ignores it).
#[test]
fn an_mxnet_style_network_round_trips() {
    let t = |shape: Vec<usize>, seed: u64| {
        let n = shape.iter().product();
        Tensor::new(shape, values(n, seed).into_iter().map(|v| v as f32).collect()).unwrap()
    };
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let conv = ConvAttrs {
        kernel: [3, 3],
        stride: [1, 1],
        dilate: [1, 1],
        pad: Padding2d::symmetric(1, 1),
        num_filter: 4,
        num_group: 1,
        no_bias: false,
    };
    let c = b.conv("conv1", x, conv, t(vec![4, 3, 3, 3], 1), Some(t(vec![4], 2)));
    let gamma = b.weight("bn_gamma", t(vec![4], 3));
    let beta = b.weight("bn_beta", t(vec![4], 4));
    let mean = b.aux("bn_moving_mean", t(vec![4], 5));
    let var = b.aux("bn_moving_var", Tensor::new(vec![4], vec![0.5, 1.0, 1.5, 2.0]).unwrap());
    let bn = b.node(
        "bn",
        Op::BatchNorm(BatchNormAttrs {
            eps: 1e-3,
            fix_gamma: true,
            axis: 1,
        }),
        &[c, gamma, beta, mean, var],
    );
    let r = b.activation("relu", bn, Activation::Relu);
    let pool = PoolAttrs {
        convention: PoolConvention::Full,
        ..PoolAttrs::new(PoolKind::Max, [3, 3], [2, 2])
    };
    let p = b.node("pool", Op::Pooling(pool), &[r]);
    let f = b.node("flatten", Op::Flatten { axis: 1 }, &[p]);
    let fc = b.dense("fc", f, t(vec![5, 4 * 4 * 4], 6), Some(t(vec![5], 7)), true);
    let label = b.input("softmax_label");
    let s = b.node("softmax", Op::SoftmaxOutput, &[fc, label]);
    let model = b.build(&[s]).unwrap();
    let error = round_trip_error(&model, &[2, 3, 9, 9], 3).unwrap();
    assert!(error < 1e-6, "outputs differ by {error}");
    let written = encode_standalone(&model, &[2, 3, 9, 9], None).unwrap();
    let read = decode_onnx(&written.model, Path::new("m.onnx"), None).unwrap();
    assert!(!read.model.graph.nodes.iter().any(|n| n.name == "softmax_label"));
}

/// A weight stored nowhere is named, not written as an empty tensor; external data moves the weights.
#[test]
fn weights_go_to_the_external_file_when_asked() {
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let fc = b.dense(
        "fc",
        x,
        Tensor::new(vec![64, 32], vec![0.25; 2048]).unwrap(),
        None,
        true,
    );
    let model = b.build(&[fc]).unwrap();
    let inline = encode_standalone(&model, &[1, 32], None).unwrap();
    let split = encode_standalone(&model, &[1, 32], Some("m.onnx.data")).unwrap();
    let data = split.data.expect("an external file");
    assert!(data.len() >= 64 * 32 * 4);
    assert!(split.model.len() + 64 * 32 * 4 <= inline.model.len() + 64);
}
