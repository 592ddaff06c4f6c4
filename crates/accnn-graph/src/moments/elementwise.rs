//! Moments of elementwise functions of one tensor, by quadrature over that tensor's Gaussian.
//!
//! Mobile networks write their activations as small subgraphs: hard-swish as
//! `x * Clip(x + 3, 0, 6) / 6`, squeeze-excitation gates as a sigmoid or hard-sigmoid times the
//! features. The two factors of such a product are functions of the same `x`, far from
//! independent (for `x ~ N(0, 1)`, `E[x · Clip(x + 3, 0, 6)] ≈ 1` where independence says 0). So
//! every tensor an elementwise chain computes from one *source* tensor keeps that chain as an
//! expression of the source's value, and its moments are those of the expression under the
//! source's per-channel Gaussian, integrated numerically. Products of tensors from different
//! sources (a gate computed from pooled features) have no rule.

use std::rc::Rc;

use crate::ir::{Activation, Model, Node, Op};
use crate::ops::elementwise::BinaryOp;

use super::ChannelMoments;

/// A scalar function of the source's value `t` in channel `c`.
#[derive(Debug)]
pub(super) enum Expr {
    Source,
    Activation(Activation, Rc<Expr>),
    /// `scale · inner + shift`, each one value or one per channel.
    Affine {
        scale: Vec<f64>,
        shift: Vec<f64>,
        inner: Rc<Expr>,
    },
    /// Two functions of the same source combined: `Add`, `Sub` or `Mul`.
    Combine(BinaryOp, Rc<Expr>, Rc<Expr>),
}

impl Expr {
    fn at(&self, t: f64, c: usize) -> f64 {
        match self {
            Expr::Source => t,
            Expr::Activation(a, inner) => a.apply(inner.at(t, c)),
            Expr::Affine { scale, shift, inner } => channel_value(scale, c) * inner.at(t, c) + channel_value(shift, c),
            Expr::Combine(op, a, b) => op.apply(a.at(t, c), b.at(t, c)),
        }
    }
}

/// How a node's moments follow from its lineage.
pub(super) enum Rule {
    /// The operator's own closed form (ReLU) in the caller's rules.
    ClosedForm,
    /// `scale · x + shift` of the moments of node `input` (a stored constant on one side).
    Affine { input: usize },
    /// Integrated over the source's Gaussian (smooth activations, products of one source).
    Integrate,
}

/// A tensor as an elementwise function of the tensor computed by node `source`.
#[derive(Clone, Debug)]
pub(super) struct Lineage {
    pub source: usize,
    pub expr: Rc<Expr>,
}

/// Value `c` of per-channel values `v`, or its one value when it holds one.
fn channel_value(v: &[f64], c: usize) -> f64 {
    v[if v.len() == 1 { 0 } else { c }]
}

/// A stored tensor as per-channel values for `channels` channels: one value, or one per channel
/// with every other axis 1 (axis 1 of an NCHW tensor).
fn per_channel_values(t: &crate::tensor::Tensor, channels: usize) -> Option<Vec<f64>> {
    let values = t.data();
    let per_channel = values.len() == channels && t.shape().iter().filter(|&&d| d != 1).count() <= 1;
    (values.len() == 1 || per_channel).then(|| values.iter().map(|&v| v as f64).collect())
}

/// How node `index` computes its value as an elementwise function of one source, if it does, and
/// how its moments are found.
pub(super) fn lineage(
    model: &Model,
    index: usize,
    channels: usize,
    lineages: &[Option<Lineage>],
) -> Option<(Lineage, Rule)> {
    let node: &Node = &model.graph.nodes[index];
    let param = |k: usize| model.param(&model.graph.nodes[node.inputs.get(k)?.node].name);
    // An input's lineage, or the input itself as a source.
    let of = |k: usize| -> Option<Lineage> {
        let e = node.inputs.get(k)?;
        if e.output != 0 {
            return None;
        }
        Some(lineages.get(e.node).cloned().flatten().unwrap_or(Lineage {
            source: e.node,
            expr: Rc::new(Expr::Source),
        }))
    };
    match &node.op {
        Op::Activation(a) if a.integrable_under_gaussian() => {
            let x = of(0)?;
            let expr = Rc::new(Expr::Activation(*a, x.expr));
            let rule = if *a == Activation::Relu {
                Rule::ClosedForm
            } else {
                Rule::Integrate
            };
            Some((Lineage { source: x.source, expr }, rule))
        }
        Op::Binary { op, .. } => {
            let (p0, p1) = (param(0), param(1));
            match (op, p0, p1) {
                // A stored constant on one side: affine when it scales or shifts.
                (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div, None, Some(k))
                | (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul, Some(k), None) => {
                    let x_first = p1.is_some();
                    let k = per_channel_values(k, channels)?;
                    let zero = vec![0.0];
                    let (scale, shift) = match (op, x_first) {
                        (BinaryOp::Add, _) => (vec![1.0], k),
                        (BinaryOp::Sub, true) => (vec![1.0], k.iter().map(|v| -v).collect()),
                        (BinaryOp::Sub, false) => (vec![-1.0], k),
                        (BinaryOp::Mul, _) => (k, zero),
                        _ if k.iter().all(|&v| v != 0.0) => (k.iter().map(|v| 1.0 / v).collect(), zero),
                        _ => return None,
                    };
                    let k = if x_first { 0 } else { 1 };
                    let x = of(k)?;
                    let expr = Rc::new(Expr::Affine {
                        scale,
                        shift,
                        inner: x.expr,
                    });
                    let input = node.inputs[k].node;
                    Some((Lineage { source: x.source, expr }, Rule::Affine { input }))
                }
                // Two functions of one source: their moments need the joint law, the quadrature's.
                (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul, None, None) => {
                    let (a, b) = (of(0)?, of(1)?);
                    if a.source != b.source {
                        return None;
                    }
                    let expr = Rc::new(Expr::Combine(*op, a.expr, b.expr));
                    Some((Lineage { source: a.source, expr }, Rule::Integrate))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Points and weights of the quadrature against the standard normal density: a trapezoid rule on
/// `[-8, 8]` (beyond it the density is under 1e-14), fine enough that kinks (clip, ReLU) cost
/// under 1e-5 relative. Made once.
fn normal_rule() -> &'static (Vec<f64>, Vec<f64>) {
    static RULE: std::sync::OnceLock<(Vec<f64>, Vec<f64>)> = std::sync::OnceLock::new();
    RULE.get_or_init(|| {
        const POINTS: usize = 1601;
        const REACH: f64 = 8.0;
        let step = 2.0 * REACH / (POINTS - 1) as f64;
        let t: Vec<f64> = (0..POINTS).map(|i| -REACH + i as f64 * step).collect();
        let mut w: Vec<f64> = t.iter().map(|&x| (-0.5 * x * x).exp()).collect();
        w[0] *= 0.5;
        w[POINTS - 1] *= 0.5;
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= total);
        (t, w)
    })
}

/// The moments of an affine `expr` (`scale · x + shift`) of a tensor with moments `x`.
pub(super) fn affine(expr: &Expr, x: &ChannelMoments) -> Option<ChannelMoments> {
    let Expr::Affine { scale, shift, .. } = expr else {
        return None;
    };
    let channels = x.channels();
    let fits = |v: &[f64]| v.len() == 1 || v.len() == channels;
    if !fits(scale) || !fits(shift) {
        return None;
    }
    let (mean, variance) = (0..channels)
        .map(|c| {
            let k = channel_value(scale, c);
            (k * x.mean[c] + channel_value(shift, c), k * k * x.variance[c])
        })
        .unzip();
    Some(ChannelMoments { mean, variance })
}

/// Mean and variance of `expr` of a channel-wise Gaussian with the source's `moments`.
pub(super) fn integrate(expr: &Expr, moments: &ChannelMoments, channels: usize) -> Option<ChannelMoments> {
    if moments.channels() != channels {
        return None;
    }
    let (t, w) = normal_rule();
    let mut mean = Vec::with_capacity(channels);
    let mut variance = Vec::with_capacity(channels);
    for c in 0..channels {
        let (m, s) = (moments.mean[c], moments.variance[c].max(0.0).sqrt());
        let (mut s1, mut s2) = (0.0, 0.0);
        if s == 0.0 {
            let y = expr.at(m, c);
            (s1, s2) = (y, y * y);
        } else {
            for (&ti, &wi) in t.iter().zip(w) {
                let y = expr.at(m + s * ti, c);
                s1 += wi * y;
                s2 += wi * y * y;
            }
        }
        if !s1.is_finite() || !s2.is_finite() {
            return None;
        }
        mean.push(s1);
        variance.push((s2 - s1 * s1).max(0.0));
    }
    Some(ChannelMoments { mean, variance })
}
