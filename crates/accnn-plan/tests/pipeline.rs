//! The whole pipeline checked by running models with the independent f64 reference interpreter.

use accnn_graph::ir::{Activation, BinaryOp, ConvAttrs, Padding2d, PoolAttrs, PoolConvention, PoolKind};
use accnn_graph::mxnet::load_checkpoint;
use accnn_graph::{Entry, Model, ModelBuilder, Op, Tensor};
use accnn_plan::{Analysis, Scope, apply_plan, factorise_all, full_rank_plan, plan_for_ratio, plan_from_config};
use accnn_rank::RankConfig;
use accnn_reference::{Array, evaluate};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// A [`ModelBuilder`] drawing standard-normal weights.
struct Net {
    b: ModelBuilder,
    rng: rand::rngs::StdRng,
}

impl Net {
    /// The builder and its data input.
    fn new() -> (Self, Entry) {
        let mut b = ModelBuilder::new();
        let x = b.input("data");
        let net = Net {
            b,
            rng: rand::rngs::StdRng::seed_from_u64(5),
        };
        (net, x)
    }

    fn tensor(&mut self, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect::<Vec<f32>>();
        Tensor::new(shape, data).unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: Entry,
        cin: usize,
        cout: usize,
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 2],
        g: usize,
        bias: bool,
    ) -> Entry {
        let w = self.tensor(vec![cout, cin / g, k[0], k[1]]);
        let b = bias.then(|| self.tensor(vec![cout]));
        let attrs = ConvAttrs {
            kernel: k,
            stride: s,
            dilate: d,
            pad: Padding2d::symmetric(p[0], p[1]),
            num_filter: cout,
            num_group: g,
            no_bias: !bias,
        };
        self.b.conv(name, x, attrs, w, b)
    }

    fn dense(&mut self, name: &str, x: Entry, outputs: usize, inputs: usize, bias: bool) -> Entry {
        let w = self.tensor(vec![outputs, inputs]);
        let b = bias.then(|| self.tensor(vec![outputs]));
        self.b.dense(name, x, w, b, true)
    }
}

/// A small DAG with every convolution feature: strides, dilation, non-square kernels, groups, no
/// bias, a residual add and a concat, pooling and two FC layers.
fn awkward_model() -> Model {
    let (mut n, x) = Net::new();
    let c1 = n.conv("c1", x, 3, 8, [3, 3], [2, 1], [1, 1], [1, 1], 1, true);
    let r1 = n.b.activation("r1", c1, Activation::Relu);
    let c2 = n.conv("c2", r1, 8, 8, [5, 3], [1, 2], [1, 1], [2, 1], 1, false);
    let c3 = n.conv("c3", r1, 8, 8, [3, 3], [1, 2], [2, 1], [2, 1], 2, true);
    let add = Op::Binary {
        op: BinaryOp::Add,
        broadcast: false,
    };
    let add = n.b.node("add", add, &[c2, c3]);
    let c4 = n.conv("c4", add, 8, 6, [1, 3], [1, 1], [1, 1], [0, 1], 1, true);
    let cat = n.b.node("cat", Op::Concat { axis: 1 }, &[add, c4]);
    let pool = Op::Pooling(PoolAttrs {
        convention: PoolConvention::Full,
        ..PoolAttrs::new(PoolKind::Max, [2, 2], [2, 2])
    });
    let p = n.b.node("pool", pool, &[cat]);
    let fc1 = n.dense("fc1", p, 12, 14 * 3 * 3, true);
    let t = n.b.activation("t", fc1, Activation::Tanh);
    let fc2 = n.dense("fc2", t, 5, 12, false);
    n.b.build(&[fc2]).unwrap()
}

fn input(shape: &[usize], seed: u64) -> Array {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Array::new(
        shape.to_vec(),
        (0..n).map(|_| StandardNormal.sample(&mut rng)).collect(),
    )
}

fn relative_error(a: &Array, b: &Array) -> f64 {
    assert_eq!(a.shape, b.shape);
    let diff: f64 = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = a.data.iter().map(|x| x * x).sum();
    (diff / norm).sqrt()
}

#[test]
fn full_rank_decomposition_reproduces_every_output() {
    let model = awkward_model();
    let shape = [2, 3, 11, 9];
    let analysis = Analysis::new(&model, &shape).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    let plan = full_rank_plan(&analysis);
    assert_eq!(plan.layers.len(), 6);
    // The same plan goes through config.json unchanged.
    assert_eq!(plan_from_config(&analysis, &plan.to_config(&analysis)).unwrap(), plan);
    let (fast, report) = apply_plan(model.clone(), &analysis, &svds, &plan, None).unwrap();
    assert!(fast.graph.find("c3_v").is_some() && fast.graph.find("fc1_rec").is_some());
    assert!(fast.graph.find("c1_weight").is_none() && !fast.args.contains_key("c1_weight"));
    assert!(
        !fast.args.contains_key("c2_h_bias"),
        "a bias-free conv must stay bias-free"
    );
    let x = input(&shape, 1);
    let before = evaluate(&model, &x).unwrap();
    let after = evaluate(&fast, &x).unwrap();
    let err = relative_error(&before[0], &after[0]);
    assert!(err < 1e-5, "relative error {err}");
    // The report counts the real MACs of the new graph.
    let new_analysis = Analysis::new(&fast, &shape).unwrap();
    let new_macs: u64 = new_analysis.layers.iter().map(|l| l.macs).sum();
    assert_eq!(report.macs().1, new_macs);
}

#[test]
fn truncated_layer_error_follows_eckart_young_in_the_outputs() {
    // One conv, no nonlinearity: the output error of a rank-K pair is the kernel error applied to
    // the input, so it must grow as K shrinks and vanish at full rank.
    let (mut n, x) = Net::new();
    let c = n.conv("c", x, 4, 6, [3, 3], [1, 1], [1, 1], [1, 1], 1, true);
    let model = n.b.build(&[c]).unwrap();
    let analysis = Analysis::new(&model, &[1, 4, 7, 7]).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    let x = input(&[1, 4, 7, 7], 2);
    let reference = evaluate(&model, &x).unwrap();
    let mut last = f64::INFINITY;
    for k in [1, 3, 6, 9, 12] {
        let config = RankConfig {
            conv_params: vec![("c".into(), k)],
            ..Default::default()
        };
        let plan = plan_from_config(&analysis, &config).unwrap();
        let (fast, _) = apply_plan(model.clone(), &analysis, &svds, &plan, None).unwrap();
        let err = relative_error(&reference[0], &evaluate(&fast, &x).unwrap()[0]);
        assert!(err < last, "error did not shrink at rank {k}");
        last = err;
    }
    assert!(last < 1e-5);
}

#[test]
fn ratio_plans_hit_the_requested_speedup() {
    let prefix = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/vgg16-mini");
    let model = load_checkpoint(prefix, 1).unwrap();
    let analysis = Analysis::new(&model, &[1, 1, 32, 32]).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    for (ratio, scope) in [
        (1.5, Scope::All),
        (2.0, Scope::All),
        (3.0, Scope::ConvOnly),
        (4.0, Scope::All),
    ] {
        let plan = plan_for_ratio(&analysis, &svds, ratio, scope).unwrap();
        let (fast, report) = apply_plan(model.clone(), &analysis, &svds, &plan, None).unwrap();
        let achieved = report.scope_speedup(scope);
        assert!(
            achieved >= ratio && achieved / ratio < 1.02,
            "ratio {ratio}: achieved {achieved}"
        );
        // conv1_1 (one input channel) cannot get cheaper and stays whole.
        assert!(fast.graph.find("conv1_1").is_some());
        if scope == Scope::ConvOnly {
            assert!(fast.graph.find("fc6").is_some() && fast.graph.find("fc7").is_some());
        }
    }
    let err = plan_for_ratio(&analysis, &svds, 500.0, Scope::All)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ratio 500"), "{err}");
}

#[test]
fn full_rank_fixture_agrees_with_the_original() {
    let prefix = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/vgg16-mini");
    let model = load_checkpoint(prefix, 1).unwrap();
    let analysis = Analysis::new(&model, &[1, 1, 32, 32]).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    let plan = full_rank_plan(&analysis);
    let (fast, _) = apply_plan(model.clone(), &analysis, &svds, &plan, None).unwrap();
    let x = input(&[1, 1, 32, 32], 3);
    // Compare the logits (before the softmax head) for a sharper test.
    let logits = |m: &Model| {
        let mut m = m.clone();
        let fc8 = m.graph.find("fc8_rec").or_else(|| m.graph.find("fc8")).unwrap();
        m.graph.heads = vec![Entry::new(fc8)];
        evaluate(&m, &x).unwrap().remove(0)
    };
    let err = relative_error(&logits(&model), &logits(&fast));
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn config_errors_name_the_layer() {
    let model = awkward_model();
    let analysis = Analysis::new(&model, &[1, 3, 11, 9]).unwrap();
    let plan_err = |conv: Vec<(&str, usize)>, fc: Vec<(&str, usize)>| {
        let config = RankConfig {
            conv_params: conv.into_iter().map(|(n, k)| (n.to_string(), k)).collect(),
            fc_params: fc.into_iter().map(|(n, k)| (n.to_string(), k)).collect(),
        };
        plan_from_config(&analysis, &config).unwrap_err().to_string()
    };
    assert!(plan_err(vec![("nope", 3)], vec![]).contains("no convolution or fully-connected layer named 'nope'"));
    assert!(
        plan_err(vec![("c1", 10)], vec![]).contains("layer 'c1': K = 10 is out of range: it must be between 1 and 9")
    );
    assert!(plan_err(vec![("c3", 3)], vec![]).contains("multiple of the layer's 2 groups"));
    assert!(plan_err(vec![], vec![("c1", 3)]).contains("is a Convolution layer"));
}

/// Layers that fail concurrently: the error is always the first failing layer's in graph order,
/// even when a later layer fails first.
#[test]
fn the_first_failing_layer_in_graph_order_is_reported() {
    let model = awkward_model();
    let analysis = Analysis::new(&model, &[2, 3, 11, 9]).unwrap();
    let wanted = analysis.reducible();
    let ids: Vec<accnn_plan::LayerId> = wanted.iter().collect();
    assert!(ids.len() >= 4, "{ids:?}");
    let (early, late) = (ids[1], ids[ids.len() - 1]);
    for delay_ms in [0, 30] {
        let result = accnn_plan::factorise_concurrently(
            &analysis,
            &wanted,
            |id| {
                if id == early {
                    // The later layer's failure arrives first.
                    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                    return Err(format!("layer {}", id.index()));
                }
                if id == late {
                    return Err(format!("layer {}", id.index()));
                }
                Ok(id.index())
            },
            &mut |_, _| {},
        );
        assert_eq!(
            result.err(),
            Some(format!("layer {}", early.index())),
            "delay {delay_ms} ms"
        );
    }
}
