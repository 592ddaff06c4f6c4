//! Classification accuracy of a model on labelled images.

use candle_core::{D, Device, Tensor};

use crate::data::ImageSource;
use crate::{Engine, InferError};

/// The five best classes of every image, best first (fewer when the model has fewer classes).
/// `progress` is called with the number of images done after each batch.
pub fn predict(
    engine: &Engine,
    data: &dyn ImageSource,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<u32>>, InferError> {
    let [c, h, w] = data.image_shape();
    let n = data.count();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(n);
        let images = data.images(start..end)?;
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
