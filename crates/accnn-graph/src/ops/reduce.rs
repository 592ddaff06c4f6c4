//! Reductions over axes (ONNX `ReduceMean`, `ReduceSum`, `ReduceMax`, …; MXNet `mean`, `sum`, …):
//! the formula of each ([`ReduceOp::fold`], [`ReduceOp::finish`]), the output shape, and the `f64`
//! reference.

use crate::error::GraphError;

use super::context::strides;
use super::{Array, EvalContext, ShapeContext, resolve_axis};

/// How the values along the reduced axes combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    /// Sum of absolute values.
    L1,
    /// Square root of the sum of squares.
    L2,
    SumSquare,
    /// `log(sum(exp(x)))`.
    LogSumExp,
}

impl ReduceOp {
    /// The reduction ONNX operator `op_type` (`ReduceMean`, …) computes.
    pub fn from_onnx(op_type: &str) -> Option<Self> {
        Some(match op_type {
            "ReduceSum" => ReduceOp::Sum,
            "ReduceMean" => ReduceOp::Mean,
            "ReduceMax" => ReduceOp::Max,
            "ReduceMin" => ReduceOp::Min,
            "ReduceProd" => ReduceOp::Prod,
            "ReduceL1" => ReduceOp::L1,
            "ReduceL2" => ReduceOp::L2,
            "ReduceSumSquare" => ReduceOp::SumSquare,
            "ReduceLogSumExp" => ReduceOp::LogSumExp,
            _ => return None,
        })
    }

    /// Whether MXNet has this reduction (`sum`, `mean`, `max`, `min`, `prod`, `norm`).
    pub fn mxnet_supported(self) -> bool {
        !matches!(self, ReduceOp::L1 | ReduceOp::SumSquare | ReduceOp::LogSumExp)
    }

    /// Every reduction, for conformance samples.
    pub fn examples() -> Vec<ReduceOp> {
        use ReduceOp::*;
        vec![Sum, Mean, Max, Min, Prod, L1, L2, SumSquare, LogSumExp]
    }

    /// The accumulator before any value.
    pub fn start(self) -> f64 {
        match self {
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
            ReduceOp::Prod => 1.0,
            _ => 0.0,
        }
    }

    /// The accumulator after value `x`.
    pub fn fold(self, acc: f64, x: f64) -> f64 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => acc + x,
            ReduceOp::Max => acc.max(x),
            ReduceOp::Min => acc.min(x),
            ReduceOp::Prod => acc * x,
            ReduceOp::L1 => acc + x.abs(),
            ReduceOp::L2 | ReduceOp::SumSquare => acc + x * x,
            ReduceOp::LogSumExp => acc + x.exp(),
        }
    }

    /// The result from the accumulator over `count` values.
    pub fn finish(self, acc: f64, count: usize) -> f64 {
        match self {
            ReduceOp::Mean => acc / count as f64,
            ReduceOp::L2 => acc.sqrt(),
            ReduceOp::LogSumExp => acc.ln(),
            _ => acc,
        }
    }
}

/// Reduction attributes: which axes (`None`: all; negative from the end) and whether they stay as
/// size-1 axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReduceAttrs {
    pub op: ReduceOp,
    pub axes: Option<Vec<i64>>,
    pub keep_dims: bool,
}

impl ReduceAttrs {
    /// The reduced axes of a tensor of `rank` dimensions, sorted; `None` when one is out of range.
    pub fn resolved_axes(&self, rank: usize) -> Option<Vec<usize>> {
        let mut axes: Vec<usize> = match &self.axes {
            None => (0..rank).collect(),
            Some(a) => a.iter().map(|&x| resolve_axis(x, rank)).collect::<Option<_>>()?,
        };
        axes.sort_unstable();
        axes.dedup();
        Some(axes)
    }

    /// The output shape for `input`.
    pub fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let axes = self.resolved_axes(input.len())?;
        Some(
            input
                .iter()
                .enumerate()
                .filter_map(|(k, &d)| match (axes.contains(&k), self.keep_dims) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect(),
        )
    }
}

pub(crate) fn output_shapes(attrs: &ReduceAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let shape = attrs
        .output_shape(x)
        .ok_or_else(|| cx.error(format!("reduction axes {:?} out of range for {x:?}", attrs.axes)))?;
    Ok(vec![shape])
}

pub(crate) fn reference(attrs: &ReduceAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let axes = attrs
        .resolved_axes(x.shape.len())
        .ok_or_else(|| cx.error(format!("reduction axes {:?} out of range", attrs.axes)))?;
    // The kept-dims shape indexes the accumulators whether or not the output keeps the axes.
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(k, &d)| if axes.contains(&k) { 1 } else { d })
        .collect();
    let (xs, ks) = (strides(&x.shape), strides(&kept));
    let mut acc = vec![attrs.op.start(); kept.iter().product()];
    for (flat, &v) in x.data.iter().enumerate() {
        let mut target = 0;
        for (k, (&s, &d)) in xs.iter().zip(&x.shape).enumerate() {
            if !axes.contains(&k) {
                target += (flat / s) % d * ks[k];
            }
        }
        acc[target] = attrs.op.fold(acc[target], v);
    }
    let count: usize = axes.iter().map(|&k| x.shape[k]).product();
    Ok(cx.output(acc.into_iter().map(|a| attrs.op.finish(a, count)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_keep_or_drop_the_reduced_axes() {
        let attrs = |axes: Option<Vec<i64>>, keep_dims| ReduceAttrs {
            op: ReduceOp::Mean,
            axes,
            keep_dims,
        };
        assert_eq!(
            attrs(Some(vec![-1]), true).output_shape(&[2, 3, 4]),
            Some(vec![2, 3, 1])
        );
        assert_eq!(attrs(Some(vec![0, 2]), false).output_shape(&[2, 3, 4]), Some(vec![3]));
        assert_eq!(attrs(None, false).output_shape(&[2, 3, 4]), Some(vec![]));
        assert_eq!(attrs(Some(vec![3]), true).output_shape(&[2, 3, 4]), None);
    }

    #[test]
    fn formulas_give_known_values() {
        let values = [3.0, -4.0];
        let reduce = |op: ReduceOp| op.finish(values.iter().fold(op.start(), |a, &x| op.fold(a, x)), values.len());
        assert_eq!(reduce(ReduceOp::Sum), -1.0);
        assert_eq!(reduce(ReduceOp::Mean), -0.5);
        assert_eq!(reduce(ReduceOp::Max), 3.0);
        assert_eq!(reduce(ReduceOp::Min), -4.0);
        assert_eq!(reduce(ReduceOp::Prod), -12.0);
        assert_eq!(reduce(ReduceOp::L1), 7.0);
        assert_eq!(reduce(ReduceOp::L2), 5.0);
        assert_eq!(reduce(ReduceOp::SumSquare), 25.0);
        assert!((reduce(ReduceOp::LogSumExp) - (3f64.exp() + (-4f64).exp()).ln()).abs() < 1e-12);
    }
}
