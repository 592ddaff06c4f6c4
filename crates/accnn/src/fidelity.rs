//! What decomposition did to the model's outputs: the new model against the original on a few
//! inputs (calibration images when there are some, else seeded synthetic ones), as a relative
//! error and a top-1 agreement. Run with accnn's engine; skipped when it cannot run the model.

use accnn_graph::Model;
use accnn_infer::data::Dataset;
use accnn_infer::{Engine, EngineOptions};
use candle_core::{DType, Device, Tensor};

/// Inputs the outputs are compared on.
const CHECK_INPUTS: usize = 8;

/// How far the new model's outputs are from the original's.
#[derive(Clone, Debug, PartialEq)]
pub struct Fidelity {
    /// How many inputs were compared, and whether they were synthetic (standard normal) rather than
    /// calibration images.
    pub inputs: usize,
    pub synthetic: bool,
    /// `‖new − original‖ / ‖original‖` over the first output of every input.
    pub relative_error: f64,
    /// Fraction of inputs whose highest-scoring output agrees (first output's last axis).
    pub top1_agreement: f64,
}

impl Fidelity {
    /// Above this relative error the outputs have changed enough to say so plainly.
    pub const WARNING: f64 = 0.1;
}

/// The inputs of the check and the original model's outputs on them.
pub(crate) struct Reference {
    input: Tensor,
    synthetic: bool,
    outputs: Vec<f32>,
}

/// The first output of `model` on `input`, or why accnn's engine could not compute it. Inputs run
/// one at a time: a batch would hold every input's activations at once, and the check runs while
/// the model's weights are held twice (the IR's and the engine's), which sets the tool's peak
/// memory on large models.
fn first_output(model: &Model, input: &Tensor) -> Result<Vec<f32>, String> {
    let engine = Engine::new(model, EngineOptions::default()).map_err(|e| e.to_string())?;
    let mut values = Vec::new();
    for i in 0..input.dims()[0] {
        let one = input.narrow(0, i, 1).map_err(|e| e.to_string())?;
        let out = engine.run(&one).map_err(|e| e.to_string())?.into_iter().next();
        let out = out.ok_or("the model has no output")?;
        let out = out
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        values.extend(out);
    }
    Ok(values)
}

/// Runs the original `model` on the check's inputs: the first calibration images, else
/// synthetic ones of `data_shape` (batch first) from a fixed seed.
/// `Err` says why the check cannot run (an operator accnn's engine does not run).
pub(crate) fn reference(
    model: &Model,
    data_shape: &[usize],
    calibration: Option<&Dataset>,
) -> Result<Reference, String> {
    let bad = |e: candle_core::Error| e.to_string();
    let (input, synthetic) = match calibration {
        Some(data) if !data.is_empty() => {
            let n = data.len().min(CHECK_INPUTS);
            let (images, _) = data.slice(0..n);
            let shape = [n, data.shape[1], data.shape[2], data.shape[3]];
            (Tensor::from_vec(images, &shape, &Device::Cpu).map_err(bad)?, false)
        }
        _ => {
            let mut shape = data_shape.to_vec();
            *shape.first_mut().ok_or("the data shape is empty")? = CHECK_INPUTS;
            let n: usize = shape.iter().product();
            // A fixed sequence, so that runs are comparable (not candle's global RNG).
            let values = accnn_infer::data::synthetic::standard_normal(n, 0);
            (Tensor::from_vec(values, shape, &Device::Cpu).map_err(bad)?, true)
        }
    };
    let input = input.to_dtype(DType::F32).map_err(bad)?;
    let outputs = first_output(model, &input)?;
    Ok(Reference {
        input,
        synthetic,
        outputs,
    })
}

/// The new model against the reference; `Err` says why it could not be run or compared.
pub(crate) fn compare(reference: &Reference, model: &Model) -> Result<Fidelity, String> {
    let new = first_output(model, &reference.input)?;
    let old = &reference.outputs;
    if new.len() != old.len() || old.is_empty() {
        return Err(format!(
            "the new model's first output has {} values, the original's {}",
            new.len(),
            old.len()
        ));
    }
    let diff: f64 = new.iter().zip(old).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    let norm: f64 = old.iter().map(|b| (*b as f64).powi(2)).sum();
    let inputs = reference.input.dims()[0];
    let per_input = old.len() / inputs;
    let best = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]));
    let agree = (0..inputs)
        .filter(|&i| {
            let r = i * per_input..(i + 1) * per_input;
            best(&new[r.clone()]) == best(&old[r])
        })
        .count();
    Ok(Fidelity {
        inputs,
        synthetic: reference.synthetic,
        relative_error: (diff / norm.max(f64::MIN_POSITIVE)).sqrt(),
        top1_agreement: agree as f64 / inputs as f64,
    })
}
