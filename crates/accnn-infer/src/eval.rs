//! Classification accuracy of a model on labelled images.

use candle_core::{Device, Tensor};

use crate::data::ImageSource;
use crate::{Engine, InferError};

/// The five best classes of every image, best first (fewer when the model has fewer classes).
/// `progress` is called with the number of images done after each batch.
pub fn predict(
    engine: &Engine,
    data: &dyn ImageSource,
    batch: usize,
    progress: impl FnMut(usize),
) -> Result<Vec<Vec<u32>>, InferError> {
    predict_with(data, batch, progress, |images, shape| {
        let x = Tensor::from_vec(images, shape.to_vec(), &Device::Cpu)?;
        Ok(engine.run(&x)?.remove(0).flatten_all()?.to_vec1::<f32>()?)
    })
}

/// [`predict`] with any runtime: `scores` maps a batch of images (`N, C, H, W`) to the model's
/// first output, `N` rows of class scores, row after row.
pub fn predict_with<E: From<InferError>>(
    data: &dyn ImageSource,
    batch: usize,
    mut progress: impl FnMut(usize),
    mut scores: impl FnMut(Vec<f32>, [usize; 4]) -> Result<Vec<f32>, E>,
) -> Result<Vec<Vec<u32>>, E> {
    let [c, h, w] = data.image_shape();
    let n = data.count();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(n);
        let images = data.images(start..end)?;
        let rows = scores(images, [end - start, c, h, w])?;
        let classes = rows.len() / (end - start);
        for row in rows.chunks(classes.max(1)) {
            out.push(best_classes(row, 5));
        }
        progress(end - start);
    }
    Ok(out)
}

/// The `k` highest-scoring classes of one row, best first; ties keep the lower class first.
fn best_classes(row: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    order.truncate(k);
    order
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
