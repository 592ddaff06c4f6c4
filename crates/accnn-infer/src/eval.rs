//! Classification accuracy of a model on a labelled [`Dataset`].

use candle_core::{D, Device, Tensor};

use crate::data::Dataset;
use crate::{Engine, InferError};

/// The five best classes of every image, best first (fewer when the model has fewer classes).
pub fn predict(
    engine: &Engine,
    data: &Dataset,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<u32>>, InferError> {
    let [_, c, h, w] = data.shape;
    let mut out = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(data.len());
        let (images, _) = data.slice(start..end);
        let x = Tensor::from_vec(images, (end - start, c, h, w), &Device::Cpu)?;
        let scores = engine.run(&x)?.remove(0).flatten_from(1)?;
        let k = scores.dim(D::Minus1)?.min(5);
        let order = scores.arg_sort_last_dim(false)?.narrow(1, 0, k)?.to_vec2::<u32>()?;
        out.extend(order);
        progress(end - start);
    }
    Ok(out)
}

/// Accuracy figures of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub count: usize,
    pub top1: f64,
    /// Top-5 accuracy, when the model has more than five classes.
    pub top5: Option<f64>,
}

/// Top-1 and top-5 accuracy of `predictions` against `labels`.
pub fn score(predictions: &[Vec<u32>], labels: &[u32]) -> Scores {
    let n = labels.len().max(1) as f64;
    let top1 = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p.first() == Some(l))
        .count() as f64
        / n;
    let has5 = predictions.first().is_some_and(|p| p.len() >= 5);
    let top5 = has5.then(|| predictions.iter().zip(labels).filter(|(p, l)| p.contains(l)).count() as f64 / n);
    Scores {
        count: labels.len(),
        top1,
        top5,
    }
}

/// Fraction of images on which two models agree on the best class.
pub fn agreement(a: &[Vec<u32>], b: &[Vec<u32>]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x.first() == y.first()).count() as f64 / a.len().max(1) as f64
}
