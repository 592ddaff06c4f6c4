//! Optimisers with their state in the open (so that a run can be resumed exactly), and learning-rate
//! schedules.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent with (heavy-ball) momentum; weight decay added to the gradient.
    Sgd { momentum: f64 },
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

impl Optimizer {
    pub fn sgd() -> Self {
        Optimizer::Sgd { momentum: 0.9 }
    }

    pub fn adamw() -> Self {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// How the learning rate moves over the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// From the base rate down to zero along half a cosine.
    Cosine,
    /// Multiplied by `gamma` every `every` steps ([`crate::Finetuner`] reads 0 as one epoch).
    Step {
        every: usize,
        gamma: f64,
    },
}

impl Schedule {
    /// The rate at `step` of `total` for base rate `lr`.
    pub fn rate(&self, lr: f64, step: usize, total: usize) -> f64 {
        match *self {
            Schedule::Constant => lr,
            Schedule::Cosine => {
                let progress = step as f64 / total.max(1) as f64;
                0.5 * lr * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
            Schedule::Step { every, gamma } => lr * gamma.powi((step / every.max(1)) as i32),
        }
    }
}

/// An optimiser over named variables, its moments kept per name.
pub struct Updater {
    rule: Optimizer,
    weight_decay: f64,
    /// Gradients whose global norm exceeds this are scaled down to it (`None`: never).
    max_grad_norm: Option<f64>,
    vars: BTreeMap<String, Var>,
    /// SGD: the velocity; AdamW: the first moment.
    first: BTreeMap<String, Tensor>,
    /// AdamW: the second moment.
    second: BTreeMap<String, Tensor>,
    /// Updates made so far (AdamW's bias correction).
    steps: usize,
}

impl Updater {
    pub fn new(rule: Optimizer, weight_decay: f64, max_grad_norm: Option<f64>, vars: BTreeMap<String, Var>) -> Self {
        Updater {
            rule,
            weight_decay,
            max_grad_norm,
            vars,
            first: BTreeMap::new(),
            second: BTreeMap::new(),
            steps: 0,
        }
    }

    /// The global norm of the gradients of the variables.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0.0;
        for var in self.vars.values() {
            if let Some(g) = grads.get(var.as_tensor()) {
                sum += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sum.sqrt())
    }

    /// One update at learning rate `lr` from `grads`, clipped to the maximum norm; variables without
    /// a gradient stay. Returns the gradients' norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        self.steps += 1;
        let norm = self.grad_norm(grads)?;
        // A badly approximated network can start with huge gradients; one unclipped step would
        // throw it far off.
        let scale = match self.max_grad_norm {
            Some(max) if norm > max => max / norm,
            _ => 1.0,
        };
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached as well: candle's gradients may record how they were computed.
            let grad = &if scale < 1.0 {
                (grad.detach() * scale)?
            } else {
                grad.detach()
            };
            // Detached: an update computed from the variable itself would record the operation, and
            // each stored moment would keep the chain of every earlier step alive.
            let w = &var.as_tensor().detach();
            match self.rule {
                Optimizer::Sgd { momentum } => {
                    let grad = if self.weight_decay > 0.0 {
                        (grad + (w * self.weight_decay)?)?
                    } else {
                        grad.clone()
                    };
                    let velocity = match self.first.get(name) {
                        Some(v) if momentum > 0.0 => ((v * momentum)? + grad)?,
                        _ => grad,
                    };
                    var.set(&(w - (&velocity * lr)?)?)?;
                    self.first.insert(name.clone(), velocity);
                }
                Optimizer::AdamW { beta1, beta2, eps } => {
                    let m = match self.first.get(name) {
                        Some(m) => ((m * beta1)? + (grad * (1.0 - beta1))?)?,
                        None => (grad * (1.0 - beta1))?,
                    };
                    let v = match self.second.get(name) {
                        Some(v) => ((v * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?,
                        None => (grad.sqr()? * (1.0 - beta2))?,
                    };
                    let t = self.steps as i32;
                    let m_hat = (&m / (1.0 - beta1.powi(t)))?;
                    let v_hat = (&v / (1.0 - beta2.powi(t)))?;
                    let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
                    let decayed = (w * (1.0 - lr * self.weight_decay))?;
                    var.set(&(decayed - (update * lr)?)?)?;
                    self.first.insert(name.clone(), m);
                    self.second.insert(name.clone(), v);
                }
            }
        }
        Ok(norm)
    }

    /// The moments by name (`first/NAME`, `second/NAME`) and the update count, for a checkpoint.
    pub fn state(&self) -> (BTreeMap<String, Tensor>, usize) {
        let mut state = BTreeMap::new();
        for (name, t) in &self.first {
            state.insert(format!("first/{name}"), t.clone());
        }
        for (name, t) in &self.second {
            state.insert(format!("second/{name}"), t.clone());
        }
        (state, self.steps)
    }

    /// Restores what [`Updater::state`] gave, checking every moment's shape against its variable.
    pub fn restore(&mut self, state: BTreeMap<String, Tensor>, steps: usize) -> std::result::Result<(), String> {
        for (key, tensor) in state {
            let (kind, name) = key
                .split_once('/')
                .ok_or_else(|| format!("unknown state entry '{key}'"))?;
            let var = self
                .vars
                .get(name)
                .ok_or_else(|| format!("the state has moments for '{name}', which does not train"))?;
            if var.dims() != tensor.dims() {
                return Err(format!(
                    "the state's moment for '{name}' is {:?}, the weight {:?}",
                    tensor.dims(),
                    var.dims()
                ));
            }
            let tensor = tensor
                .to_device(var.device())
                .and_then(|t| t.to_dtype(var.dtype()))
                .map_err(|e| e.to_string())?;
            match kind {
                "first" => self.first.insert(name.to_string(), tensor),
                "second" => self.second.insert(name.to_string(), tensor),
                _ => return Err(format!("unknown state entry '{key}'")),
            };
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn stored_moments_hold_no_history_of_earlier_steps() {
        // A moment that recorded its operations would keep every earlier step's tensors alive:
        // memory grew by the model's size at every update.
        for rule in [Optimizer::sgd(), Optimizer::adamw()] {
            let w = Var::from_vec(vec![1f32, -2.0, 3.0], 3, &Device::Cpu).unwrap();
            let mut updater = Updater::new(rule, 0.1, Some(1.0), BTreeMap::from([("w".to_string(), w.clone())]));
            for _ in 0..3 {
                let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                updater.step(&grads, 0.1).unwrap();
            }
            let (state, steps) = updater.state();
            assert_eq!(steps, 3);
            assert!(!state.is_empty());
            for (name, t) in &state {
                assert!(!t.track_op(), "{rule:?}: {name} records its history");
            }
        }
    }

    #[test]
    fn sgd_with_momentum_and_decay_follows_its_recurrence() {
        // v ← μv + (g + λw), w ← w − η v, on f(w) = w² (g = 2w), checked against the recurrence.
        let (mu, lambda, eta) = (0.9, 0.01, 0.1);
        let w = Var::from_vec(vec![1.5f32], 1, &Device::Cpu).unwrap();
        let mut updater = Updater::new(
            Optimizer::Sgd { momentum: mu },
            lambda,
            None,
            BTreeMap::from([("w".to_string(), w.clone())]),
        );
        let (mut expected_w, mut v) = (1.5f64, 0.0f64);
        for _ in 0..4 {
            let grads = w.as_tensor().sqr().unwrap().sum_all().unwrap().backward().unwrap();
            updater.step(&grads, eta).unwrap();
            v = mu * v + 2.0 * expected_w + lambda * expected_w;
            expected_w -= eta * v;
            let got = w.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
            assert!((got - expected_w).abs() < 1e-5, "{got} vs {expected_w}");
        }
    }
}
