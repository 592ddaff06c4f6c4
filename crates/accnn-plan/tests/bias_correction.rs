//! Data-free bias correction and the moment propagation it rests on, checked with the independent
//! f64 reference interpreter.

use accnn_graph::ir::{Activation, BatchNormAttrs, BinaryOp, ConvAttrs, PoolAttrs, PoolKind};
use accnn_graph::moments::{ChannelMoments, propagate};
use accnn_graph::shape::infer_shapes;
use accnn_graph::{Entry, Model, ModelBuilder, Op, Tensor};
use accnn_plan::{Analysis, BiasCorrection, Scope, apply_plan, factorise_all, full_rank_plan, plan_for_ratio};
use accnn_reference::{Array, evaluate};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn random(rng: &mut rand::rngs::StdRng, shape: Vec<usize>, scale: f32) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let z: f32 = StandardNormal.sample(&mut *rng);
            scale * z
        })
        .collect::<Vec<f32>>();
    Tensor::new(shape, data).unwrap()
}

/// An unpadded 3x3 convolution with bias.
fn conv(b: &mut ModelBuilder, rng: &mut rand::rngs::StdRng, name: &str, x: Entry, cin: usize, cout: usize) -> Entry {
    let attrs = ConvAttrs {
        pad: Default::default(),
        ..ConvAttrs::same([3, 3], cout)
    };
    let (w, bias) = (random(rng, vec![cout, cin, 3, 3], 0.3), random(rng, vec![cout], 0.5));
    b.conv(name, x, attrs, w, Some(bias))
}

/// A constant image: channel `c` holds `values[c]` everywhere.
fn constant_image(values: &[f64], h: usize, w: usize) -> Array {
    let data = values.iter().flat_map(|&v| std::iter::repeat_n(v, h * w)).collect();
    Array::new(vec![1, values.len(), h, w], data)
}

/// Each channel's values of a `(1, C, ...)` or `(1, F)` array, one list per channel.
fn per_channel(a: &Array) -> Vec<Vec<f64>> {
    let channels = a.shape[1];
    let inner = a.data.len() / channels;
    a.data.chunks(inner).map(<[f64]>::to_vec).collect()
}

/// With a deterministic (variance 0) input the moment rules are exact, unpadded windows see one
/// value, and every propagated mean must be what the network computes on the constant image.
#[test]
fn propagated_means_of_a_constant_image_are_its_values() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let c1 = conv(&mut b, &mut rng, "c1", x, 3, 6);
    let bn_params: Vec<Entry> = ["gamma", "beta"]
        .iter()
        .map(|n| {
            let t = random(&mut rng, vec![6], 0.5);
            b.weight(&format!("bn_{n}"), t)
        })
        .collect();
    let bn_stats: Vec<Entry> = ["mean", "var"]
        .iter()
        .map(|n| {
            let t = random(&mut rng, vec![6], 0.5);
            let t = if *n == "var" {
                Tensor::new(vec![6], t.data().iter().map(|v| v.abs() + 0.1).collect()).unwrap()
            } else {
                t
            };
            b.aux(&format!("bn_{n}"), t)
        })
        .collect();
    let bn_attrs = BatchNormAttrs {
        eps: 1e-5,
        fix_gamma: false,
        axis: 1,
    };
    let bn = b.node(
        "bn",
        Op::BatchNorm(bn_attrs),
        &[c1, bn_params[0], bn_params[1], bn_stats[0], bn_stats[1]],
    );
    let r1 = b.activation("r1", bn, Activation::Relu);
    let pool = b.node(
        "pool",
        Op::Pooling(PoolAttrs::new(PoolKind::Max, [2, 2], [2, 2])),
        &[r1],
    );
    let c2 = conv(&mut b, &mut rng, "c2", pool, 6, 6);
    let c3 = conv(&mut b, &mut rng, "c3", pool, 6, 6);
    let add = b.node(
        "add",
        Op::Binary {
            op: BinaryOp::Add,
            broadcast: false,
        },
        &[c2, c3],
    );
    // A BatchNorm written as Mul and Add of stored per-channel values (Caffe2's exports).
    let scale = random(&mut rng, vec![1, 6, 1, 1], 1.0);
    let scale = b.weight("scale", scale);
    let shift = random(&mut rng, vec![6, 1, 1], 1.0);
    let shift = b.weight("shift", shift);
    let binary = |op| Op::Binary { op, broadcast: true };
    let scaled = b.node("scaled", binary(BinaryOp::Mul), &[scale, add]);
    let shifted = b.node("shifted", binary(BinaryOp::Sub), &[scaled, shift]);
    // Hard-swish written out, as PaddleOCR's exports have it: x * Clip(x + 3, 0, 6) / 6.
    let three = b.weight("three", Tensor::new(vec![1], vec![3.0]).unwrap());
    let six = b.weight("six", Tensor::new(vec![1], vec![6.0]).unwrap());
    let plus3 = b.node("plus3", binary(BinaryOp::Add), &[shifted, three]);
    let clip = b.activation("clip", plus3, Activation::Clip { min: 0.0, max: 6.0 });
    let product = b.node("product", binary(BinaryOp::Mul), &[shifted, clip]);
    let hswish = b.node("hswish", binary(BinaryOp::Div), &[product, six]);
    // A squeeze-excitation gate: global pooling, a 1x1 convolution, a hard sigmoid, a product.
    let global = PoolAttrs {
        global: true,
        ..PoolAttrs::new(PoolKind::Avg, [1, 1], [1, 1])
    };
    let squeezed = b.node("squeezed", Op::Pooling(global), &[hswish]);
    let gate_w = random(&mut rng, vec![6, 6, 1, 1], 0.3);
    let gate_conv = b.conv(
        "gate_conv",
        squeezed,
        ConvAttrs::same([1, 1], 6),
        gate_w,
        Some(random(&mut rng, vec![6], 0.5)),
    );
    let gate = b.activation("gate", gate_conv, Activation::HardSigmoid { alpha: 0.2, beta: 0.5 });
    // The gate's product with the features (two different tensors) ends the estimate.
    let excited = b.node("excited", binary(BinaryOp::Mul), &[hswish, gate]);
    let cat = b.node("cat", Op::Concat { axis: 1 }, &[hswish, c3]);
    let r2 = b.activation("r2", cat, Activation::Relu);
    let flat = b.node("flat", Op::Flatten { axis: 1 }, &[r2]);
    let fc_w = random(&mut rng, vec![5, 12 * 2 * 2], 0.2);
    let fc = b.dense("fc", flat, fc_w, Some(random(&mut rng, vec![5], 0.5)), true);
    let heads = [c1, bn, pool, add, scaled, shifted, hswish, gate, cat, fc];
    let model = b.build(&[&heads[..], &[excited]].concat()).unwrap();

    let input = [0.7, -0.4, 1.3];
    let shape = [1, 3, 10, 10];
    let shapes = infer_shapes(&model, &shape).unwrap();
    let moments = propagate(
        &model,
        &shapes,
        &ChannelMoments {
            mean: input.to_vec(),
            variance: vec![0.0; 3],
        },
    );
    assert!(moments[excited.node].is_none(), "a product of two tensors has no rule");
    let outputs = evaluate(&model, &constant_image(&input, 10, 10)).unwrap();
    for (head, out) in heads.iter().zip(&outputs) {
        let m = moments[head.node]
            .as_ref()
            .expect("every operator here has a moment rule");
        let values = per_channel(out);
        assert_eq!(m.channels(), values.len(), "channels of node {}", head.node);
        for (c, v) in values.iter().enumerate() {
            for &x in v {
                assert!(
                    (x - m.mean[c]).abs() < 1e-4 * (1.0 + x.abs()),
                    "node {} channel {c}: computed {x}, propagated {}",
                    head.node,
                    m.mean[c]
                );
            }
            assert!(m.variance[c].abs() < 1e-9, "a constant input has no variance");
        }
    }
}

/// A convolution after a ReLU of the normalised input: its estimated input level is the mean of
/// a rectified standard normal, 1/sqrt(2 pi). Fed exactly that constant, the corrected pair must
/// compute what the original does (unpadded: every tap inside the image), where the uncorrected
/// one does not; a layer without a bias gets one.
#[test]
fn a_corrected_pair_keeps_the_response_to_its_input_level() {
    for with_bias in [true, false] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut b = ModelBuilder::new();
        let x = b.input("data");
        let r = b.activation("r", x, Activation::Relu);
        let attrs = ConvAttrs {
            pad: Default::default(),
            no_bias: !with_bias,
            ..ConvAttrs::same([3, 3], 16)
        };
        let w = random(&mut rng, vec![16, 8, 3, 3], 0.3);
        let bias = with_bias.then(|| random(&mut rng, vec![16], 0.5));
        let c = b.conv("c", r, attrs, w, bias);
        let model = b.build(&[c]).unwrap();
        let shape = [1, 8, 9, 9];
        let analysis = Analysis::new(&model, &shape).unwrap();
        let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
        let plan = plan_for_ratio(&analysis, &svds, 4.0, Scope::All).unwrap();
        assert_eq!(plan.layers.len(), 1, "the layer is decomposed");
        let correction = BiasCorrection::estimate(&model, &analysis);
        let level = correction.level(analysis.layers[0].id).unwrap();
        let rectified_mean = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
        assert!((level - rectified_mean).abs() < 1e-6, "level {level}");

        let (corrected, report) = apply_plan(model.clone(), &analysis, &svds, &plan, Some(&correction)).unwrap();
        assert_eq!(report.bias_corrected, Some(1));
        assert!(corrected.args.contains_key("c_h_bias"), "bias {with_bias}");
        let (plain, _) = apply_plan(model.clone(), &analysis, &svds, &plan, None).unwrap();
        assert_eq!(plain.args.contains_key("c_h_bias"), with_bias);
        let image = constant_image(&[level; 8], 9, 9);
        let want = &evaluate(&model, &image).unwrap()[0];
        let error = |m: &Model| {
            let got = &evaluate(m, &image).unwrap()[0];
            let diff: f64 = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).powi(2)).sum();
            let norm: f64 = want.data.iter().map(|v| v * v).sum();
            (diff / norm).sqrt()
        };
        assert!(error(&corrected) < 1e-5, "corrected: {}", error(&corrected));
        assert!(
            error(&plain) > 1e-2,
            "the uncorrected pair loses the level's response: {}",
            error(&plain)
        );
    }
}

/// At full rank nothing is lost, so nothing is added: the corrected full-rank model still
/// reproduces the original on a random image.
#[test]
fn full_rank_pairs_need_no_correction() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let r = b.activation("r", x, Activation::Relu);
    let attrs = ConvAttrs::same([3, 3], 6);
    let c = b.conv(
        "c",
        r,
        attrs,
        random(&mut rng, vec![6, 4, 3, 3], 0.3),
        Some(random(&mut rng, vec![6], 0.5)),
    );
    let model = b.build(&[c]).unwrap();
    let shape = [1, 4, 7, 7];
    let analysis = Analysis::new(&model, &shape).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    let correction = BiasCorrection::estimate(&model, &analysis);
    let (fast, _) = apply_plan(
        model.clone(),
        &analysis,
        &svds,
        &full_rank_plan(&analysis),
        Some(&correction),
    )
    .unwrap();
    let image = Array::new(
        shape.to_vec(),
        random(&mut rng, shape.to_vec(), 1.0)
            .data()
            .iter()
            .map(|&v| v as f64)
            .collect(),
    );
    let (want, got) = (
        &evaluate(&model, &image).unwrap()[0],
        &evaluate(&fast, &image).unwrap()[0],
    );
    for (a, b) in want.data.iter().zip(&got.data) {
        assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

/// On the main path the pair gets back the response energy to smooth inputs that it lost: fed one
/// channel raised by 1 above the level (every tap inside the image), the corrected pair's
/// responses, summed in square over the channels, equal the original's, where the bias-only pair's
/// fall short. Inside a residual block the same layer keeps its truncated gain.
#[test]
fn main_path_layers_get_their_gain_back_and_branches_do_not() {
    for residual in [false, true] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut b = ModelBuilder::new();
        let x = b.input("data");
        let r = b.activation("r", x, Activation::Relu);
        let c = conv(&mut b, &mut rng, "c", r, 8, 8);
        let out = if residual {
            // An unpadded 3x3 shrinks the map by 2: the skip shrinks with it through an
            // unpadded 3x3 max pooling.
            let pool = PoolAttrs::new(PoolKind::Max, [3, 3], [1, 1]);
            let skip = b.node("skip", Op::Pooling(pool), &[r]);
            b.node(
                "sum",
                Op::Binary {
                    op: BinaryOp::Add,
                    broadcast: false,
                },
                &[c, skip],
            )
        } else {
            c
        };
        let model = b.build(&[out]).unwrap();
        let shape = [1, 8, 9, 9];
        let analysis = Analysis::new(&model, &shape).unwrap();
        let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
        let plan = plan_for_ratio(&analysis, &svds, 4.0, Scope::All).unwrap();
        let correction = BiasCorrection::estimate(&model, &analysis);
        let level = correction.level(analysis.layers[0].id).unwrap();
        let (corrected, report) = apply_plan(model.clone(), &analysis, &svds, &plan, Some(&correction)).unwrap();
        assert_eq!(
            report.gain_restored,
            Some(usize::from(!residual)),
            "residual {residual}"
        );
        assert_eq!(report.bias_corrected, Some(1));
        // The layer's response alone: evaluate the convolution's output, before the sum.
        let conv_output = |m: &Model, image: &Array| -> Vec<f64> {
            let mut m = m.clone();
            let head = m.graph.find("c").or_else(|| m.graph.find("c_h")).unwrap();
            m.graph.heads = vec![Entry { node: head, output: 0 }];
            evaluate(&m, image).unwrap()[0].data.clone()
        };
        let energy = |m: &Model| -> f64 {
            let base = conv_output(m, &constant_image(&[level; 8], 9, 9));
            (0..8)
                .map(|ch| {
                    let mut values = [level; 8];
                    values[ch] += 1.0;
                    let y = conv_output(m, &constant_image(&values, 9, 9));
                    y.iter().zip(&base).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
                })
                .sum()
        };
        let (want, got) = (energy(&model), energy(&corrected));
        let bias_only = correction.clone().without_gain();
        let (bias_only, _) = apply_plan(model.clone(), &analysis, &svds, &plan, Some(&bias_only)).unwrap();
        let truncated = energy(&bias_only);
        assert!(
            truncated < 0.9 * want,
            "the truncated pair responds weaker: {truncated} vs {want}"
        );
        if residual {
            assert!(
                (got - truncated).abs() < 1e-6 * want,
                "branch layer scaled: {got} vs {truncated}"
            );
        } else {
            assert!((got - want).abs() < 1e-4 * want, "gain not restored: {got} vs {want}");
        }
    }
}
