//! One small model per operator (and per elementwise function, pooling kind and convention): the
//! conformance set every evaluator of the IR is checked on. [`samples`] covers every [`Op`] variant
//! but `Variable` and `Opaque` (a test fails otherwise), so an operator added to the IR is checked
//! by the engine-vs-reference suite as soon as it has a sample here.

use crate::builder::ModelBuilder;
use crate::ir::{Activation, BatchNormAttrs, BinaryOp, ConvAttrs, Entry, Model, Op, Padding2d};
use crate::ops::pool::{PoolAttrs, PoolConvention, PoolKind};
use crate::tensor::Tensor;

/// A model whose output is one node applying the operator under test to its data input.
pub struct OpSample {
    /// What is tested, for messages.
    pub name: String,
    pub model: Model,
    /// The data input's shape, batch first.
    pub input_shape: Vec<usize>,
}

/// Deterministic values in about `[-1, 1]`.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + 1) * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
        .collect()
}

fn tensor(shape: Vec<usize>, seed: usize) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, values(n, seed)).expect("values fill the shape")
}

fn sample(name: String, input_shape: Vec<usize>, build: impl FnOnce(&mut ModelBuilder, Entry) -> Entry) -> OpSample {
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let out = build(&mut b, x);
    OpSample {
        name,
        model: b.build(&[out]).expect("samples are valid graphs"),
        input_shape,
    }
}

/// Every operator on a small input.
pub fn samples() -> Vec<OpSample> {
    let mut out = Vec::new();
    let conv = ConvAttrs {
        kernel: [3, 2],
        stride: [2, 1],
        dilate: [1, 2],
        pad: Padding2d {
            top: 1,
            bottom: 0,
            left: 2,
            right: 1,
        },
        num_filter: 6,
        num_group: 2,
        no_bias: false,
    };
    out.push(sample("Convolution".into(), vec![2, 4, 9, 8], |b, x| {
        b.conv("op", x, conv, tensor(vec![6, 2, 3, 2], 1), Some(tensor(vec![6], 2)))
    }));
    out.push(sample("FullyConnected".into(), vec![2, 3, 4, 4], |b, x| {
        b.dense("op", x, tensor(vec![7, 48], 3), Some(tensor(vec![7], 4)), true)
    }));
    out.push(sample("FullyConnected (last axis)".into(), vec![2, 5, 6], |b, x| {
        b.dense("op", x, tensor(vec![3, 6], 5), None, false)
    }));
    for kind in [PoolKind::Max, PoolKind::Avg, PoolKind::Sum] {
        for (convention, include) in [(PoolConvention::Valid, true), (PoolConvention::Ceil, false)] {
            let p = PoolAttrs {
                kind,
                kernel: [3, 2],
                stride: [2, 2],
                pad: Padding2d::symmetric(1, 1),
                global: false,
                convention,
                count_include_pad: include,
            };
            out.push(sample(
                format!("Pooling {kind:?} {convention:?}"),
                vec![2, 3, 9, 8],
                |b, x| b.node("op", Op::Pooling(p), &[x]),
            ));
        }
    }
    let global = PoolAttrs {
        global: true,
        ..PoolAttrs::new(PoolKind::Avg, [1, 1], [1, 1])
    };
    out.push(sample("Pooling global".into(), vec![2, 3, 5, 4], |b, x| {
        b.node("op", Op::Pooling(global), &[x])
    }));
    for a in Activation::examples() {
        // Inputs spread over [-4, 4]: both sides of every kink and saturation; functions of positive
        // inputs get e^x, over [e^-2, e^2].
        out.push(sample(format!("Activation {a:?}"), vec![2, 3, 4, 5], |b, x| {
            let scale = if a.positive_domain() { 1.0 } else { 4.0 };
            let k = b.weight("k", Tensor::new(vec![1], vec![scale]).expect("scalar"));
            let mul = Op::Binary {
                op: BinaryOp::Mul,
                broadcast: true,
            };
            let mut wide = b.node("wide", mul, &[x, k]);
            if a.positive_domain() {
                wide = b.activation("positive", wide, Activation::Exp);
            }
            // Logical not of a mask with zeros in it (of random floats it would be all zeros).
            if a == Activation::Not {
                wide = b.activation("mask", wide, Activation::Relu);
            }
            b.activation("op", wide, a)
        }));
    }
    out.push(sample("BatchNorm".into(), vec![2, 3, 4, 4], |b, x| {
        let gamma = b.weight("gamma", tensor(vec![3], 6));
        let beta = b.weight("beta", tensor(vec![3], 7));
        let mean = b.aux("mean", tensor(vec![3], 8));
        let var = b.aux("var", Tensor::new(vec![3], vec![0.5, 1.0, 2.0]).expect("3 values"));
        let attrs = BatchNormAttrs {
            eps: 1e-3,
            fix_gamma: false,
            axis: 1,
        };
        b.node("op", Op::BatchNorm(attrs), &[x, gamma, beta, mean, var])
    }));
    out.push(sample("Add (equal shapes)".into(), vec![2, 3, 4, 4], |b, x| {
        let add = Op::Binary {
            op: BinaryOp::Add,
            broadcast: false,
        };
        b.node("op", add, &[x, x])
    }));
    for op in BinaryOp::examples() {
        out.push(sample(format!("{op:?} (broadcast)"), vec![2, 3, 4, 4], |b, x| {
            // Divisors away from zero, powers of positive bases.
            let mut c = tensor(vec![3, 1, 4], 9);
            let mut x = x;
            match op {
                BinaryOp::Div => c.data_mut().iter_mut().for_each(|v| *v = 0.5 + v.abs()),
                BinaryOp::Pow => x = b.activation("positive", x, Activation::Exp),
                // Masks with zeros in them, and values equal to the constant where it is 0.
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Equal => {
                    c.data_mut().iter_mut().for_each(|v| *v = v.max(0.0));
                    x = b.activation("mask", x, Activation::Relu);
                }
                _ => {}
            }
            let c = b.weight("c", c);
            let binary = Op::Binary { op, broadcast: true };
            b.node("op", binary, &[x, c])
        }));
    }
    out.push(sample("Where (broadcast)".into(), vec![2, 3, 4, 4], |b, x| {
        let c = b.weight("c", tensor(vec![3, 1, 4], 9));
        let greater = Op::Binary {
            op: BinaryOp::Greater,
            broadcast: true,
        };
        let cond = b.node("cond", greater, &[x, c]);
        let other = b.weight("other", tensor(vec![4], 10));
        b.node("op", Op::Where, &[cond, x, other])
    }));
    for axis in [1, -1] {
        out.push(sample(format!("Concat at {axis}"), vec![2, 3, 4, 4], |b, x| {
            let r = b.activation("r", x, Activation::Relu);
            b.node("op", Op::Concat { axis }, &[x, r])
        }));
    }
    out.push(sample("Softmax".into(), vec![2, 3, 5], |b, x| {
        b.node("op", Op::Softmax { axis: -1 }, &[x])
    }));
    out.push(sample("SoftmaxOutput".into(), vec![2, 10], |b, x| {
        let label = b.input("label");
        b.node("op", Op::SoftmaxOutput, &[x, label])
    }));
    out.push(sample("Reshape".into(), vec![2, 3, 4, 4], |b, x| {
        b.node("op", Op::Reshape { shape: vec![0, -1, 8] }, &[x])
    }));
    for axis in [1, 2, 0, -1] {
        out.push(sample(format!("Flatten at {axis}"), vec![2, 3, 4, 4], |b, x| {
            b.node("op", Op::Flatten { axis }, &[x])
        }));
    }
    out.push(sample("Transpose".into(), vec![2, 3, 4, 5], |b, x| {
        b.node("op", Op::Transpose { perm: vec![0, 3, 1, 2] }, &[x])
    }));
    for size in [5, 2] {
        let lrn = crate::ir::LrnAttrs {
            size,
            alpha: 0.3,
            beta: 0.75,
            bias: 1.5,
        };
        out.push(sample(format!("LRN of size {size}"), vec![2, 6, 3, 3], |b, x| {
            b.node("op", Op::Lrn(lrn), &[x])
        }));
    }
    for (k, op) in crate::ir::ReduceOp::examples().into_iter().enumerate() {
        // Alternate the axes and keep_dims over the operators; positive inputs keep Prod finite.
        let axes = [Some(vec![1]), Some(vec![-1, 2]), None][k % 3].clone();
        // (A full reduction without kept axes is a scalar, whose empty shape reads as unknown.)
        let attrs = crate::ir::ReduceAttrs {
            op,
            keep_dims: k % 2 == 0 || axes.is_none(),
            axes,
        };
        out.push(sample(
            format!("Reduce {op:?} over {:?}", attrs.axes),
            vec![2, 3, 4, 5],
            |b, x| b.node("op", Op::Reduce(attrs), &[x]),
        ));
    }
    out.push(sample(
        "MatMul of two computed tensors".into(),
        vec![2, 3, 4, 5],
        |b, x| {
            // x · xᵀ over the last two axes, broadcast against a batch-1 copy.
            let t = b.node("t", Op::Transpose { perm: vec![0, 1, 3, 2] }, &[x]);
            b.node("op", Op::MatMul, &[x, t])
        },
    ));
    for (starts, ends, axes, steps) in [
        (vec![1, 0], vec![3, -1], Some(vec![1, -1]), None),
        (vec![-1, 4], vec![i64::MIN, 0], Some(vec![2, 3]), Some(vec![-2, -3])),
    ] {
        let attrs = crate::ir::SliceAttrs {
            starts,
            ends,
            axes,
            steps,
        };
        out.push(sample(format!("Slice {attrs:?}"), vec![2, 3, 4, 5], |b, x| {
            b.node("op", Op::Slice(attrs), &[x])
        }));
    }
    out.push(sample("Squeeze and Unsqueeze".into(), vec![2, 1, 4, 1], |b, x| {
        let s = b.node(
            "s",
            Op::Squeeze {
                axes: Some(vec![-1, 1]),
            },
            &[x],
        );
        let u = b.node("u", Op::Unsqueeze { axes: vec![0, -1] }, &[s]);
        b.node("op", Op::Squeeze { axes: None }, &[u])
    }));
    out.push(sample("Unsqueeze".into(), vec![2, 3], |b, x| {
        b.node("op", Op::Unsqueeze { axes: vec![1, -1] }, &[x])
    }));
    let deconv = crate::ir::ConvTransposeAttrs {
        kernel: [3, 2],
        stride: [2, 3],
        dilate: [1, 2],
        pad: Padding2d {
            top: 1,
            bottom: 0,
            left: 0,
            right: 2,
        },
        output_padding: [1, 0],
        num_filter: 6,
        num_group: 2,
        no_bias: false,
    };
    out.push(sample("ConvTranspose".into(), vec![2, 4, 5, 4], |b, x| {
        let w = b.weight("w", tensor(vec![4, 3, 3, 2], 10));
        let bias = b.weight("b", tensor(vec![6], 11));
        b.node("op", Op::ConvTranspose(deconv), &[x, w, bias])
    }));
    for (mode, coordinates, target) in resize_cases() {
        let attrs = crate::ir::ResizeAttrs {
            mode,
            coordinates,
            target,
            antialias: matches!(
                mode,
                crate::ir::ResizeMode::Cubic {
                    exclude_outside: true,
                    ..
                }
            ),
        };
        out.push(sample(format!("Resize {attrs:?}"), vec![2, 3, 4, 5], |b, x| {
            b.node("op", Op::Resize(attrs), &[x])
        }));
    }
    for (kind, scale_shape) in [
        (crate::ir::NormKind::Layer { axis: -2 }, vec![4, 5]),
        (crate::ir::NormKind::Instance, vec![6]),
        (crate::ir::NormKind::Group { groups: 3 }, vec![6]),
    ] {
        let attrs = crate::ir::NormalizationAttrs {
            kind,
            epsilon: 1e-3,
            bias: !matches!(kind, crate::ir::NormKind::Layer { .. }),
        };
        out.push(sample(format!("Normalization {kind:?}"), vec![2, 6, 4, 5], |b, x| {
            let scale = b.weight("scale", tensor(scale_shape.clone(), 12));
            let mut inputs = vec![x, scale];
            if attrs.bias {
                inputs.push(b.weight("bias", tensor(scale_shape, 13)));
            }
            b.node("op", Op::Normalization(attrs), &inputs)
        }));
    }
    out.push(sample("LogSoftmax".into(), vec![2, 3, 5], |b, x| {
        b.node("op", Op::LogSoftmax { axis: 1 }, &[x])
    }));
    use crate::ir::{PadAttrs, PadMode, SpaceDepth};
    for mode in [PadMode::Constant(0.5), PadMode::Reflect, PadMode::Edge, PadMode::Wrap] {
        let attrs = PadAttrs {
            pads: vec![(0, 0), (1, -1), (2, 1), (-1, 3)],
            mode,
        };
        out.push(sample(format!("Pad {mode:?}"), vec![2, 3, 4, 5], |b, x| {
            b.node("op", Op::Pad(attrs), &[x])
        }));
    }
    out.push(sample("Gather".into(), vec![2, 3, 4, 5], |b, x| {
        let op = Op::Gather {
            axis: -2,
            indices: vec![3, -4, 1, 1],
            index_dims: vec![2, 2],
        };
        b.node("op", op, &[x])
    }));
    out.push(sample("Expand".into(), vec![2, 3, 1, 5], |b, x| {
        b.node(
            "op",
            Op::Expand {
                shape: vec![3, 1, 1, 4, 1],
            },
            &[x],
        )
    }));
    out.push(sample("Tile".into(), vec![2, 3, 4, 5], |b, x| {
        b.node(
            "op",
            Op::Tile {
                repeats: vec![1, 2, 1, 3],
            },
            &[x],
        )
    }));
    for s in [
        SpaceDepth::ToSpace {
            block: 2,
            column_row_depth: false,
        },
        SpaceDepth::ToSpace {
            block: 2,
            column_row_depth: true,
        },
        SpaceDepth::ToDepth { block: 2 },
    ] {
        out.push(sample(format!("{s:?}"), vec![2, 8, 4, 6], |b, x| {
            b.node("op", Op::SpaceDepth(s), &[x])
        }));
    }
    out.push(sample("Identity".into(), vec![2, 3, 4, 4], |b, x| {
        b.node("op", Op::Identity, &[x])
    }));
    out.push(sample("Dropout".into(), vec![2, 3, 4, 4], |b, x| {
        b.node("op", Op::Dropout, &[x])
    }));
    out
}

/// Every rounding and coordinate rule, up and down, by scales and by sizes.
fn resize_cases() -> Vec<(
    crate::ir::ResizeMode,
    crate::ir::CoordinateTransform,
    crate::ir::ResizeTarget,
)> {
    use crate::ir::{CoordinateTransform as T, NearestRounding as R, ResizeMode as M, ResizeTarget};
    let up = ResizeTarget::Scales(vec![1.0, 1.0, 2.0, 1.5]);
    let down = ResizeTarget::Sizes(vec![2, 3, 3, 2]);
    vec![
        (M::Nearest(R::Floor), T::Asymmetric, up.clone()),
        (M::Nearest(R::RoundPreferFloor), T::HalfPixel, up.clone()),
        (M::Nearest(R::RoundPreferCeil), T::AlignCorners, down.clone()),
        (M::Nearest(R::Ceil), T::HalfPixelSymmetric, down.clone()),
        (M::Linear, T::HalfPixel, up.clone()),
        (M::Linear, T::PytorchHalfPixel, down.clone()),
        (M::Linear, T::AlignCorners, up.clone()),
        (M::Linear, T::HalfPixelSymmetric, down.clone()),
        (
            M::Cubic {
                a: -0.5,
                exclude_outside: false,
            },
            T::HalfPixel,
            up,
        ),
        // (Antialiased too: see the caller.)
        (
            M::Cubic {
                a: -0.75,
                exclude_outside: true,
            },
            T::Asymmetric,
            down,
        ),
    ]
}

/// Which operator `op` is: an exhaustive match, so that a new variant must be placed here (and
/// then, by the test below, given a sample).
#[cfg(test)]
fn operator_index(op: &Op) -> usize {
    match op {
        Op::Variable => 0,
        Op::Opaque { .. } => 1,
        Op::Convolution(_) => 2,
        Op::FullyConnected(_) => 3,
        Op::Activation(_) => 4,
        Op::Pooling(_) => 5,
        Op::Flatten { .. } => 6,
        Op::Dropout => 7,
        Op::BatchNorm(_) => 8,
        Op::Binary { .. } => 9,
        Op::Concat { .. } => 10,
        Op::Softmax { .. } => 11,
        Op::SoftmaxOutput => 12,
        Op::Reshape { .. } => 13,
        Op::Identity => 14,
        Op::Transpose { .. } => 15,
        Op::Lrn(_) => 16,
        Op::Reduce(_) => 17,
        Op::MatMul => 18,
        Op::Slice(_) => 19,
        Op::Squeeze { .. } => 20,
        Op::Unsqueeze { .. } => 21,
        Op::ConvTranspose(_) => 22,
        Op::Resize(_) => 23,
        Op::Normalization(_) => 24,
        Op::LogSoftmax { .. } => 25,
        Op::Pad(_) => 26,
        Op::Gather { .. } => 27,
        Op::Expand { .. } => 28,
        Op::Tile { .. } => 29,
        Op::SpaceDepth(_) => 30,
        Op::Where => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_has_a_sample_and_its_shapes() {
        let mut covered = std::collections::BTreeSet::new();
        for s in samples() {
            let graph = &s.model.graph;
            let head = graph.heads[0].node;
            covered.insert(operator_index(&graph.nodes[head].op));
            let shapes =
                crate::shape::infer_shapes(&s.model, &s.input_shape).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert!(!shapes.of(head).is_empty(), "{}", s.name);
        }
        // Every operator but Variable (0) and Opaque (1).
        assert_eq!(covered, (2..32).collect(), "operators without a sample");
    }
}
