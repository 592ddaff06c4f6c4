//! What the student is trained to minimise: Hinton et al.'s distillation loss, cross-entropy on
//! labels, and a feature loss on the decomposed layers' responses.

use candle_core::{D, Result, Tensor};

use crate::student::log_softmax;

/// The weights of the loss's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    /// Softening of both models' outputs in the distillation term (1: none).
    pub temperature: f64,
    /// The label term's share: the loss is `(1 - alpha) · T² · KL + alpha · CE` (0 without labels).
    pub alpha: f64,
    /// Weight of the mean relative squared error between the student's and the teacher's responses
    /// at the decomposed layers (0: off).
    pub feature: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            temperature: 4.0,
            alpha: 0.5,
            feature: 0.0,
        }
    }
}

/// The terms of one batch's loss (scalars), and their weighted sum, the loss.
pub struct LossTerms {
    pub total: Tensor,
    pub distillation: Tensor,
    pub cross_entropy: Option<Tensor>,
    pub feature: Option<Tensor>,
}

/// `T² · KL(softmax(teacher / T) ‖ softmax(student / T))`, the batch mean; `T²` keeps the
/// gradient's scale independent of `T` (Hinton et al., 2015).
pub fn distillation(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let s = log_softmax(&(student / temperature)?, 1)?;
    let t = log_softmax(&(teacher.detach() / temperature)?, 1)?;
    let kl = (t.exp()? * (t - s)?)?.sum(D::Minus1)?.mean_all()?;
    kl * (temperature * temperature)
}

/// Mean cross-entropy of `logits` `(B, K)` against class indices `labels` `(B,)` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_p = log_softmax(logits, 1)?;
    let picked = log_p.gather(&labels.unsqueeze(1)?, 1)?;
    picked.mean_all()?.neg()
}

/// `‖s − t‖² / ‖t‖²` over the batch: the response error `--calibrate` reports, as a loss.
pub fn relative_squared_error(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let teacher = teacher.detach();
    let err = (student - &teacher)?.sqr()?.sum_all()?;
    let norm = teacher.sqr()?.sum_all()?.to_scalar::<f32>()?.max(f32::MIN_POSITIVE);
    err / norm as f64
}

impl LossWeights {
    /// The loss of one batch: student and teacher logits, labels when the data has them, and the
    /// pairs of decomposed-layer responses when the feature term is on.
    pub fn terms(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        labels: Option<&Tensor>,
        features: &[(Tensor, Tensor)],
    ) -> Result<LossTerms> {
        let distillation = distillation(student, teacher, self.temperature)?;
        let (mut total, cross_entropy) = match labels {
            Some(labels) if self.alpha > 0.0 => {
                let ce = cross_entropy(student, labels)?;
                (((&distillation * (1.0 - self.alpha))? + (&ce * self.alpha)?)?, Some(ce))
            }
            _ => (distillation.clone(), None),
        };
        let feature = if self.feature > 0.0 && !features.is_empty() {
            let mut sum = Tensor::zeros((), student.dtype(), student.device())?;
            for (s, t) in features {
                sum = (sum + relative_squared_error(s, t)?)?;
            }
            let mean = (sum / features.len() as f64)?;
            total = (total + (&mean * self.feature)?)?;
            Some(mean)
        } else {
            None
        };
        Ok(LossTerms {
            total,
            distillation,
            cross_entropy,
            feature,
        })
    }
}
