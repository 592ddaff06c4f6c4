//! ONNX models through the whole pipeline: BatchNorm folding, decomposition of every layer (1x1
//! convolutions by channel SVD), writing ONNX and reading it back.

use std::path::Path;

use accnn_graph::onnx::{OnnxModel, decode_onnx, encode_onnx, zoo};
use accnn_graph::{Model, Op, fold_batch_norms};
use accnn_plan::{Analysis, apply_plan, factorise_all, full_rank_plan, plan_for_ratio};
use accnn_reference::{Array, evaluate};

fn models() -> Vec<(String, Vec<u8>, Vec<usize>)> {
    let mut out = Vec::new();
    for opset in [9, 13, 21] {
        out.push((
            format!("vgg_chain@{opset}"),
            zoo::vgg_chain(1, opset),
            vec![2, 3, 16, 16],
        ));
        out.push((
            format!("residual_block@{opset}"),
            zoo::residual_block(2, opset),
            vec![2, 8, 12, 12],
        ));
        out.push((
            format!("concat_branch@{opset}"),
            zoo::concat_branch(3, opset),
            vec![2, 4, 10, 10],
        ));
    }
    out
}

fn read(bytes: &[u8]) -> OnnxModel {
    decode_onnx(bytes, Path::new("m.onnx"), None).expect("reads")
}

fn input(shape: &[usize]) -> Array {
    let n: usize = shape.iter().product();
    Array::new(
        shape.to_vec(),
        (0..n).map(|i| ((i * 37 % 101) as f64 - 50.0) / 25.0).collect(),
    )
}

fn outputs(model: &Model, x: &Array) -> Vec<f64> {
    evaluate(model, x).expect("evaluates").remove(0).data
}

fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (diff / b.iter().map(|y| y * y).sum::<f64>().max(1e-30)).sqrt()
}

#[test]
fn folding_batch_norm_keeps_outputs_and_removes_every_foldable_one() {
    let bytes = zoo::residual_block(2, 13);
    let model = read(&bytes).model;
    let x = input(&[2, 8, 12, 12]);
    let before = outputs(&model, &x);
    let bns = model
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNorm(_)))
        .count();
    let (folded, report) = fold_batch_norms(model).expect("folds");
    assert_eq!(
        report.len(),
        bns,
        "every BatchNorm follows a convolution read by nothing else"
    );
    assert!(!folded.graph.nodes.iter().any(|n| matches!(n.op, Op::BatchNorm(_))));
    let err = relative_error(&outputs(&folded, &x), &before);
    assert!(err < 1e-6, "relative error {err}");
}

#[test]
fn full_rank_decomposition_reproduces_and_round_trips_through_onnx() {
    for (name, bytes, shape) in models() {
        for fold in [true, false] {
            let OnnxModel { model, source } = read(&bytes);
            let x = input(&shape);
            let original = outputs(&model, &x);
            let model = if fold {
                fold_batch_norms(model).expect("folds").0
            } else {
                model
            };
            let analysis = Analysis::new(&model, &shape).expect("analysis");
            let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).expect("svd");
            let (fast, _) = apply_plan(model, &analysis, &svds, &full_rank_plan(&analysis), None).expect("apply");
            let err = relative_error(&outputs(&fast, &x), &original);
            assert!(err < 1e-5, "{name} fold={fold}: relative error {err}");

            let written = encode_onnx(&source, &fast, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            let again = read(&written.model).model;
            let err = relative_error(&outputs(&again, &x), &outputs(&fast, &x));
            assert!(err < 1e-6, "{name} fold={fold}: re-read model differs by {err}");
            let ops = |m: &Model| -> Vec<String> {
                m.graph
                    .nodes
                    .iter()
                    .filter(|n| !matches!(n.op, Op::Variable))
                    .map(|n| format!("{}:{:?}", n.name, n.op))
                    .collect()
            };
            // A MatMul layer's weight is written transposed, so its variable is renamed; before opset 11
            // Gemm needs a bias, so the first half of a split FC layer gets a zero one.
            if !name.starts_with("vgg_chain") && !name.ends_with("@9") {
                assert_eq!(
                    ops(&again),
                    ops(&fast),
                    "{name} fold={fold}: the written file re-reads to the same IR"
                );
            }
        }
    }
}

#[test]
fn strided_pointwise_shortcut_is_split_by_channel_svd_with_the_stride_first() {
    let model = fold_batch_norms(read(&zoo::residual_block(2, 13)).model)
        .expect("folds")
        .0;
    let analysis = Analysis::new(&model, &[1, 8, 12, 12]).expect("analysis");
    let shortcut = analysis
        .layers
        .iter()
        .find(|l| l.name.contains("downsample"))
        .expect("shortcut layer");
    assert_eq!(shortcut.max_rank, 8, "min(C, N) of the 16x8 channel matrix");
    // K * (C + N) MACs per output pixel, on the 6x6 output grid.
    assert_eq!(shortcut.macs_per_rank, (8 + 16) * 36);
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).expect("svd");
    let (fast, _) = apply_plan(model, &analysis, &svds, &full_rank_plan(&analysis), None).expect("apply");
    let first = fast
        .graph
        .nodes
        .iter()
        .find(|n| n.name == format!("{}_v", shortcut.name))
        .expect("first half");
    let second = fast
        .graph
        .nodes
        .iter()
        .find(|n| n.name == format!("{}_h", shortcut.name))
        .expect("second half");
    let (Op::Convolution(a), Op::Convolution(b)) = (&first.op, &second.op) else {
        panic!("two convolutions")
    };
    assert_eq!(
        (a.kernel, a.stride, b.kernel, b.stride),
        ([1, 1], [2, 2], [1, 1], [1, 1])
    );
}

#[test]
fn ratio_budget_is_met_on_a_dag() {
    let (name, bytes, shape) = models().remove(4); // residual_block@13
    let model = fold_batch_norms(read(&bytes).model).expect("folds").0;
    let analysis = Analysis::new(&model, &shape).expect("analysis");
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).expect("svd");
    for ratio in [1.5, 2.0] {
        let plan = plan_for_ratio(&analysis, &svds, ratio, Default::default()).expect("plan");
        let (_, report) = apply_plan(model.clone(), &analysis, &svds, &plan, None).expect("apply");
        assert!(report.speedup() >= ratio, "{name}: {} < {ratio}", report.speedup());
    }
}
