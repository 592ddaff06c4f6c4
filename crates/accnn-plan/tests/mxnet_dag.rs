//! A checkpoint written by MXNet 1.9.1 itself (fixtures/mxnet/make_dag.py), with MXNet's own logits on a
//! fixed input: the reader, the reference interpreter and full-rank decomposition are all checked
//! against a real MXNet run.

use accnn_graph::mxnet::load_checkpoint;
use accnn_graph::{Entry, Model};
use accnn_plan::{Analysis, apply_plan, factorise_all, full_rank_plan};
use accnn_reference::{Array, evaluate};

struct Recorded {
    shape: Vec<usize>,
    input: Vec<f64>,
    logits: Vec<f64>,
}

fn recorded() -> Recorded {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/mxnet/dag-io.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect::<Vec<f64>>()
    };
    Recorded {
        shape: v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect(),
        input: floats("input"),
        logits: floats("logits"),
    }
}

fn dag() -> Model {
    load_checkpoint(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/mxnet/dag"), 1).unwrap()
}

/// The logits (the FC layer before the softmax head) for the recorded input.
fn logits(model: &Model, io: &Recorded) -> Vec<f64> {
    let mut m = model.clone();
    let head = m.graph.find("fc2_rec").or_else(|| m.graph.find("fc2")).unwrap();
    m.graph.heads = vec![Entry::new(head)];
    evaluate(&m, &Array::new(io.shape.clone(), io.input.clone()))
        .unwrap()
        .remove(0)
        .data
}

fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (diff / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

#[test]
fn reference_interpreter_matches_mxnet() {
    let io = recorded();
    let model = dag();
    assert_eq!(model.aux.len(), 2, "BatchNorm moving mean and variance are aux states");
    let err = relative_error(&logits(&model, &io), &io.logits);
    assert!(err < 1e-5, "relative error against MXNet {err}");
}

#[test]
fn full_rank_decomposition_of_an_mxnet_dag_matches_mxnet() {
    let io = recorded();
    let model = dag();
    let analysis = Analysis::new(&model, &io.shape).unwrap();
    let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {}).unwrap();
    let plan = full_rank_plan(&analysis);
    assert_eq!(plan.layers.len(), 7);
    let (fast, _) = apply_plan(model, &analysis, &svds, &plan, None).unwrap();
    let err = relative_error(&logits(&fast, &io), &io.logits);
    assert!(err < 1e-5, "relative error against MXNet {err}");
}
