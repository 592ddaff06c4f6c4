//! Graph rewriting: a split layer's factors land in the model as given, but subnormal values.

use accnn_graph::ir::ConvAttrs;
use accnn_graph::rewrite::{LayerSplit, apply_splits};
use accnn_graph::{ModelBuilder, Tensor};

#[test]
fn subnormal_factor_values_are_written_as_zero_and_the_rest_unchanged() {
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let w = Tensor::new(vec![4, 2, 3, 3], vec![0.5; 72]).unwrap();
    let c = b.conv("c", x, ConvAttrs::same([3, 3], 4), w, Some(Tensor::zeros(vec![4])));
    let model = b.build(&[c]).unwrap();
    let node = model.graph.find("c").unwrap();
    let tiny = f32::MIN_POSITIVE / 8.0;
    assert!(tiny.is_subnormal());
    let mut first = vec![0.25f32; 3 * 2 * 3];
    first[0] = tiny;
    first[1] = -tiny;
    let mut second = vec![-0.75f32; 4 * 3 * 3];
    second[5] = tiny;
    let mut split = LayerSplit::new(
        node,
        Tensor::new(vec![3, 2, 3, 1], first.clone()).unwrap(),
        Tensor::new(vec![4, 3, 1, 3], second.clone()).unwrap(),
    );
    split.bias = Some(Tensor::new(vec![4], vec![1.0, tiny, 2.0, 3.0]).unwrap());
    let out = apply_splits(model, vec![split]).unwrap();
    let expect = |mut v: Vec<f32>| {
        v.iter_mut().filter(|x| x.is_subnormal()).for_each(|x| *x = 0.0);
        v
    };
    assert_eq!(out.args["c_v_weight"].data(), expect(first).as_slice());
    assert_eq!(out.args["c_h_weight"].data(), expect(second).as_slice());
    // The replacement bias is the second half's, flushed too.
    assert_eq!(out.args["c_h_bias"].data(), &[1.0, 0.0, 2.0, 3.0]);
}
