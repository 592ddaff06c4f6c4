//! Data-aware decomposition on small synthetic layers and an ONNX DAG, checked against the
//! reference interpreter.

use std::path::Path;

use accnn_calibrate::{CalibrateOptions, Reconstruction, Statistics, collect, factorise, reconstruct};
use accnn_graph::ir::ConvAttrs;
use accnn_graph::onnx::{decode_onnx, zoo};
use accnn_graph::{Model, ModelBuilder, Tensor, fold_batch_norms};
use accnn_infer::data::Dataset;
use accnn_plan::{
    Analysis, Factorisation, LayerId, PerLayer, PlannedLayer, RankPlan, Scope, full_rank_plan, plan_for_ratio,
};
use accnn_reference::{Array, evaluate};

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Images with correlated channels, so that the response-weighted factorisation differs from the
/// weight SVD.
fn images(count: usize, shape: [usize; 3], seed: u64) -> Dataset {
    let [c, h, w] = shape;
    let base = noise(count * h * w, seed);
    let own = noise(count * c * h * w, seed + 1);
    let mut data = vec![0f32; count * c * h * w];
    for b in 0..count {
        for ch in 0..c {
            for p in 0..h * w {
                data[(b * c + ch) * h * w + p] =
                    base[b * h * w + p] * (ch as f32 + 1.0) + 0.3 * own[(b * c + ch) * h * w + p];
            }
        }
    }
    Dataset {
        shape: [count, c, h, w],
        images: data,
        labels: vec![0; count],
    }
}

fn one_conv() -> Model {
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let w = Tensor::new(vec![6, 4, 3, 3], noise(216, 7)).unwrap();
    let bias = Tensor::new(vec![6], noise(6, 8)).unwrap();
    let conv = b.conv("conv", x, ConvAttrs::same([3, 3], 6), w, Some(bias));
    b.build(&[conv]).unwrap()
}

fn outputs(model: &Model, data: &Dataset) -> Vec<f64> {
    let shape = data.shape.to_vec();
    let x = Array::new(shape, data.images.iter().map(|&v| v as f64).collect());
    evaluate(model, &x).unwrap().remove(0).data
}

fn squared_error(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// [`reconstruct`] without progress reports.
fn reconstructed(
    model: Model,
    analysis: &Analysis,
    svds: &PerLayer<Factorisation>,
    plan: &RankPlan,
    stats: &Statistics,
    data: &Dataset,
    options: &CalibrateOptions,
) -> Reconstruction {
    reconstruct(model, analysis, svds, plan, stats, data, options, &mut |_, _, _| {}).unwrap()
}

#[test]
fn refit_is_the_least_squares_optimum_of_the_layer_response() {
    let model = one_conv();
    let data = images(24, [4, 6, 6], 3);
    let analysis = Analysis::new(&model, &[1, 4, 6, 6]).unwrap();
    // Every output position is a sample: the fit is over exactly what the check measures.
    let options = CalibrateOptions {
        positions: 36,
        ..Default::default()
    };
    let wanted = analysis.select(|_| true);
    let mut stats = collect(&model, &analysis, &data, &wanted, &options).unwrap();
    let svds = factorise(&model, &analysis, &mut stats, &wanted, &options, &mut |_, _| {}).unwrap();
    let plan = RankPlan {
        layers: vec![PlannedLayer {
            layer: LayerId(0),
            rank: 3,
        }],
    };
    let fitted = reconstructed(model.clone(), &analysis, &svds, &plan, &stats, &data, &options);
    let fit = &fitted.fits[0];
    assert!(fit.error_after < fit.error_before, "{fit:?}");

    let target = outputs(&model, &data);
    let best = squared_error(&outputs(&fitted.model, &data), &target);
    let energy: f64 = target.iter().map(|v| v * v).sum();
    assert!(
        (best / energy - fit.error_after).abs() < 1e-4,
        "reported {} vs measured {}",
        fit.error_after,
        best / energy
    );
    // Any change of the refitted half or bias makes the response error worse.
    for (name, seed) in [("conv_h_weight", 11), ("conv_h_bias", 12)] {
        for sign in [1.0f32, -1.0] {
            let mut moved = fitted.model.clone();
            let t = moved.args.get_mut(name).unwrap();
            let step = noise(t.len(), seed);
            for (v, d) in t.data_mut().iter_mut().zip(step) {
                *v += sign * 1e-2 * d;
            }
            let worse = squared_error(&outputs(&moved, &data), &target);
            assert!(worse > best, "{name}: {worse} <= {best}");
        }
    }
}

#[test]
fn full_rank_calibration_reproduces_an_onnx_dag() {
    let bytes = zoo::residual_block(2, 13);
    let model = fold_batch_norms(decode_onnx(&bytes, Path::new("b.onnx"), None).unwrap().model)
        .unwrap()
        .0;
    let data = images(64, [8, 12, 12], 5);
    let analysis = Analysis::new(&model, &[1, 8, 12, 12]).unwrap();
    let options = CalibrateOptions::default();
    let wanted = analysis.select(|_| true);
    let mut stats = collect(&model, &analysis, &data, &wanted, &options).unwrap();
    let svds = factorise(&model, &analysis, &mut stats, &wanted, &options, &mut |_, _| {}).unwrap();
    let mut heard = Vec::new();
    let fitted = reconstruct(
        model.clone(),
        &analysis,
        &svds,
        &full_rank_plan(&analysis),
        &stats,
        &data,
        &options,
        &mut |layer, done, total| heard.push((analysis[layer].node, done, total)),
    )
    .unwrap();
    // Each layer is reported once it is replaced, in network order, counted up to the total.
    let total = analysis.layers.len();
    assert_eq!(heard.len(), total);
    for (k, &(node, done, of)) in heard.iter().enumerate() {
        assert_eq!((done, of), (k + 1, total));
        assert!(k == 0 || heard[k - 1].0 < node, "{heard:?}");
    }
    let (a, b) = (outputs(&fitted.model, &data), outputs(&model, &data));
    let rel = (squared_error(&a, &b) / b.iter().map(|v| v * v).sum::<f64>()).sqrt();
    assert!(rel < 1e-3, "relative error {rel}");
    assert_eq!(fitted.fits.len(), analysis.layers.len());
    assert!(
        fitted.fits.iter().all(|f| f.refit),
        "enough samples for every layer: {:?}",
        fitted.fits
    );

    // At a ratio, every refit lowers the response error the factorisation left.
    let plan = plan_for_ratio(&analysis, &svds, 2.0, Scope::All).unwrap();
    let fitted = reconstructed(model.clone(), &analysis, &svds, &plan, &stats, &data, &options);
    assert!(fitted.report.speedup() >= 2.0);
    for f in &fitted.fits {
        assert!(f.error_after <= f.error_before + 1e-12, "{f:?}");
    }
    // Resumed at each refitted layer from the activations kept over the calibration set (a
    // residual block: the skip branch is kept too) or recomputed from the images every time: the
    // same inputs, so the same fit.
    for batch in [16, 64] {
        let per_batch = CalibrateOptions {
            batch,
            ..options.clone()
        };
        let resumed = reconstructed(model.clone(), &analysis, &svds, &plan, &stats, &data, &per_batch);
        let from_images = CalibrateOptions {
            resume_bytes: 0,
            ..per_batch
        };
        let recomputed = reconstructed(model.clone(), &analysis, &svds, &plan, &stats, &data, &from_images);
        assert_eq!(resumed.model.args.len(), recomputed.model.args.len());
        for (name, t) in &resumed.model.args {
            let u = &recomputed.model.args[name];
            for (a, b) in t.data().iter().zip(u.data()) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{name}: {a} vs {b}");
            }
        }
        for (a, b) in resumed.fits.iter().zip(&recomputed.fits) {
            assert!((a.error_after - b.error_after).abs() < 1e-9, "{a:?} vs {b:?}");
        }
        for (a, b) in resumed.fits.iter().zip(&fitted.fits) {
            assert!(
                (a.error_after - b.error_after).abs() < 1e-9,
                "batch {batch}: {a:?} vs {b:?}"
            );
        }
    }
    // Too few samples per unknown: the factorisation's second half is kept, not overfitted.
    let few = Dataset {
        shape: [4, 8, 12, 12],
        images: data.images[..4 * 8 * 144].to_vec(),
        labels: vec![0; 4],
    };
    let stats = collect(&model, &analysis, &few, &wanted, &options).unwrap();
    let fitted = reconstructed(model, &analysis, &svds, &plan, &stats, &few, &options);
    for f in &fitted.fits {
        let enough = f.samples >= accnn_calibrate::MIN_SAMPLES_PER_FEATURE * f.features as u64;
        assert_eq!(f.refit, enough, "{f:?}");
        assert!(f.refit || f.error_after == f.error_before, "{f:?}");
    }
    assert!(fitted.fits.iter().any(|f| !f.refit), "{:?}", fitted.fits);
}

/// A dense layer over a sequence (`flatten` off: ONNX MatMul on `N, …, T, C`) has as many outputs
/// as its weight has rows, whatever its output's axis 1 is; the refit is the least-squares optimum
/// of its response over every row.
#[test]
fn refit_of_a_dense_layer_over_a_sequence_fits_every_row() {
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    let w = Tensor::new(vec![10, 8], noise(80, 21)).unwrap();
    let bias = Tensor::new(vec![10], noise(10, 22)).unwrap();
    let fc = b.dense("fc", x, w, Some(bias), false);
    let model = b.build(&[fc]).unwrap();
    let data = images(40, [1, 6, 8], 9);
    let analysis = Analysis::new(&model, &[1, 1, 6, 8]).unwrap();
    assert_eq!(analysis.layers[0].output_shape, vec![1, 1, 6, 10]);
    let options = CalibrateOptions::default();
    let wanted = analysis.select(|_| true);
    let mut stats = collect(&model, &analysis, &data, &wanted, &options).unwrap();
    let svds = factorise(&model, &analysis, &mut stats, &wanted, &options, &mut |_, _| {}).unwrap();
    let plan = RankPlan {
        layers: vec![PlannedLayer {
            layer: LayerId(0),
            rank: 3,
        }],
    };
    let fitted = reconstructed(model.clone(), &analysis, &svds, &plan, &stats, &data, &options);
    let fit = &fitted.fits[0];
    assert!(fit.refit && fit.error_after < fit.error_before, "{fit:?}");
    assert_eq!(fit.samples, 40 * 6);
    let target = outputs(&model, &data);
    let measured = squared_error(&outputs(&fitted.model, &data), &target) / target.iter().map(|v| v * v).sum::<f64>();
    assert!(
        (measured - fit.error_after).abs() < 1e-4,
        "reported {} vs measured {measured}",
        fit.error_after
    );
}
