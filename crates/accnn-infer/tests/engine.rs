//! The engine against MXNet's recorded outputs and the independent f64 reference interpreter.

use accnn_graph::ir::{Activation, ConvAttrs, Padding2d, PoolAttrs, PoolConvention, PoolKind};
use accnn_graph::mxnet::load_checkpoint;
use accnn_graph::{Entry, Model, ModelBuilder, Op, Tensor as Weights};
use accnn_infer::{Engine, EngineOptions};
use accnn_reference::{Array, evaluate};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn root(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// Every way the engine runs a model in f32 on this machine, with `threads` workers: accnn's CPU
/// kernels (the AVX-512 micro-kernel where the CPU has it), the portable ones, and candle ops (the
/// GPU path).
fn every_path(threads: usize) -> [(&'static str, EngineOptions); 3] {
    let base = EngineOptions {
        threads,
        ..Default::default()
    };
    [
        ("accnn kernels", base),
        (
            "portable kernels",
            EngineOptions {
                portable_kernels: true,
                ..base
            },
        ),
        (
            "candle ops",
            EngineOptions {
                candle_ops: true,
                ..base
            },
        ),
    ]
}

fn run_with(model: &Model, shape: &[usize], x: &[f32], options: EngineOptions) -> Vec<f64> {
    let engine = Engine::new(model, options).unwrap();
    let input = Tensor::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap();
    let out = engine.run(&input).unwrap().remove(0);
    out.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn reference(model: &Model, shape: &[usize], x: &[f32]) -> Vec<f64> {
    evaluate(
        model,
        &Array::new(shape.to_vec(), x.iter().map(|&v| v as f64).collect()),
    )
    .unwrap()
    .remove(0)
    .data
}

fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (diff / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

fn with_head(mut model: Model, name: &str) -> Model {
    let node = model.graph.find(name).unwrap();
    model.graph.heads = vec![Entry::new(node)];
    model
}

#[test]
fn matches_mxnet_on_its_own_dag() {
    let io: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root("fixtures/mxnet/dag-io.json")).unwrap()).unwrap();
    let floats = |k: &str| {
        io[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect::<Vec<f64>>()
    };
    let shape: Vec<usize> = io["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let x: Vec<f32> = floats("input").into_iter().map(|v| v as f32).collect();
    let model = with_head(load_checkpoint(&root("fixtures/mxnet/dag"), 1).unwrap(), "fc2");
    for threads in [1, 2] {
        for (path, options) in every_path(threads) {
            let err = relative_error(&run_with(&model, &shape, &x, options), &floats("logits"));
            assert!(
                err < 1e-5,
                "threads {threads}, {path}: relative error against MXNet {err}"
            );
        }
    }
}

/// Resumed at any node of a DAG from the live values an earlier run returned, the engine gives the
/// whole run's outputs, without the data input once no live value needs it; without the values it
/// needs, it fails rather than guess.
#[test]
fn a_run_resumed_at_any_node_gives_the_whole_runs_outputs() {
    let model = with_head(load_checkpoint(&root("fixtures/mxnet/dag"), 1).unwrap(), "fc2");
    let shape = [2, 3, 11, 9];
    let x = random(2 * 3 * 11 * 9, 4);
    let input = Tensor::from_vec(x.clone(), &shape, &Device::Cpu).unwrap();
    let engine = Engine::new(&model, EngineOptions::default()).unwrap();
    let whole: Vec<f32> = engine.run(&input).unwrap()[0].flatten_all().unwrap().to_vec1().unwrap();
    let graph = &model.graph;
    let data = graph.nodes.iter().position(|n| n.name == "data").unwrap();
    let mut through_branches = 0;
    for cut in data + 1..graph.nodes.len() {
        // Live values the engine computes (weights and labels are not values of the run).
        let live: Vec<Entry> = graph
            .live_at(cut)
            .into_iter()
            .filter(|e| e.node == data || !matches!(graph.nodes[e.node].op, Op::Variable))
            .collect();
        through_branches += usize::from(live.len() > 1);
        let values = engine.run_collect(&input, &live).unwrap();
        let known: Vec<(Entry, Tensor)> = live.iter().copied().zip(values).collect();
        let out = engine.run_from(None, &known, &graph.heads).unwrap();
        let out: Vec<f32> = out[0].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(out, whole, "resumed at node #{cut} ({})", graph.nodes[cut].name);
    }
    assert!(through_branches > 0, "the DAG has a cut through two branches");
    assert!(
        engine.run_from(None, &[], &graph.heads).is_err(),
        "the data input is needed"
    );
    let from_input = engine.run_from(Some(&input), &[], &graph.heads).unwrap();
    assert_eq!(from_input[0].flatten_all().unwrap().to_vec1::<f32>().unwrap(), whole);
}

#[test]
fn matches_the_reference_on_the_fixture_batched() {
    let model = with_head(load_checkpoint(&root("fixtures/vgg16-mini"), 1).unwrap(), "fc8");
    let shape = [3, 1, 32, 32];
    let x = random(3 * 32 * 32, 1);
    assert_every_path(
        &model,
        &shape,
        &x,
        &reference(&model, &shape, &x),
        &[2],
        1e-5,
        "fixture",
    );
}

/// Half precision (the GPU's bf16/f16, here f16 on the CPU's candle ops): outputs within the
/// rounding a 10-bit mantissa allows of the f64 reference, and the same predicted classes.
#[test]
fn half_precision_keeps_the_fixture_s_outputs_and_predictions() {
    let model = with_head(load_checkpoint(&root("fixtures/vgg16-mini"), 1).unwrap(), "fc8");
    let shape = [8, 1, 32, 32];
    let x = random(8 * 32 * 32, 3);
    let want = reference(&model, &shape, &x);
    let options = EngineOptions {
        dtype: candle_core::DType::F16,
        ..Default::default()
    };
    let got = run_with(&model, &shape, &x, options);
    let err = relative_error(&got, &want);
    assert!(err > 1e-6 && err < 2e-2, "f16: relative error {err}");
    let best = |v: &[f64]| -> Vec<usize> {
        v.chunks(10)
            .map(|row| (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap())
            .collect()
    };
    assert_eq!(best(&got), best(&want));
}

#[test]
fn unsupported_devices_and_precisions_are_named() {
    let model = accnn_infer::doc_model();
    let fails = |options: EngineOptions| match Engine::new(&model, options) {
        Ok(_) => panic!("{options:?} was accepted"),
        Err(e) => e.to_string(),
    };
    let message = fails(EngineOptions {
        dtype: candle_core::DType::BF16,
        ..Default::default()
    });
    assert!(message.contains("bf16"), "{message}");
    let message = fails(EngineOptions {
        dtype: candle_core::DType::F64,
        ..Default::default()
    });
    assert!(message.contains("f32, bf16 or f16"), "{message}");
    if !cfg!(feature = "cuda") {
        let message = fails(EngineOptions {
            target: accnn_infer::Target::Cuda(0),
            ..Default::default()
        });
        assert!(message.contains("build-cuda"), "{message}");
    }
    assert!(accnn_infer::Target::parse("gpu").is_err());
    assert_eq!(
        accnn_infer::Target::parse("cuda:1").unwrap(),
        accnn_infer::Target::Cuda(1)
    );
}

/// Every kernel path: stride-1 convolutions on the AVX-512 micro-kernel (where the CPU has it), as
/// shifted GEMMs and as candle ops (square, vertical, horizontal, dilated, grouped, asymmetric
/// padding), strided ones (equal and unequal strides), and pooling with both conventions and
/// padding.
#[test]
fn every_convolution_and_pooling_path_matches_the_reference() {
    let convs: Vec<(ConvAttrs, usize, bool)> = vec![
        (conv([3, 3], [1, 1], [1, 1], Padding2d::symmetric(1, 1), 1), 6, true),
        (conv([3, 1], [1, 1], [1, 1], Padding2d::symmetric(1, 0), 1), 6, false),
        (conv([1, 3], [1, 1], [1, 1], Padding2d::symmetric(0, 1), 1), 6, true),
        (conv([3, 3], [1, 1], [2, 3], Padding2d::symmetric(2, 3), 1), 6, true),
        (conv([3, 1], [1, 1], [2, 5], Padding2d::symmetric(2, 0), 1), 6, true),
        (conv([3, 3], [1, 1], [1, 1], Padding2d::symmetric(1, 1), 3), 6, true),
        (
            conv(
                [2, 3],
                [1, 1],
                [1, 1],
                Padding2d {
                    top: 0,
                    bottom: 1,
                    left: 2,
                    right: 0,
                },
                2,
            ),
            4,
            true,
        ),
        (conv([3, 3], [2, 1], [1, 1], Padding2d::symmetric(1, 1), 1), 6, true),
        (conv([3, 1], [2, 1], [1, 1], Padding2d::symmetric(1, 0), 1), 6, false),
        (conv([1, 1], [1, 2], [1, 1], Padding2d::default(), 2), 6, true),
    ];
    for (i, (attrs, channels, bias)) in convs.into_iter().enumerate() {
        let model = single_conv(attrs.clone(), channels, bias, i as u64);
        let shape = [2, channels, 9, 11];
        let x = random(2 * channels * 99, 100 + i as u64);
        agrees_on_every_path(&model, &shape, &x, &format!("{attrs:?}"));
    }
    for (kind, convention, pad, include) in [
        (PoolKind::Max, PoolConvention::Valid, 0, true),
        (PoolKind::Max, PoolConvention::Full, 1, true),
        (PoolKind::Avg, PoolConvention::Full, 1, true),
        (PoolKind::Avg, PoolConvention::Valid, 1, false),
        (PoolKind::Sum, PoolConvention::Same, 0, true),
    ] {
        let attrs = PoolAttrs {
            kind,
            kernel: [3, 2],
            stride: [2, 2],
            pad: Padding2d::symmetric(pad, pad),
            global: false,
            convention,
            count_include_pad: include,
        };
        let mut b = ModelBuilder::new();
        let data = b.input("data");
        let p = b.node("p", Op::Pooling(attrs.clone()), &[data]);
        let model = b.build(&[p]).unwrap();
        let shape = [2, 3, 9, 8];
        let x = random(2 * 3 * 72, 7);
        let want = reference(&model, &shape, &x);
        assert_every_path(&model, &shape, &x, &want, &[2], 1e-6, &format!("{attrs:?}"));
    }
    // Lines long enough for the vectorised stride-2 phase split (32 cells a block, and a tail):
    // VGG's 2x2 and ResNet's padded 3x3 max pooling, and a stride of 3.
    for (kernel, stride, pad, width) in [(2, 2, 0, 70), (3, 2, 1, 71), (3, 3, 1, 100)] {
        let attrs = PoolAttrs {
            kind: PoolKind::Max,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            pad: Padding2d::symmetric(pad, pad),
            global: false,
            convention: PoolConvention::Valid,
            count_include_pad: true,
        };
        let mut b = ModelBuilder::new();
        let data = b.input("data");
        let p = b.node("p", Op::Pooling(attrs.clone()), &[data]);
        let model = b.build(&[p]).unwrap();
        let shape = [1, 2, 7, width];
        let x = random(2 * 7 * width, 9);
        let want = reference(&model, &shape, &x);
        assert_every_path(&model, &shape, &x, &want, &[1, 2], 1e-7, &format!("{attrs:?}"));
    }
}

/// Larger stride-1 convolutions: several 96-, 48- and 32-position blocks with a partial last one,
/// taken one at a time and in bands, filter counts that are and are not multiples of the
/// micro-kernel's tiles, one image and several, a fused ReLU; every path against the reference.
#[test]
fn larger_convolutions_match_the_reference_on_every_path() {
    let cases = [
        (conv_filters([3, 3], Padding2d::symmetric(1, 1), 9), 20, [1, 20, 17, 37]),
        (conv_filters([3, 1], Padding2d::symmetric(1, 0), 8), 13, [2, 13, 30, 10]),
        (conv_filters([1, 3], Padding2d::symmetric(0, 1), 5), 3, [1, 3, 40, 40]),
        (conv_filters([1, 1], Padding2d::default(), 7), 33, [3, 33, 12, 12]),
        // From 64 channels on: the 8 x 48 tile (16 filters), the 12 x 32 one (12 filters, or a 7x7
        // image), never the 4 x 96 one.
        (
            conv_filters([3, 1], Padding2d::symmetric(1, 0), 16),
            64,
            [1, 64, 20, 30],
        ),
        (
            conv_filters([3, 1], Padding2d::symmetric(1, 0), 12),
            64,
            [1, 64, 20, 30],
        ),
        (conv_filters([3, 3], Padding2d::symmetric(1, 1), 24), 64, [1, 64, 7, 7]),
        (conv_filters([3, 3], Padding2d::symmetric(1, 1), 12), 8, [2, 8, 7, 7]),
        // Read in place (stride 1, no horizontal padding): tiles inside the image, tiles at the
        // top and bottom borders (asymmetric, and deeper than one tile), and positions past the
        // row end that read the next row and are dropped (valid horizontal taps).
        (
            conv_filters([3, 1], Padding2d::symmetric(1, 0), 16),
            20,
            [1, 20, 40, 24],
        ),
        (
            conv_filters(
                [5, 1],
                Padding2d {
                    top: 0,
                    bottom: 4,
                    left: 0,
                    right: 0,
                },
                8,
            ),
            6,
            [2, 6, 33, 19],
        ),
        (conv_filters([1, 3], Padding2d::default(), 8), 5, [1, 5, 20, 21]),
        (conv_filters([3, 3], Padding2d::symmetric(1, 0), 12), 4, [1, 4, 25, 30]),
        // A reduction short enough for the micro-kernel to take blocks in bands, on an image large
        // enough for several bands (the last one partial) and 3 filter tiles, the last partial.
        (conv_filters([1, 3], Padding2d::symmetric(0, 1), 9), 5, [1, 5, 224, 224]),
    ];
    for (i, (attrs, channels, shape)) in cases.into_iter().enumerate() {
        let model = conv_model(attrs.clone(), channels, i % 2 == 0, 40 + i as u64, true);
        let x = random(shape.iter().product(), 200 + i as u64);
        agrees_on_every_path(&model, &shape, &x, &format!("{attrs:?} {shape:?}"));
    }
}

/// Strided convolutions on every path, the micro-kernel reading them through phase planes: a
/// ResNet stem (7x7, stride 2, 3 channels), its decomposed halves (stride (2, 1) and (1, 2)), a 3x3
/// stride-2 transition with 64 channels (the 8-filter tile), a 1x1 stride-2 shortcut, stride 3 with
/// dilation, and odd sizes so that phases differ in length.
#[test]
fn strided_convolutions_match_the_reference_on_every_path() {
    let strided = |kernel, stride, dilate, pad: Padding2d, filters| ConvAttrs {
        num_filter: filters,
        ..conv(kernel, stride, dilate, pad, 1)
    };
    let cases = [
        (
            strided([7, 7], [2, 2], [1, 1], Padding2d::symmetric(3, 3), 8),
            3,
            [1, 3, 45, 39],
        ),
        (
            strided([7, 1], [2, 1], [1, 1], Padding2d::symmetric(3, 0), 5),
            3,
            [2, 3, 33, 20],
        ),
        (
            strided([1, 7], [1, 2], [1, 1], Padding2d::symmetric(0, 3), 9),
            5,
            [1, 5, 17, 41],
        ),
        (
            strided([3, 3], [2, 2], [1, 1], Padding2d::symmetric(1, 1), 16),
            64,
            [1, 64, 23, 21],
        ),
        (
            strided([1, 1], [2, 2], [1, 1], Padding2d::default(), 12),
            16,
            [2, 16, 15, 15],
        ),
        (
            strided([3, 3], [3, 2], [2, 1], Padding2d::symmetric(2, 1), 7),
            4,
            [1, 4, 26, 19],
        ),
    ];
    for (i, (attrs, channels, shape)) in cases.into_iter().enumerate() {
        let model = single_conv(attrs.clone(), channels, i % 2 == 0, 500 + i as u64);
        let x = random(shape.iter().product(), 600 + i as u64);
        agrees_on_every_path(&model, &shape, &x, &format!("{attrs:?} {shape:?}"));
    }
}

/// Fully-connected layers at the batch sizes of both paths (streamed rows up to 16, in passes of up
/// to 8 inputs, GEMM above), with and without bias, input lengths that are and are not multiples of
/// the vector width, and longer than one column block.
#[test]
fn dense_layers_match_the_reference_at_every_batch_size() {
    for (i, (inputs, outputs, bias)) in [(300, 37, true), (64, 10, false), (1029, 130, true)]
        .into_iter()
        .enumerate()
    {
        let seed = 300 + i as u64;
        let mut b = ModelBuilder::new();
        let x = b.input("data");
        let w = Weights::new(vec![outputs, inputs], random(outputs * inputs, seed)).unwrap();
        let bias = bias.then(|| Weights::new(vec![outputs], random(outputs, seed + 1)).unwrap());
        let fc = b.dense("fc", x, w, bias, true);
        let model = b.build(&[fc]).unwrap();
        for batch in [1, 3, 4, 5, 9, 16, 17] {
            let shape = [batch, inputs, 1, 1];
            let x = random(batch * inputs, seed + 10 + batch as u64);
            let want = reference(&model, &shape, &x);
            let what = format!("{inputs}->{outputs}, batch {batch}");
            assert_every_path(&model, &shape, &x, &want, &[1, 2], 1e-5, &what);
        }
    }
}

/// The engine with each of `threads` workers, on every path (see [`every_path`]), within
/// `tolerance` (relative) of `want`.
fn assert_every_path(
    model: &Model,
    shape: &[usize],
    x: &[f32],
    want: &[f64],
    threads: &[usize],
    tolerance: f64,
    what: &str,
) {
    for &threads in threads {
        for (path, options) in every_path(threads) {
            let err = relative_error(&run_with(model, shape, x, options), want);
            assert!(
                err < tolerance,
                "{what}, threads {threads}, {path}: relative error {err}"
            );
        }
    }
}

/// The engine with 1 and 2 threads, on every path, within 1e-5 (relative) of the reference
/// interpreter.
fn agrees_on_every_path(model: &Model, shape: &[usize], x: &[f32], what: &str) {
    assert_every_path(model, shape, x, &reference(model, shape, x), &[1, 2], 1e-5, what);
}

/// Every operator's sample (`accnn_graph::ops::samples`: one per operator, elementwise function and
/// pooling convention) on every path, against the reference: an operator added to the IR is
/// checked here as soon as it has a sample.
#[test]
fn every_operator_matches_the_reference_on_every_path() {
    let samples = accnn_graph::ops::samples();
    assert!(samples.len() > 20);
    for (i, sample) in samples.iter().enumerate() {
        let x = random(sample.input_shape.iter().product(), 900 + i as u64);
        agrees_on_every_path(&sample.model, &sample.input_shape, &x, &sample.name);
    }
}

fn conv_filters(kernel: [usize; 2], pad: Padding2d, filters: usize) -> ConvAttrs {
    ConvAttrs {
        num_filter: filters,
        ..conv(kernel, [1, 1], [1, 1], pad, 1)
    }
}

fn conv(kernel: [usize; 2], stride: [usize; 2], dilate: [usize; 2], pad: Padding2d, groups: usize) -> ConvAttrs {
    ConvAttrs {
        kernel,
        stride,
        dilate,
        pad,
        num_filter: 6,
        num_group: groups,
        no_bias: false,
    }
}

fn single_conv(attrs: ConvAttrs, channels: usize, bias: bool, seed: u64) -> Model {
    conv_model(attrs, channels, bias, seed, false)
}

/// One convolution with random weights, followed by a ReLU when `relu`.
fn conv_model(attrs: ConvAttrs, channels: usize, bias: bool, seed: u64, relu: bool) -> Model {
    let [kh, kw] = attrs.kernel;
    let wshape = vec![attrs.num_filter, channels / attrs.num_group, kh, kw];
    let n: usize = wshape.iter().product();
    let w = Weights::new(wshape, random(n, seed)).unwrap();
    let bias = bias.then(|| Weights::new(vec![attrs.num_filter], random(attrs.num_filter, seed + 50)).unwrap());
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let mut out = b.conv("c", x, attrs, w, bias);
    if relu {
        out = b.activation("relu", out, Activation::Relu);
    }
    b.build(&[out]).unwrap()
}

#[test]
fn onnx_graphs_match_the_reference() {
    use accnn_graph::onnx::{decode_onnx, zoo};
    // LeakyRelu, Clip (attribute and input forms), Mul by a constant, BatchNorm, residual adds,
    // asymmetric and dilated convolution padding, average pooling without padded cells, concat,
    // reshape, MatMul + Add, softmax.
    for opset in [9, 13, 21] {
        for (name, bytes, shape) in [
            ("vgg_chain", zoo::vgg_chain(1, opset), vec![2, 3, 16, 16]),
            ("residual_block", zoo::residual_block(2, opset), vec![2, 8, 12, 12]),
            ("concat_branch", zoo::concat_branch(3, opset), vec![2, 4, 10, 10]),
        ] {
            let model = decode_onnx(&bytes, std::path::Path::new("m.onnx"), None)
                .expect("reads")
                .model;
            let n: usize = shape.iter().product();
            let x = random(n, 5);
            let want = reference(&model, &shape, &x);
            assert_every_path(&model, &shape, &x, &want, &[2], 1e-5, &format!("{name} opset {opset}"));
        }
    }
}

/// Residual blocks whose `Add` (and the ReLU after it) the convolution kernels absorb: stride 1 (the
/// micro-kernel or the shifted GEMMs) and stride 2 (its phase planes, or im2col), with and without
/// a bias, at batch 1 and 3; a shortcut that only broadcasts to the sum (a pooled `(N, C, 1, 1)`
/// value) and a sum the convolution's output broadcasts into (a 1x1 output plus a map) take
/// their fallbacks. Every path against the reference.
#[test]
fn fused_residual_sums_match_the_reference_on_every_path() {
    let add = Op::Binary {
        op: accnn_graph::ir::BinaryOp::Add,
        broadcast: true,
    };
    let weights =
        |f: usize, c: usize, k: usize, seed: u64| Weights::new(vec![f, c, k, k], random(f * c * k * k, seed)).unwrap();
    for (stride, bias) in [(1, true), (1, false), (2, true), (2, false)] {
        let mut b = ModelBuilder::new();
        let x = b.input("data");
        let pad1 = Padding2d::symmetric(1, 1);
        // The shortcut: a strided 1x1 projection of the input, computed first.
        let proj = ConvAttrs {
            num_filter: 6,
            ..conv([1, 1], [stride, stride], [1, 1], Padding2d::symmetric(0, 0), 1)
        };
        let w0 = weights(6, 5, 1, 10);
        let shortcut = b.conv("proj", x, proj, w0, None);
        let body = ConvAttrs {
            no_bias: !bias,
            ..conv([3, 3], [stride, stride], [1, 1], pad1, 1)
        };
        let w1 = weights(6, 5, 3, 11);
        let bias1 = bias.then(|| Weights::new(vec![6], random(6, 12)).unwrap());
        let c1 = b.conv("c1", x, body, w1, bias1);
        let sum = b.node("sum", add.clone(), &[shortcut, c1]);
        let out = b.activation("out", sum, Activation::Relu);
        // A second block on the first's output, ReLU-less, the sum's operands the other way round.
        let w2 = weights(6, 6, 3, 13);
        let c2 = b.conv("c2", out, conv([3, 3], [1, 1], [1, 1], pad1, 1), w2, None);
        let sum2 = b.node("sum2", add.clone(), &[c2, out]);
        let model = b.build(&[sum2]).unwrap();
        for n in [1, 3] {
            let shape = [n, 5, 9, 11];
            let x = random(shape.iter().product(), 20 + n as u64);
            agrees_on_every_path(&model, &shape, &x, &format!("stride {stride}, bias {bias}, batch {n}"));
        }
    }
    // Broadcasting shortcuts.
    let global = |kind| {
        Op::Pooling(PoolAttrs {
            global: true,
            ..PoolAttrs::new(kind, [1, 1], [1, 1])
        })
    };
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let pooled = b.node("pooled", global(PoolKind::Avg), &[x]);
    let w = Weights::new(vec![5, 5, 3, 3], random(225, 30)).unwrap();
    let c = b.conv("c", x, conv_filters([3, 3], Padding2d::symmetric(1, 1), 5), w, None);
    let sum = b.node("sum", add.clone(), &[pooled, c]);
    let out = b.activation("out", sum, Activation::Relu);
    // A 1x1 output (a global pooling convolved) plus a map: the output broadcasts.
    let pooled2 = b.node("pooled2", global(PoolKind::Max), &[out]);
    let w = Weights::new(vec![5, 5, 1, 1], random(25, 31)).unwrap();
    let small = b.conv(
        "small",
        pooled2,
        conv_filters([1, 1], Padding2d::symmetric(0, 0), 5),
        w,
        None,
    );
    let sum2 = b.node("sum2", add, &[out, small]);
    let out2 = b.activation("out2", sum2, Activation::Relu);
    let model = b.build(&[out2]).unwrap();
    for n in [1, 2] {
        let shape = [n, 5, 7, 6];
        let x = random(shape.iter().product(), 40 + n as u64);
        agrees_on_every_path(&model, &shape, &x, &format!("broadcast shortcuts, batch {n}"));
    }
}
