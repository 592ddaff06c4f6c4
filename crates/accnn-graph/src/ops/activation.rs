//! Elementwise unary functions (activations). Everything about one function is here: its formula
//! (which both the reference interpreter and the engine's generic path evaluate), its MXNet name,
//! and its entry in [`Activation::examples`], which the engine-vs-reference suite runs over. Adding
//! one is a variant here plus a line in each importer that reads it.

use crate::error::GraphError;

use super::{Array, EvalContext, ShapeContext};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    /// `ln(1 + e^x)` (ONNX Softplus).
    SoftRelu,
    /// `x / (1 + |x|)`.
    SoftSign,
    /// `x` where positive, `slope * x` elsewhere.
    LeakyRelu {
        slope: f32,
    },
    /// `x` limited to `[min, max]` (ReLU6 is `Clip { min: 0, max: 6 }`).
    Clip {
        min: f32,
        max: f32,
    },
}

impl Activation {
    /// The function at `x`, in `f64`: the definition both the reference and the engine follow.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::SoftRelu => x.exp().ln_1p(),
            Activation::SoftSign => x / (1.0 + x.abs()),
            Activation::LeakyRelu { slope } => {
                if x > 0.0 {
                    x
                } else {
                    x * slope as f64
                }
            }
            Activation::Clip { min, max } => x.max(min as f64).min(max as f64),
        }
    }

    /// MXNet's `act_type` of `Activation` for the functions it spells that way.
    pub fn mxnet_act_type(self) -> Option<&'static str> {
        match self {
            Activation::Relu => Some("relu"),
            Activation::Sigmoid => Some("sigmoid"),
            Activation::Tanh => Some("tanh"),
            Activation::SoftRelu => Some("softrelu"),
            Activation::SoftSign => Some("softsign"),
            Activation::LeakyRelu { .. } | Activation::Clip { .. } => None,
        }
    }

    /// The function whose MXNet `act_type` is `name`.
    pub fn from_mxnet_act_type(name: &str) -> Option<Self> {
        Self::examples().into_iter().find(|a| a.mxnet_act_type() == Some(name))
    }

    /// One instance of every function (with typical parameters), for tests that must cover them all.
    pub fn examples() -> Vec<Activation> {
        vec![
            Activation::Relu,
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::SoftRelu,
            Activation::SoftSign,
            Activation::LeakyRelu { slope: 0.1 },
            Activation::Clip { min: -0.5, max: 6.0 },
        ]
    }

    /// How many functions there are; the exhaustive match of `ordinal` keeps it honest, and a test
    /// checks that [`Self::examples`] lists each.
    #[cfg(test)]
    const COUNT: usize = 7;

    #[cfg(test)]
    fn ordinal(self) -> usize {
        match self {
            Activation::Relu => 0,
            Activation::Sigmoid => 1,
            Activation::Tanh => 2,
            Activation::SoftRelu => 3,
            Activation::SoftSign => 4,
            Activation::LeakyRelu { .. } => 5,
            Activation::Clip { .. } => 6,
        }
    }
}

pub(crate) fn output_shapes(cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    Ok(vec![cx.input(0)?.to_vec()])
}

pub(crate) fn reference(a: Activation, cx: &EvalContext) -> Result<Array, GraphError> {
    Ok(cx.output(cx.arg(0)?.data.iter().map(|&v| a.apply(v)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_cover_every_function_once() {
        let all = Activation::examples();
        assert_eq!(all.len(), Activation::COUNT);
        let mut seen: Vec<usize> = all.iter().map(|a| a.ordinal()).collect();
        seen.sort();
        assert_eq!(seen, (0..Activation::COUNT).collect::<Vec<_>>());
    }

    /// The definitions against values computed by hand: the engine's generic path evaluates these
    /// same definitions, so they are checked here independently.
    #[test]
    fn definitions_give_known_values() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let cases = [
            (Activation::Relu, -2.0, 0.0),
            (Activation::Relu, 3.0, 3.0),
            (Activation::Sigmoid, 0.0, 0.5),
            (Activation::Sigmoid, 2f64.ln(), 2.0 / 3.0),
            (Activation::Tanh, 0.5f64.atanh(), 0.5),
            (Activation::SoftRelu, 0.0, 2f64.ln()),
            (Activation::SoftRelu, 3f64.ln(), 4f64.ln()),
            (Activation::SoftSign, 3.0, 0.75),
            (Activation::SoftSign, -1.0, -0.5),
            (Activation::LeakyRelu { slope: 0.25 }, -4.0, -1.0),
            (Activation::LeakyRelu { slope: 0.25 }, 4.0, 4.0),
            (Activation::Clip { min: -0.5, max: 6.0 }, 7.0, 6.0),
            (Activation::Clip { min: -0.5, max: 6.0 }, -1.0, -0.5),
        ];
        for (a, x, want) in cases {
            assert!(close(a.apply(x), want), "{a:?}({x}) = {} != {want}", a.apply(x));
        }
    }

    #[test]
    fn mxnet_names_round_trip() {
        for a in Activation::examples() {
            if let Some(name) = a.mxnet_act_type() {
                assert_eq!(Activation::from_mxnet_act_type(name), Some(a));
            }
        }
    }
}
