//! The small model the tests train: every layer type a decomposed network has.

use accnn_graph::ir::{
    Activation, BatchNormAttrs, BinaryOp, ConvAttrs, Padding2d, PoolAttrs, PoolConvention, PoolKind,
};
use accnn_graph::{Model, ModelBuilder, Op, Tensor as Weights};
use accnn_infer::data::synthetic::standard_normal;

pub fn weights(shape: &[usize], seed: u64, scale: f32) -> Weights {
    let n = shape.iter().product();
    Weights::new(
        shape.to_vec(),
        standard_normal(n, seed).into_iter().map(|v| v * scale).collect(),
    )
    .unwrap()
}

fn conv(kernel: [usize; 2], stride: [usize; 2], pad: Padding2d, filters: usize, groups: usize) -> ConvAttrs {
    ConvAttrs {
        kernel,
        stride,
        dilate: [1, 1],
        pad,
        num_filter: filters,
        num_group: groups,
        no_bias: false,
    }
}

/// Input `(N, 3, 9, 9)`; every operator the student differentiates in a decomposed CNN: strided and
/// padded 3x3, a `(3, 1)` / `(1, 3)` pair with one-sided strides and padding, 1x1 without bias,
/// grouped, pooling that tiles and that does not, a residual sum, a concatenation, a frozen
/// BatchNorm, global pooling, a fully-connected pair and a softmax head.
pub fn every_layer_model() -> Model {
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let pad1 = Padding2d::symmetric(1, 1);
    let c1 = b.conv(
        "c1",
        x,
        conv([3, 3], [2, 2], pad1, 6, 1),
        weights(&[6, 3, 3, 3], 1, 0.3),
        Some(weights(&[6], 2, 0.1)),
    );
    let r1 = b.activation("r1", c1, Activation::Relu);
    // (5x5) → vertical half at stride (2, 1) → horizontal half padded on the left only.
    let v_pad = Padding2d {
        top: 1,
        bottom: 1,
        left: 0,
        right: 0,
    };
    let v = b.conv(
        "c2_v",
        r1,
        conv([3, 1], [2, 1], v_pad, 3, 1),
        weights(&[3, 6, 3, 1], 3, 0.3),
        None,
    );
    let h = b.conv(
        "c2_h",
        v,
        conv(
            [1, 3],
            [1, 1],
            Padding2d {
                top: 0,
                bottom: 0,
                left: 2,
                right: 0,
            },
            6,
            1,
        ),
        weights(&[6, 3, 1, 3], 4, 0.3),
        Some(weights(&[6], 5, 0.1)),
    );
    let t = b.activation("t2", h, Activation::Tanh);
    // A residual branch: 1x1 without bias, then a grouped 3x3, added to the pair's output.
    let mut one = conv([1, 1], [2, 1], Padding2d::default(), 6, 1);
    one.no_bias = true;
    let s = b.conv("skip", r1, one, weights(&[6, 6, 1, 1], 6, 0.3), None);
    let g = b.conv(
        "grouped",
        s,
        conv([3, 3], [1, 1], pad1, 6, 2),
        weights(&[6, 3, 3, 3], 7, 0.3),
        Some(weights(&[6], 8, 0.1)),
    );
    let sum = b.node(
        "sum",
        Op::Binary {
            op: BinaryOp::Add,
            broadcast: false,
        },
        &[t, g],
    );
    let cat = b.node("cat", Op::Concat { axis: 1 }, &[sum, s]);
    // Frozen BatchNorm: gamma, beta, mean, variance.
    let gamma = b.weight("bn_gamma", weights(&[12], 9, 0.2));
    let beta = b.weight("bn_beta", weights(&[12], 10, 0.1));
    let mean = b.aux("bn_mean", weights(&[12], 11, 0.1));
    let var = b.aux("bn_var", Weights::new(vec![12], vec![1.5; 12]).unwrap());
    let bn = b.node(
        "bn",
        Op::BatchNorm(BatchNormAttrs {
            eps: 1e-5,
            fix_gamma: false,
            axis: 1,
        }),
        &[cat, gamma, beta, mean, var],
    );
    // Leaky, so that no pooling window holds tied zeros (a kink right at the point checked).
    let r2 = b.activation("r2", bn, Activation::LeakyRelu { slope: 0.1 });
    // 1x2 max pooling that does not tile the 3x5 map, then 3x3 max pooling at stride 2 with
    // padding (overlapping windows; nothing max-pools its output again, which would tie).
    // Overlapping, padded average pooling that leaves padding out of its divisor (same size; after
    // the max pooling, which would otherwise meet near-ties in the smoothed values).
    let avg = PoolAttrs {
        pad: pad1,
        count_include_pad: false,
        ..PoolAttrs::new(PoolKind::Avg, [3, 3], [1, 1])
    };
    let p2 = b.node("p2", Op::Pooling(PoolAttrs::new(PoolKind::Max, [1, 2], [1, 2])), &[r2]);
    let pool = PoolAttrs {
        pad: pad1,
        convention: PoolConvention::Valid,
        ..PoolAttrs::new(PoolKind::Max, [3, 3], [2, 2])
    };
    let tiles = b.node("p1", Op::Pooling(pool), &[p2]);
    let ap = b.node("ap", Op::Pooling(avg), &[tiles]);
    let global = PoolAttrs {
        global: true,
        ..PoolAttrs::new(PoolKind::Avg, [1, 1], [1, 1])
    };
    let gp = b.node("gap", Op::Pooling(global), &[ap]);
    let flat = b.node("flat", Op::Flatten { axis: 1 }, &[gp]);
    let red = b.dense("fc_red", flat, weights(&[4, 12], 12, 1.0), None, true);
    let rec = b.dense(
        "fc_rec",
        red,
        weights(&[5, 4], 13, 2.0),
        Some(weights(&[5], 14, 0.1)),
        true,
    );
    let soft = b.node("prob", Op::Softmax { axis: 1 }, &[rec]);
    b.build(&[soft]).unwrap()
}

/// The same network with its `(3, 1)`/`(1, 3)` pair called `c2x_v`/`c2x_h` and its weights moved
/// by `noise`: a "decomposed" student of [`every_layer_model`] as a teacher.
#[allow(dead_code)] // not every test binary uses it
pub fn student_of_every_layer_model(noise: f32) -> Model {
    let mut m = every_layer_model();
    for (old, new) in [("c2_v", "c2x_v"), ("c2_h", "c2x_h")] {
        for node in &mut m.graph.nodes {
            if let Some(rest) = node.name.strip_prefix(old) {
                let renamed = format!("{new}{rest}");
                if let Some(t) = m.args.remove(&node.name) {
                    let moved: Vec<f32> = t
                        .data()
                        .iter()
                        .zip(standard_normal(t.len(), 99))
                        .map(|(v, n)| v + noise * n)
                        .collect();
                    m.args
                        .insert(renamed.clone(), Weights::new(t.shape().to_vec(), moved).unwrap());
                }
                node.name = renamed;
            }
        }
    }
    m
}
