//! Elementwise binary operators with numpy-style broadcasting. Everything about one operator is
//! here: its formula (the reference and the engine's generic path evaluate it), its names, and its
//! entry in [`BinaryOp::examples`], which the engine-vs-reference suite runs over.

use crate::error::GraphError;

use super::context::strides;
use super::{Array, EvalContext, ShapeContext};

/// A binary elementwise operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `a` to the power `b`.
    Pow,
    Min,
    Max,
    /// `a` where positive, `b * a` elsewhere (a learned slope, broadcast to `a`: ONNX PRelu).
    PRelu,
    /// Comparisons and logical connectives give 1 for true and 0 for false (accnn's tensors are
    /// floats; ONNX's booleans read as 0 and 1); logical ones take any non-zero as true.
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    /// The operator on `a` and `b`, in `f64`.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::PRelu => {
                if a > 0.0 {
                    a
                } else {
                    a * b
                }
            }
            BinaryOp::Equal => truth(a == b),
            BinaryOp::Less => truth(a < b),
            BinaryOp::LessOrEqual => truth(a <= b),
            BinaryOp::Greater => truth(a > b),
            BinaryOp::GreaterOrEqual => truth(a >= b),
            BinaryOp::And => truth(a != 0.0 && b != 0.0),
            BinaryOp::Or => truth(a != 0.0 || b != 0.0),
            BinaryOp::Xor => truth((a != 0.0) != (b != 0.0)),
        }
    }

    /// The MXNet operator name, broadcasting or not (MXNet's `elemwise_*` need equal shapes).
    pub fn mxnet_name(self, broadcast: bool) -> &'static str {
        match (self, broadcast) {
            (BinaryOp::Add, false) => "elemwise_add",
            (BinaryOp::Add, true) => "broadcast_add",
            (BinaryOp::Sub, false) => "elemwise_sub",
            (BinaryOp::Sub, true) => "broadcast_sub",
            (BinaryOp::Mul, _) => "broadcast_mul",
            (BinaryOp::Div, _) => "broadcast_div",
            (BinaryOp::Pow, _) => "broadcast_power",
            (BinaryOp::Min, _) => "broadcast_minimum",
            (BinaryOp::Max, _) => "broadcast_maximum",
            (BinaryOp::PRelu, _) => "LeakyReLU",
            (BinaryOp::Equal, _) => "broadcast_equal",
            (BinaryOp::Less, _) => "broadcast_lesser",
            (BinaryOp::LessOrEqual, _) => "broadcast_lesser_equal",
            (BinaryOp::Greater, _) => "broadcast_greater",
            (BinaryOp::GreaterOrEqual, _) => "broadcast_greater_equal",
            (BinaryOp::And, _) => "broadcast_logical_and",
            (BinaryOp::Or, _) => "broadcast_logical_or",
            (BinaryOp::Xor, _) => "broadcast_logical_xor",
        }
    }

    /// The operator (and whether it broadcasts) an MXNet operator name means.
    pub fn from_mxnet_name(name: &str) -> Option<(Self, bool)> {
        Some(match name {
            "elemwise_add" | "_Plus" | "_plus" | "_add" => (BinaryOp::Add, false),
            "broadcast_add" | "broadcast_plus" => (BinaryOp::Add, true),
            "elemwise_sub" | "_Minus" | "_minus" | "_sub" => (BinaryOp::Sub, false),
            "broadcast_sub" | "broadcast_minus" => (BinaryOp::Sub, true),
            "broadcast_mul" | "elemwise_mul" | "_mul" | "_Mul" => (BinaryOp::Mul, true),
            "broadcast_div" | "elemwise_div" | "_div" | "_Div" => (BinaryOp::Div, true),
            "broadcast_power" | "_power" | "_Power" => (BinaryOp::Pow, true),
            "broadcast_minimum" | "_minimum" => (BinaryOp::Min, true),
            "broadcast_maximum" | "_maximum" => (BinaryOp::Max, true),
            "broadcast_equal" | "_equal" => (BinaryOp::Equal, true),
            "broadcast_lesser" | "_lesser" => (BinaryOp::Less, true),
            "broadcast_lesser_equal" | "_lesser_equal" => (BinaryOp::LessOrEqual, true),
            "broadcast_greater" | "_greater" => (BinaryOp::Greater, true),
            "broadcast_greater_equal" | "_greater_equal" => (BinaryOp::GreaterOrEqual, true),
            "broadcast_logical_and" | "_logical_and" => (BinaryOp::And, true),
            "broadcast_logical_or" | "_logical_or" => (BinaryOp::Or, true),
            "broadcast_logical_xor" | "_logical_xor" => (BinaryOp::Xor, true),
            _ => return None,
        })
    }

    /// The ONNX operator of this name.
    pub fn from_onnx(op_type: &str) -> Option<Self> {
        Some(match op_type {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            "Div" => BinaryOp::Div,
            "Pow" => BinaryOp::Pow,
            "Min" => BinaryOp::Min,
            "Max" => BinaryOp::Max,
            "PRelu" => BinaryOp::PRelu,
            "Equal" => BinaryOp::Equal,
            "Less" => BinaryOp::Less,
            "LessOrEqual" => BinaryOp::LessOrEqual,
            "Greater" => BinaryOp::Greater,
            "GreaterOrEqual" => BinaryOp::GreaterOrEqual,
            "And" => BinaryOp::And,
            "Or" => BinaryOp::Or,
            "Xor" => BinaryOp::Xor,
            _ => return None,
        })
    }

    /// Every operator, for tests that must cover them all.
    pub fn examples() -> Vec<BinaryOp> {
        vec![
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Pow,
            BinaryOp::Min,
            BinaryOp::Max,
            BinaryOp::PRelu,
            BinaryOp::Equal,
            BinaryOp::Less,
            BinaryOp::LessOrEqual,
            BinaryOp::Greater,
            BinaryOp::GreaterOrEqual,
            BinaryOp::And,
            BinaryOp::Or,
            BinaryOp::Xor,
        ]
    }

    /// Whether the result is a truth value (0 or 1), as ONNX's boolean outputs are.
    pub fn is_boolean(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::LessOrEqual
                | BinaryOp::Greater
                | BinaryOp::GreaterOrEqual
                | BinaryOp::And
                | BinaryOp::Or
                | BinaryOp::Xor
        )
    }

    /// The verb of an error about mismatched shapes.
    fn verb(self) -> &'static str {
        match self {
            BinaryOp::Add => "adds",
            BinaryOp::Sub => "subtracts",
            BinaryOp::Mul => "multiplies",
            BinaryOp::Div => "divides",
            BinaryOp::Pow => "raises",
            BinaryOp::Min => "takes the minimum of",
            BinaryOp::Max => "takes the maximum of",
            BinaryOp::PRelu => "scales the negatives of",
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::LessOrEqual | BinaryOp::Greater | BinaryOp::GreaterOrEqual => {
                "compares"
            }
            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => "combines",
        }
    }
}

/// 1 for true, 0 for false.
fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The broadcast shape of `a` and `b`; `node` names the node in errors.
pub fn broadcast(node: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, GraphError> {
    let n = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, n - s.len()).chain(s.iter().copied()).collect() };
    let (a2, b2) = (pad(a), pad(b));
    a2.iter()
        .zip(&b2)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(GraphError::node(node, format!("cannot broadcast {a:?} with {b:?}"))),
        })
        .collect()
}

/// The output shape, broadcasting only when `broadcasting` (MXNet's `elemwise_*` need equal shapes).
pub(crate) fn output_shapes(
    op: BinaryOp,
    broadcasting: bool,
    cx: &ShapeContext,
) -> Result<Vec<Vec<usize>>, GraphError> {
    let mut out = cx.input(0)?.to_vec();
    for k in 1..cx.input_count().max(2) {
        let y = cx.input(k)?;
        out = if broadcasting {
            broadcast(cx.name(), &out, y)?
        } else if out == y {
            out
        } else {
            return Err(cx.error(format!("{} shapes {out:?} and {y:?}, which differ", op.verb())));
        };
    }
    Ok(vec![out])
}

/// The value of `arr` broadcast to `out_shape` (row-major strides `os`) at flat output index `idx`.
fn broadcast_value(arr: &Array, out_shape: &[usize], os: &[usize], idx: usize) -> f64 {
    let off = out_shape.len() - arr.shape.len();
    let st = strides(&arr.shape);
    let mut flat = 0;
    for (d, &dim) in arr.shape.iter().enumerate() {
        let coord = (idx / os[d + off]) % out_shape[d + off];
        flat += if dim == 1 { 0 } else { coord * st[d] };
    }
    arr.data[flat]
}

/// The operator elementwise over the broadcast output, folded left over the inputs (ONNX's `Sum`,
/// `Max` and `Min` take any number).
pub(crate) fn reference(op: BinaryOp, cx: &EvalContext) -> Result<Array, GraphError> {
    let out_shape = cx.output_shape();
    let os = strides(out_shape);
    let pick = |arr: &Array, idx: usize| broadcast_value(arr, out_shape, &os, idx);
    let args: Vec<&Array> = (0..cx.input_count()).map(|k| cx.arg(k)).collect::<Result<_, _>>()?;
    let (first, rest) = args.split_first().ok_or_else(|| cx.error("no inputs"))?;
    let n: usize = out_shape.iter().product();
    Ok(cx.output(
        (0..n)
            .map(|i| rest.iter().fold(pick(first, i), |acc, a| op.apply(acc, pick(a, i))))
            .collect(),
    ))
}

/// `Where`'s output shape: its three inputs broadcast together.
pub(crate) fn where_shapes(cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    if cx.input_count() != 3 {
        return Err(cx.error(format!("takes 3 inputs, not {}", cx.input_count())));
    }
    let shape = broadcast(cx.name(), cx.input(0)?, cx.input(1)?)?;
    Ok(vec![broadcast(cx.name(), &shape, cx.input(2)?)?])
}

/// ONNX `Where`: the second input where the first is non-zero, else the third, all broadcast.
pub(crate) fn where_reference(cx: &EvalContext) -> Result<Array, GraphError> {
    let out_shape = cx.output_shape();
    let os = strides(out_shape);
    let pick = |arr: &Array, idx: usize| broadcast_value(arr, out_shape, &os, idx);
    let (c, x, y) = (cx.arg(0)?, cx.arg(1)?, cx.arg(2)?);
    let n: usize = out_shape.iter().product();
    Ok(cx.output(
        (0..n)
            .map(|i| if pick(c, i) != 0.0 { pick(x, i) } else { pick(y, i) })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive, so that a new operator must be counted here and then listed in `examples`.
    fn ordinal(op: BinaryOp) -> usize {
        match op {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
            BinaryOp::Pow => 4,
            BinaryOp::Min => 5,
            BinaryOp::Max => 6,
            BinaryOp::PRelu => 7,
            BinaryOp::Equal => 8,
            BinaryOp::Less => 9,
            BinaryOp::LessOrEqual => 10,
            BinaryOp::Greater => 11,
            BinaryOp::GreaterOrEqual => 12,
            BinaryOp::And => 13,
            BinaryOp::Or => 14,
            BinaryOp::Xor => 15,
        }
    }

    #[test]
    fn examples_cover_every_operator_and_names_round_trip() {
        let mut seen: Vec<usize> = BinaryOp::examples().into_iter().map(ordinal).collect();
        seen.sort();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
        for op in BinaryOp::examples() {
            assert_eq!(BinaryOp::from_onnx(&format!("{op:?}")), Some(op));
            // MXNet's PReLU slopes are per channel, not a broadcasting binary operator.
            if op == BinaryOp::PRelu {
                continue;
            }
            for broadcast in [false, true] {
                let (back, b) = BinaryOp::from_mxnet_name(op.mxnet_name(broadcast)).unwrap();
                assert_eq!(back, op);
                assert!(b || !broadcast);
            }
        }
    }

    #[test]
    fn definitions_give_known_values() {
        let cases = [
            (BinaryOp::Add, 2.0, 3.0, 5.0),
            (BinaryOp::Sub, 2.0, 3.0, -1.0),
            (BinaryOp::Mul, 2.0, 3.0, 6.0),
            (BinaryOp::Div, 3.0, 2.0, 1.5),
            (BinaryOp::Pow, 4.0, 0.5, 2.0),
            (BinaryOp::Pow, -2.0, 3.0, -8.0),
            (BinaryOp::Min, 2.0, -3.0, -3.0),
            (BinaryOp::Max, 2.0, -3.0, 2.0),
            (BinaryOp::PRelu, 2.0, 0.25, 2.0),
            (BinaryOp::PRelu, -2.0, 0.25, -0.5),
            (BinaryOp::Equal, 2.0, 2.0, 1.0),
            (BinaryOp::Equal, 2.0, -2.0, 0.0),
            (BinaryOp::Less, -1.0, 0.5, 1.0),
            (BinaryOp::Less, 0.5, 0.5, 0.0),
            (BinaryOp::LessOrEqual, 0.5, 0.5, 1.0),
            (BinaryOp::Greater, 0.5, 0.5, 0.0),
            (BinaryOp::Greater, 1.0, 0.5, 1.0),
            (BinaryOp::GreaterOrEqual, 0.5, 0.5, 1.0),
            (BinaryOp::And, 1.0, 0.0, 0.0),
            (BinaryOp::And, 2.0, -1.0, 1.0),
            (BinaryOp::Or, 0.0, 0.0, 0.0),
            (BinaryOp::Or, 0.0, 3.0, 1.0),
            (BinaryOp::Xor, 1.0, 1.0, 0.0),
            (BinaryOp::Xor, 1.0, 0.0, 1.0),
        ];
        for (op, a, b, want) in cases {
            assert_eq!(op.apply(a, b), want, "{op:?}({a}, {b})");
        }
    }
}
