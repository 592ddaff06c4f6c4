//! The training loop on the small model: an update lowers the loss, only the decomposed layers
//! move, and an interrupted run resumed from its checkpoint ends where the uninterrupted one does.

mod common;

use accnn_graph::Model;
use accnn_infer::data::Dataset;
use accnn_infer::data::synthetic::natural_noise;
use accnn_train::{
    EpochReport, FinetuneOptions, Finetuner, LossWeights, Optimizer, Schedule, Student, TrainError, TrainObserver,
    TrainScope, TrainState,
};
use candle_core::{Device, Tensor};
use common::{every_layer_model, student_of_every_layer_model};

fn images(count: usize) -> Dataset {
    let mut d = natural_noise(count, [3, 9, 9], 5);
    // Labels: some classes, so that the cross-entropy term is exercised too.
    d.labels = (0..count as u32).map(|i| i % 5).collect();
    d
}

fn options(steps: Option<usize>) -> FinetuneOptions {
    FinetuneOptions {
        epochs: 2,
        steps,
        batch: 8,
        lr: 0.02,
        optimizer: Optimizer::sgd(),
        schedule: Schedule::Cosine,
        weight_decay: 1e-4,
        max_grad_norm: None,
        loss: LossWeights::default(),
        scope: TrainScope::Decomposed,
        augment: false,
        seed: 3,
        threads: 1,
        target: accnn_infer::Target::Cpu,
    }
}

/// Keeps nothing; can stop the run after a given epoch, keeping what it was given then.
struct Stop {
    after: Option<usize>,
    kept: Option<(Model, TrainState)>,
}

impl TrainObserver for Stop {
    fn epoch(&mut self, report: &EpochReport, model: &Model, state: &TrainState) -> Result<(), TrainError> {
        if Some(report.epoch) == self.after {
            self.kept = Some((model.clone(), state.clone()));
            return Err(TrainError::Model("stopped".into()));
        }
        Ok(())
    }
}

fn run(student: Model, data: &Dataset, options: FinetuneOptions) -> Model {
    let teacher = every_layer_model();
    let mut observer = Stop {
        after: None,
        kept: None,
    };
    Finetuner::new(student, &teacher, data, None, options)
        .unwrap()
        .run(&mut observer)
        .unwrap()
}

/// The distillation loss of `student` against the teacher on all of `data`, in one batch.
fn loss(student: &Model, data: &Dataset, weights: &LossWeights) -> f32 {
    let x = Tensor::from_slice(&data.images, data.shape.as_slice(), &Device::Cpu).unwrap();
    let s = Student::new(student, &|_| false, &Device::Cpu)
        .unwrap()
        .forward(&x)
        .unwrap();
    let t = Student::new(&every_layer_model(), &|_| false, &Device::Cpu)
        .unwrap()
        .forward(&x)
        .unwrap();
    let labels = Tensor::new(data.labels.as_slice(), &Device::Cpu).unwrap();
    let terms = weights.terms(&s, &t, Some(&labels), &[]).unwrap();
    terms.total.to_scalar::<f32>().unwrap()
}

#[test]
fn one_update_lowers_the_loss_by_what_its_gradient_predicts() {
    let data = images(16);
    let student = student_of_every_layer_model(1.0);
    // Distillation only (the labels of noise images are noise), unsoftened.
    let weights = LossWeights {
        alpha: 0.0,
        temperature: 1.0,
        ..LossWeights::default()
    };
    let before = loss(&student, &data, &weights);
    // The gradient of the pair, computed here independently of the trainer.
    let x = Tensor::from_slice(&data.images, data.shape.as_slice(), &Device::Cpu).unwrap();
    let net = Student::new(&student, &|n| n.name.starts_with("c2x"), &Device::Cpu).unwrap();
    let t = Student::new(&every_layer_model(), &|_| false, &Device::Cpu)
        .unwrap()
        .forward(&x)
        .unwrap();
    let total = weights.terms(&net.forward(&x).unwrap(), &t, None, &[]).unwrap().total;
    let grads = total.backward().unwrap();
    let norm2: f64 = net
        .vars()
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        })
        .sum();
    // A step that should lower the loss by about 0.1%: lr · |g|² to first order.
    let lr = 0.001 * before as f64 / norm2;
    let opts = FinetuneOptions {
        batch: 16,
        schedule: Schedule::Constant,
        lr,
        weight_decay: 0.0,
        loss: weights,
        ..options(Some(1))
    };
    let after = loss(&run(student, &data, opts), &data, &weights);
    let predicted = lr * norm2;
    let actual = (before - after) as f64;
    assert!(
        (actual - predicted).abs() < 0.05 * predicted,
        "loss {before} → {after}: lowered by {actual}, the gradient predicts {predicted}"
    );
}

#[test]
fn training_the_decomposed_layers_leaves_every_other_weight_bit_identical() {
    let data = images(24);
    let student = student_of_every_layer_model(0.2);
    let trained = run(student.clone(), &data, options(Some(3)));
    let mut moved = Vec::new();
    for (name, before) in &student.args {
        let after = &trained.args[name];
        if before.data() != after.data() {
            moved.push(name.as_str());
        }
        assert_eq!(before.shape(), after.shape());
    }
    assert_eq!(moved, vec!["c2x_h_bias", "c2x_h_weight", "c2x_v_weight"]);
    assert_eq!(student.aux, trained.aux);
    // --train all moves the others too (BatchNorm stays frozen).
    let all = run(
        student.clone(),
        &data,
        FinetuneOptions {
            scope: TrainScope::All,
            ..options(Some(3))
        },
    );
    assert!(all.args["c1_weight"].data() != student.args["c1_weight"].data());
    assert_eq!(all.args["bn_gamma"].data(), student.args["bn_gamma"].data());
}

#[test]
fn a_run_resumed_from_its_checkpoint_ends_where_the_uninterrupted_run_ends() {
    let data = images(32);
    let student = student_of_every_layer_model(0.2);
    let teacher = every_layer_model();
    for optimizer in [Optimizer::sgd(), Optimizer::adamw()] {
        let opts = FinetuneOptions {
            optimizer,
            lr: if optimizer == Optimizer::sgd() { 0.02 } else { 1e-3 },
            ..options(None)
        };
        let whole = run(student.clone(), &data, opts.clone());
        let mut stop = Stop {
            after: Some(1),
            kept: None,
        };
        let first = Finetuner::new(student.clone(), &teacher, &data, None, opts.clone()).unwrap();
        assert!(first.run(&mut stop).is_err());
        let (model, state) = stop.kept.expect("a checkpoint after epoch 1");
        assert_eq!(state.step, 4);
        let mut second = Finetuner::new(model, &teacher, &data, None, opts.clone()).unwrap();
        second.resume(state).unwrap();
        let resumed = second
            .run(&mut Stop {
                after: None,
                kept: None,
            })
            .unwrap();
        for (name, w) in &whole.args {
            let r = &resumed.args[name];
            for (a, b) in w.data().iter().zip(r.data()) {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                    "{optimizer:?} {name}: {a} vs {b}"
                );
            }
        }
        // And it did train: the pair moved from where it started.
        assert!(whole.args["c2x_v_weight"].data() != student.args["c2x_v_weight"].data());
    }
}

#[test]
fn a_non_finite_loss_stops_with_the_step_number() {
    let data = images(16);
    let student = student_of_every_layer_model(0.2);
    let teacher = every_layer_model();
    let opts = FinetuneOptions {
        lr: 1e30,
        schedule: Schedule::Constant,
        ..options(Some(6))
    };
    let err = Finetuner::new(student, &teacher, &data, None, opts)
        .unwrap()
        .run(&mut Stop {
            after: None,
            kept: None,
        })
        .expect_err("the loss overflows");
    assert!(
        matches!(err, TrainError::NonFinite { step } if (2..=6).contains(&step)),
        "{err}"
    );
}

#[test]
fn empty_data_and_a_student_with_nothing_decomposed_are_refused() {
    let teacher = every_layer_model();
    let empty = Dataset {
        shape: [0, 3, 9, 9],
        images: Vec::new(),
        labels: Vec::new(),
    };
    let err = Finetuner::new(student_of_every_layer_model(0.0), &teacher, &empty, None, options(None))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "the training data holds no images");
    let err = Finetuner::new(teacher.clone(), &teacher, &images(8), None, options(None))
        .err()
        .unwrap();
    assert!(err.to_string().contains("nothing was decomposed"), "{err}");
}
