//! Shape inference over the IR, checking stored weights against what each layer needs.

use crate::error::GraphError;
use crate::ir::{ConvAttrs, Model, Op, Padding2d, PoolAttrs, PoolConvention};
use crate::tensor::element_count;

/// Output shapes of every node, indexed `[node][output]`.
///
/// Nodes downstream of an operator accnn does not interpret ([`Op::Opaque`]) have no known shape:
/// their entries in `outputs` are empty and `unknown` names the opaque node responsible.
#[derive(Clone, Debug, PartialEq)]
pub struct Shapes {
    pub outputs: Vec<Vec<Vec<usize>>>,
    pub unknown: Vec<Option<usize>>,
}

impl Shapes {
    /// Shape of output 0 of `node` (empty when unknown).
    pub fn of(&self, node: usize) -> &[usize] {
        self.outputs[node].first().map_or(&[], Vec::as_slice)
    }
}

/// Output size of a sliding window along one axis (floor convention); `None` when the window does
/// not fit, or for a zero kernel, stride or dilation, or sizes that overflow.
pub fn window_output(size: usize, pad_total: usize, kernel: usize, stride: usize, dilate: usize) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilate == 0 {
        return None;
    }
    let span = dilate.checked_mul(kernel - 1)?.checked_add(1)?;
    let padded = size.checked_add(pad_total)?;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

/// Output height and width of a convolution on an `h x w` input.
pub fn conv_output_hw(c: &ConvAttrs, h: usize, w: usize) -> Option<(usize, usize)> {
    Some((
        window_output(
            h,
            c.pad.top.checked_add(c.pad.bottom)?,
            c.kernel[0],
            c.stride[0],
            c.dilate[0],
        )?,
        window_output(
            w,
            c.pad.left.checked_add(c.pad.right)?,
            c.kernel[1],
            c.stride[1],
            c.dilate[1],
        )?,
    ))
}

/// Output height and width of a pooling window on an `h x w` input, with MXNet's conventions.
pub fn pool_output_hw(p: &PoolAttrs, h: usize, w: usize) -> Option<(usize, usize)> {
    if p.global {
        return Some((1, 1));
    }
    if p.kernel.contains(&0) || p.stride.contains(&0) {
        return None;
    }
    let axis = |size: usize, pad_begin: usize, pad_total: usize, k: usize, s: usize| -> Option<usize> {
        match p.convention {
            PoolConvention::Valid => window_output(size, pad_total, k, s, 1),
            PoolConvention::Full => {
                let padded = size.checked_add(pad_total)?;
                (padded >= k).then(|| (padded - k).div_ceil(s) + 1)
            }
            PoolConvention::Ceil => {
                let padded = size.checked_add(pad_total)?;
                let n = (padded >= k).then(|| (padded - k).div_ceil(s) + 1)?;
                // The last window must start inside the input or the leading padding.
                Some(if n > 1 && (n - 1) * s >= size.saturating_add(pad_begin) {
                    n - 1
                } else {
                    n
                })
            }
            PoolConvention::Same => Some(size.div_ceil(s)),
        }
    };
    let Padding2d {
        top,
        bottom,
        left,
        right,
    } = p.pad;
    Some((
        axis(h, top, top.checked_add(bottom)?, p.kernel[0], p.stride[0])?,
        axis(w, left, left.checked_add(right)?, p.kernel[1], p.stride[1])?,
    ))
}

/// The output shape of MXNet's `Reshape` with `codes` (0 copy, -1 infer, -2 copy the rest, -3 merge
/// two) applied to `input`; `node` names the node in errors.
pub fn reshape(node: &str, input: &[usize], codes: &[i64]) -> Result<Vec<usize>, GraphError> {
    let bad = || GraphError::node(node, format!("cannot reshape {input:?} with {codes:?}"));
    let mut out: Vec<Option<usize>> = Vec::new();
    let mut src = 0usize;
    let mut i = 0;
    while i < codes.len() {
        match codes[i] {
            0 => {
                out.push(Some(*input.get(src).ok_or_else(bad)?));
                src += 1;
            }
            -1 => {
                out.push(None);
                src += 1;
            }
            -2 => {
                out.extend(input.get(src..).ok_or_else(bad)?.iter().map(|&d| Some(d)));
                src = input.len();
            }
            -3 => {
                let (a, b) = (input.get(src).ok_or_else(bad)?, input.get(src + 1).ok_or_else(bad)?);
                out.push(Some(a * b));
                src += 2;
            }
            d if d > 0 => {
                out.push(Some(d as usize));
                src += 1;
            }
            _ => return Err(bad()),
        }
        i += 1;
    }
    let total = element_count(input)?;
    let known: usize = out.iter().flatten().product();
    let unknown = out.iter().filter(|d| d.is_none()).count();
    let shape: Vec<usize> = match unknown {
        0 => out.into_iter().flatten().collect(),
        1 if known > 0 && total % known == 0 => out.into_iter().map(|d| d.unwrap_or(total / known)).collect(),
        _ => return Err(bad()),
    };
    if element_count(&shape)? != total {
        return Err(bad());
    }
    Ok(shape)
}

fn broadcast(node: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, GraphError> {
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

/// Infers every node's output shapes from the data input's shape `data_shape` (batch included),
/// checking each stored weight against the shape its layer needs.
pub fn infer_shapes(model: &Model, data_shape: &[usize]) -> Result<Shapes, GraphError> {
    infer_shapes_prefix(model, data_shape, model.graph.nodes.len())
}

/// Like [`infer_shapes`] for the first `count` nodes only: what a node's inputs are, before the
/// node itself is settled (ONNX `auto_pad`).
pub fn infer_shapes_prefix(model: &Model, data_shape: &[usize], count: usize) -> Result<Shapes, GraphError> {
    let graph = &model.graph;
    let data = model.data_input()?;
    let batch = data_shape.first().copied().unwrap_or(1);
    let mut outputs: Vec<Vec<Vec<usize>>> = Vec::with_capacity(graph.nodes.len());
    let mut unknown: Vec<Option<usize>> = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate().take(count) {
        let name = node.name.as_str();
        let blocked = match &node.op {
            Op::Opaque { .. } => Some(i),
            _ => node.inputs.iter().find_map(|e| unknown[e.node]),
        };
        if let Some(opaque) = blocked {
            if matches!(node.op, Op::Convolution(_) | Op::FullyConnected(_)) {
                let culprit = &graph.nodes[opaque];
                let Op::Opaque { op_type, .. } = &culprit.op else {
                    unreachable!("only opaque nodes block shapes")
                };
                return Err(GraphError::node(
                    name,
                    format!(
                        "the input shape of this layer depends on node '{}', whose operator '{op_type}' accnn does not support",
                        culprit.name
                    ),
                ));
            }
            outputs.push(vec![Vec::new(); node.op.mxnet_output_count()]);
            unknown.push(Some(opaque));
            continue;
        }
        unknown.push(None);
        let input = |k: usize| -> Result<&Vec<usize>, GraphError> {
            let e = node
                .inputs
                .get(k)
                .ok_or_else(|| GraphError::node(name, format!("missing input #{k}")))?;
            Ok(&outputs[e.node][e.output])
        };
        let expect_param = |k: usize, expected: &[usize], what: &str| -> Result<(), GraphError> {
            let e = node
                .inputs
                .get(k)
                .ok_or_else(|| GraphError::node(name, format!("missing {what} input")))?;
            let var = &graph.nodes[e.node];
            let Some(t) = model.param(&var.name) else {
                return Err(GraphError::node(
                    name,
                    format!("{what} '{}' is not in the params file", var.name),
                ));
            };
            if t.shape() != expected {
                return Err(GraphError::node(
                    name,
                    format!(
                        "{what} '{}' has shape {:?} in the params file, but the layer needs {expected:?}",
                        var.name,
                        t.shape()
                    ),
                ));
            }
            Ok(())
        };
        let nchw = |s: &Vec<usize>| -> Result<[usize; 4], GraphError> {
            <[usize; 4]>::try_from(s.as_slice())
                .map_err(|_| GraphError::node(name, format!("expects a 4-D NCHW input, got shape {s:?}")))
        };
        let out: Vec<Vec<usize>> = match &node.op {
            Op::Variable => {
                if i == data {
                    vec![data_shape.to_vec()]
                } else if let Some(t) = model.param(name) {
                    vec![t.shape().to_vec()]
                } else {
                    vec![vec![batch]] // a label
                }
            }
            Op::Convolution(c) => {
                let [n, ch, h, w] = nchw(input(0)?)?;
                if ch % c.num_group != 0 {
                    return Err(GraphError::node(
                        name,
                        format!("{ch} input channels do not split into {} groups", c.num_group),
                    ));
                }
                let (ho, wo) = conv_output_hw(c, h, w).ok_or_else(|| {
                    GraphError::node(name, format!("kernel {:?} does not fit input {h}x{w}", c.kernel))
                })?;
                expect_param(1, &[c.num_filter, ch / c.num_group, c.kernel[0], c.kernel[1]], "weight")?;
                if !c.no_bias {
                    expect_param(2, &[c.num_filter], "bias")?;
                }
                vec![vec![n, c.num_filter, ho, wo]]
            }
            Op::FullyConnected(f) => {
                let s = input(0)?;
                if s.is_empty() {
                    return Err(GraphError::node(name, "input is a scalar"));
                }
                let (lead, features) = if f.flatten {
                    (vec![s[0]], element_count(&s[1..])?)
                } else {
                    (s[..s.len() - 1].to_vec(), s[s.len() - 1])
                };
                expect_param(1, &[f.num_hidden, features], "weight")?;
                if !f.no_bias {
                    expect_param(2, &[f.num_hidden], "bias")?;
                }
                let mut o = lead;
                o.push(f.num_hidden);
                vec![o]
            }
            Op::Pooling(p) => {
                let [n, ch, h, w] = nchw(input(0)?)?;
                let (ho, wo) = pool_output_hw(p, h, w).ok_or_else(|| {
                    GraphError::node(name, format!("window {:?} does not fit input {h}x{w}", p.kernel))
                })?;
                vec![vec![n, ch, ho, wo]]
            }
            Op::BatchNorm(b) => {
                let s = input(0)?.clone();
                let ch = *s
                    .get(b.axis)
                    .ok_or_else(|| GraphError::node(name, "input has no channel axis"))?;
                for (k, what) in [(1, "gamma"), (2, "beta"), (3, "moving mean"), (4, "moving variance")] {
                    expect_param(k, &[ch], what)?;
                }
                vec![s, vec![ch], vec![ch]]
            }
            Op::Activation(_) | Op::Softmax { .. } | Op::SoftmaxOutput | Op::Identity => vec![input(0)?.clone()],
            Op::Mul => vec![broadcast(name, input(0)?, input(1)?)?],
            Op::Opaque { .. } => unreachable!("handled above"),
            Op::Dropout => {
                let s = input(0)?.clone();
                vec![s.clone(), s]
            }
            Op::Flatten => {
                let s = input(0)?;
                let rest = element_count(s.get(1..).unwrap_or(&[]))?;
                vec![vec![s.first().copied().unwrap_or(1), rest]]
            }
            Op::Add { broadcast: b } => {
                let (x, y) = (input(0)?, input(1)?);
                if *b {
                    vec![broadcast(name, x, y)?]
                } else if x == y {
                    vec![x.clone()]
                } else {
                    return Err(GraphError::node(
                        name,
                        format!("adds shapes {x:?} and {y:?}, which differ"),
                    ));
                }
            }
            Op::Concat { axis } => {
                let first = input(0)?.clone();
                if *axis >= first.len() {
                    return Err(GraphError::node(
                        name,
                        format!("concat axis {axis} out of range for {first:?}"),
                    ));
                }
                let mut o = first.clone();
                o[*axis] = 0;
                for k in 0..node.inputs.len() {
                    let s = input(k)?;
                    let same_rest = s.len() == first.len()
                        && s.iter().zip(&first).enumerate().all(|(d, (a, b))| d == *axis || a == b);
                    if !same_rest {
                        return Err(GraphError::node(
                            name,
                            format!("cannot concatenate {s:?} with {first:?} on axis {axis}"),
                        ));
                    }
                    o[*axis] += s[*axis];
                }
                vec![o]
            }
            Op::Reshape { shape } => vec![reshape(name, input(0)?, shape)?],
        };
        outputs.push(out);
    }
    Ok(Shapes { outputs, unknown })
}
