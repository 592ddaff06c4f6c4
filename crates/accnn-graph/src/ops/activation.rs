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
    Exp,
    /// Natural logarithm.
    Log,
    Neg,
    Abs,
    Sqrt,
    /// `1 / x`.
    Reciprocal,
    /// `max(0, min(1, alpha * x + beta))` (ONNX defaults 0.2 and 0.5).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 1 / 2))` (MobileNetV3).
    HardSwish,
    /// `x` where positive, `alpha * (e^x - 1)` elsewhere.
    Elu {
        alpha: f32,
    },
    /// `gamma * elu(x)` with SELU's `alpha`.
    Selu {
        alpha: f32,
        gamma: f32,
    },
    /// `x * tanh(ln(1 + e^x))`.
    Mish,
    /// The Gauss error function (PyTorch's exact GELU exports as `x * 0.5 * (1 + erf(x / √2))`).
    Erf,
    /// `x * Φ(x)`, or with `tanh` its tanh approximation (ONNX `Gelu`, opset 20).
    Gelu {
        tanh: bool,
    },
    /// Logical not: 1 where `x` is 0, else 0 (ONNX `Not` on booleans read as 0 and 1).
    Not,
}

impl Activation {
    /// Whether the function is defined on every real and grows at most linearly (as `x` for Mish
    /// and GELU): its moments under a Gaussian exist and a quadrature on ±8σ finds them. Every
    /// variant is named, so a new one has to answer.
    pub fn integrable_under_gaussian(self) -> bool {
        match self {
            Activation::Relu
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::SoftRelu
            | Activation::SoftSign
            | Activation::LeakyRelu { .. }
            | Activation::Clip { .. }
            | Activation::HardSigmoid { .. }
            | Activation::HardSwish
            | Activation::Elu { .. }
            | Activation::Selu { .. }
            | Activation::Mish
            | Activation::Erf
            | Activation::Gelu { .. }
            | Activation::Neg
            | Activation::Abs => true,
            Activation::Exp | Activation::Log | Activation::Sqrt | Activation::Reciprocal | Activation::Not => false,
        }
    }

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
            Activation::Exp => x.exp(),
            Activation::Log => x.ln(),
            Activation::Neg => -x,
            Activation::Abs => x.abs(),
            Activation::Sqrt => x.sqrt(),
            Activation::Reciprocal => 1.0 / x,
            Activation::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Elu { alpha } => elu(x, alpha as f64),
            Activation::Selu { alpha, gamma } => gamma as f64 * elu(x, alpha as f64),
            Activation::Mish => x * x.exp().ln_1p().tanh(),
            Activation::Erf => erf(x),
            Activation::Gelu { tanh: false } => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::Gelu { tanh: true } => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Activation::Not => {
                if x == 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Whether the function is defined only for positive inputs (tests feed it such).
    pub fn positive_domain(self) -> bool {
        matches!(self, Activation::Log | Activation::Sqrt | Activation::Reciprocal)
    }

    /// MXNet's `act_type` of `Activation` for the functions it spells that way.
    pub fn mxnet_act_type(self) -> Option<&'static str> {
        match self {
            Activation::Relu => Some("relu"),
            Activation::Sigmoid => Some("sigmoid"),
            Activation::Tanh => Some("tanh"),
            Activation::SoftRelu => Some("softrelu"),
            Activation::SoftSign => Some("softsign"),
            _ => None,
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
            Activation::Exp,
            Activation::Log,
            Activation::Neg,
            Activation::Abs,
            Activation::Sqrt,
            Activation::Reciprocal,
            Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Activation::HardSwish,
            Activation::Elu { alpha: 1.0 },
            Activation::Selu {
                alpha: SELU_ALPHA,
                gamma: SELU_GAMMA,
            },
            Activation::Mish,
            Activation::Erf,
            Activation::Gelu { tanh: false },
            Activation::Not,
        ]
    }

    /// How many functions there are; the exhaustive match of `ordinal` keeps it honest, and a test
    /// checks that [`Self::examples`] lists each.
    #[cfg(test)]
    const COUNT: usize = 21;

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
            Activation::Exp => 7,
            Activation::Log => 8,
            Activation::Neg => 9,
            Activation::Abs => 10,
            Activation::Sqrt => 11,
            Activation::Reciprocal => 12,
            Activation::HardSigmoid { .. } => 13,
            Activation::HardSwish => 14,
            Activation::Elu { .. } => 15,
            Activation::Selu { .. } => 16,
            Activation::Mish => 17,
            Activation::Erf => 18,
            Activation::Gelu { .. } => 19,
            Activation::Not => 20,
        }
    }
}

/// ONNX's default SELU constants.
pub const SELU_ALPHA: f32 = 1.673_263_2;
pub const SELU_GAMMA: f32 = 1.050_701;

/// The error function to about 1e-14: its Taylor series below 3 (terms peak near 170, so the
/// cancellation costs two digits), else `1 - erfc` from erfc's continued fraction.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let value = if a < 3.0 {
        let (mut term, mut sum) = (a, a);
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(a) = e^(-a²)/√π · 1/(a + 1/2 / (a + 1 / (a + 3/2 / (a + ...)))), evaluated from the tail.
        let mut fraction = 0.0;
        for k in (1..60).rev() {
            fraction = (k as f64 / 2.0) / (a + fraction);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction)
    };
    value.copysign(x)
}

fn elu(x: f64, alpha: f64) -> f64 {
    if x > 0.0 { x } else { alpha * x.exp_m1() }
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
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * (1.0 + b.abs());
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
            (Activation::Exp, 2f64.ln(), 2.0),
            (Activation::Log, std::f64::consts::E, 1.0),
            (Activation::Neg, 2.5, -2.5),
            (Activation::Abs, -2.5, 2.5),
            (Activation::Sqrt, 6.25, 2.5),
            (Activation::Reciprocal, 4.0, 0.25),
            (Activation::HardSigmoid { alpha: 0.2, beta: 0.5 }, 1.0, 0.7),
            (Activation::HardSigmoid { alpha: 0.2, beta: 0.5 }, 5.0, 1.0),
            (Activation::HardSwish, 3.0, 3.0),
            (Activation::HardSwish, -1.5, -0.375),
            (Activation::HardSwish, -4.0, 0.0),
            (Activation::Elu { alpha: 2.0 }, -(2f64.ln()), -1.0),
            (Activation::Elu { alpha: 2.0 }, 3.0, 3.0),
            (Activation::Selu { alpha: 2.0, gamma: 0.5 }, -(2f64.ln()), -0.5),
            (Activation::Mish, 0.0, 0.0),
            // softplus(ln 3) = ln 4; tanh(ln 4) = 15/17.
            (Activation::Mish, 3f64.ln(), 3f64.ln() * 15.0 / 17.0),
            // Tabulated values (Abramowitz and Stegun, table 7.1) on both sides of the switch at 3.
            (Activation::Erf, 0.5, 0.520_499_877_813_047),
            (Activation::Erf, -1.0, -0.842_700_792_949_715),
            (Activation::Erf, 2.9, 0.999_958_902_121_900),
            (Activation::Erf, 3.5, 0.999_999_256_901_628),
            (Activation::Gelu { tanh: false }, 1.0, 0.841_344_746_068_543),
            (Activation::Gelu { tanh: true }, 1.0, 0.841_191_990_608_367),
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
