//! The student's forward pass against the reference interpreter, and its gradients against finite
//! differences, on a small model holding every layer type a decomposed network has.

mod common;

use accnn_infer::data::synthetic::{SeededRng, standard_normal};
use accnn_train::{Student, logits_entry};
use candle_core::{DType, Device, Tensor};
use common::every_layer_model;

fn input(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    (standard_normal(n * 3 * 81, seed), vec![n, 3, 9, 9])
}

#[test]
fn the_student_computes_what_the_reference_interpreter_computes() {
    let model = every_layer_model();
    let student = Student::new(&model, &|_| true, &Device::Cpu).unwrap();
    let (x, shape) = input(3, 20);
    let logits = student
        .forward(&Tensor::from_slice(&x, shape.as_slice(), &Device::Cpu).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut logits_model = model.clone();
    logits_model.graph.heads = vec![logits_entry(&model).unwrap()];
    let array = accnn_reference::Array::new(shape, x.iter().map(|&v| v as f64).collect());
    let expected = &accnn_reference::evaluate(&logits_model, &array).unwrap()[0].data;
    assert_eq!(logits.len(), expected.len());
    for (a, e) in logits.iter().zip(expected) {
        assert!((*a as f64 - e).abs() < 1e-4 * (1.0 + e.abs()), "{a} vs {e}");
    }
}

/// `sum(logits · r)` for fixed `r`, the scalar whose gradient is checked.
fn probe_loss(student: &Student, x: &Tensor, r: &Tensor) -> Tensor {
    (student.forward(x).unwrap() * r).unwrap().sum_all().unwrap()
}

#[test]
fn every_layers_gradient_matches_finite_differences() {
    let model = every_layer_model();
    let student = Student::new(&model, &|_| true, &Device::Cpu).unwrap();
    let (x, shape) = input(2, 21);
    let x = Tensor::from_slice(&x, shape.as_slice(), &Device::Cpu).unwrap();
    let r = Tensor::from_vec(standard_normal(10, 22), (2, 5), &Device::Cpu).unwrap();
    let grads = probe_loss(&student, &x, &r).backward().unwrap();
    let mut rng = SeededRng::new(23);
    let mut checked = Vec::new();
    for p in student.parameters() {
        let Some(var) = p.var() else { continue };
        let w0 = var.as_tensor().copy().unwrap();
        let d: Vec<f32> = (0..w0.elem_count()).map(|_| rng.normal() as f32).collect();
        let d = Tensor::from_vec(d, w0.dims(), &Device::Cpu).unwrap();
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        let analytic = (grad * &d).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let eps = 1e-4;
        let at = |sign: f64| {
            var.set(&(&w0 + (&d * (sign * eps)).unwrap()).unwrap()).unwrap();
            probe_loss(&student, &x, &r)
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = (at(1.0) - at(-1.0)) / (2.0 * eps);
        var.set(&w0).unwrap();
        assert!(
            (analytic - numeric).abs() <= 1e-2 * analytic.abs().max(numeric.abs()) + 2e-3,
            "{} ({}): autograd {analytic} vs finite differences {numeric}",
            p.name,
            p.layer
        );
        checked.push(p.layer.clone());
    }
    for layer in ["c1", "c2_v", "c2_h", "skip", "grouped", "fc_red", "fc_rec"] {
        assert!(checked.iter().any(|l| l == layer), "{layer} was not checked");
    }
    // BatchNorm stays frozen: its statistics are not trainable weights.
    assert!(!checked.iter().any(|l| l == "bn"));
}

#[test]
fn the_input_gradient_matches_finite_differences_through_im2col_and_pooling() {
    // Col2im (the gradient of im2col) and the pooling gradients, checked on the input directly.
    let model = every_layer_model();
    let student = Student::new(&model, &|_| false, &Device::Cpu).unwrap();
    let (x, shape) = input(2, 24);
    let x = candle_core::Var::from_vec(x, shape.as_slice(), &Device::Cpu).unwrap();
    let r = Tensor::from_vec(standard_normal(10, 25), (2, 5), &Device::Cpu).unwrap();
    let grads = probe_loss(&student, x.as_tensor(), &r).backward().unwrap();
    let grad = grads.get(x.as_tensor()).expect("a gradient for the input");
    let x0 = x.as_tensor().copy().unwrap();
    let d = Tensor::from_vec(standard_normal(x0.elem_count(), 26), x0.dims(), &Device::Cpu).unwrap();
    let analytic = (grad * &d).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let eps = 1e-4;
    let at = |sign: f64| {
        let moved = (&x0 + (&d * (sign * eps)).unwrap()).unwrap();
        probe_loss(&student, &moved, &r)
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let numeric = (at(1.0) - at(-1.0)) / (2.0 * eps);
    assert!(
        (analytic - numeric).abs() <= 1e-2 * analytic.abs().max(numeric.abs()) + 2e-3,
        "{analytic} vs {numeric}"
    );
}
