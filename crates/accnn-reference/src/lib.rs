//! A direct `f64` interpreter of the accnn IR, written for clarity, not speed: every convolution is
//! the textbook seven-deep loop. Tests use it as an independent oracle for decompositions, rewrites
//! and faster engines.
//!
//! ```
//! # use accnn_graph::{Model, Graph, Node, Op, Entry, Tensor, ir::{FcAttrs}};
//! # let node = |name: &str, op, inputs| Node { name: name.into(), op, inputs, attrs: Default::default() };
//! # let mut model = Model::default();
//! # model.graph.nodes = vec![
//! #     node("data", Op::Variable, vec![]),
//! #     node("w", Op::Variable, vec![]),
//! #     node("fc", Op::FullyConnected(FcAttrs { num_hidden: 1, no_bias: true, flatten: true }),
//! #          vec![Entry::new(0), Entry::new(1)]),
//! # ];
//! # model.graph.heads = vec![Entry::new(2)];
//! # model.args.insert("w".into(), Tensor::new(vec![1, 2], vec![2.0, 3.0]).unwrap());
//! let out = accnn_reference::evaluate(&model, &accnn_reference::Array::new(vec![1, 2], vec![1.0, 1.0])).unwrap();
//! assert_eq!(out[0].data, vec![5.0]);
//! ```

use accnn_graph::ir::{Activation, PoolKind};
use accnn_graph::shape::infer_shapes;
use accnn_graph::{GraphError, Model, Op};

/// A dense row-major `f64` array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "array data does not fill its shape"
        );
        Array { shape, data }
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Runs the model on `input` (the data input's value) and returns the values of its heads.
pub fn evaluate(model: &Model, input: &Array) -> Result<Vec<Array>, GraphError> {
    let shapes = infer_shapes(model, &input.shape)?;
    let data = model.data_input()?;
    let graph = &model.graph;
    let mut values: Vec<Option<Array>> = vec![None; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let arg = |k: usize| -> &Array { values[node.inputs[k].node].as_ref().expect("inputs come first") };
        let param = |k: usize| -> Vec<f64> {
            let name = &graph.nodes[node.inputs[k].node].name;
            model
                .param(name)
                .map(|t| t.data().iter().map(|&v| v as f64).collect())
                .unwrap_or_default()
        };
        let out_shape = shapes.of(i).to_vec();
        let n_out: usize = out_shape.iter().product();
        let value = match &node.op {
            Op::Variable => {
                if i == data {
                    input.clone()
                } else {
                    let v = param_or_zero(model, &node.name, &out_shape);
                    Array::new(out_shape, v)
                }
            }
            Op::Convolution(c) => {
                let x = arg(0);
                let w = param(1);
                let bias = if c.no_bias { vec![0.0; c.num_filter] } else { param(2) };
                let (n, ch, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
                let (ho, wo) = (out_shape[2], out_shape[3]);
                let (cg, fg) = (ch / c.num_group, c.num_filter / c.num_group);
                let [kh, kw] = c.kernel;
                let mut out = vec![0.0; n_out];
                for b in 0..n {
                    for f in 0..c.num_filter {
                        let g = f / fg;
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let mut acc = bias[f];
                                for cl in 0..cg {
                                    let cin = g * cg + cl;
                                    for ky in 0..kh {
                                        let iy = (oy * c.stride[0] + ky * c.dilate[0]) as isize - c.pad.top as isize;
                                        if iy < 0 || iy >= h as isize {
                                            continue;
                                        }
                                        for kx in 0..kw {
                                            let ix =
                                                (ox * c.stride[1] + kx * c.dilate[1]) as isize - c.pad.left as isize;
                                            if ix < 0 || ix >= wd as isize {
                                                continue;
                                            }
                                            acc += w[((f * cg + cl) * kh + ky) * kw + kx]
                                                * x.data[((b * ch + cin) * h + iy as usize) * wd + ix as usize];
                                        }
                                    }
                                }
                                out[((b * c.num_filter + f) * ho + oy) * wo + ox] = acc;
                            }
                        }
                    }
                }
                Array::new(out_shape, out)
            }
            Op::FullyConnected(f) => {
                let x = arg(0);
                let w = param(1);
                let bias = if f.no_bias { vec![0.0; f.num_hidden] } else { param(2) };
                let features = w.len() / f.num_hidden;
                let rows = x.data.len() / features;
                let mut out = vec![0.0; rows * f.num_hidden];
                for r in 0..rows {
                    for o in 0..f.num_hidden {
                        out[r * f.num_hidden + o] = bias[o]
                            + (0..features)
                                .map(|m| w[o * features + m] * x.data[r * features + m])
                                .sum::<f64>();
                    }
                }
                Array::new(out_shape, out)
            }
            Op::Activation(a) => {
                let f = |v: f64| match a {
                    Activation::Relu => v.max(0.0),
                    Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Activation::Tanh => v.tanh(),
                    Activation::SoftRelu => v.exp().ln_1p(),
                    Activation::SoftSign => v / (1.0 + v.abs()),
                    Activation::LeakyRelu { slope } => {
                        if v > 0.0 {
                            v
                        } else {
                            v * *slope as f64
                        }
                    }
                    Activation::Clip { min, max } => v.max(*min as f64).min(*max as f64),
                };
                Array::new(out_shape, arg(0).data.iter().map(|&v| f(v)).collect())
            }
            Op::Pooling(p) => {
                let x = arg(0);
                let (n, ch, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
                let (ho, wo) = (out_shape[2], out_shape[3]);
                let (kernel, stride, pad, end) = if p.global {
                    ([h, wd], [1, 1], [0, 0], [h, wd])
                } else {
                    (
                        p.kernel,
                        p.stride,
                        [p.pad.top, p.pad.left],
                        [h + p.pad.bottom, wd + p.pad.right],
                    )
                };
                let mut out = vec![0.0; n_out];
                for b in 0..n {
                    for c in 0..ch {
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let y0 = (oy * stride[0]) as isize - pad[0] as isize;
                                let x0 = (ox * stride[1]) as isize - pad[1] as isize;
                                let y1 = (y0 + kernel[0] as isize).min(end[0] as isize);
                                let x1 = (x0 + kernel[1] as isize).min(end[1] as isize);
                                let padded_area = ((y1 - y0) * (x1 - x0)) as f64;
                                let (ya, yb) = (y0.max(0), y1.min(h as isize));
                                let (xa, xb) = (x0.max(0), x1.min(wd as isize));
                                let mut best = f64::NEG_INFINITY;
                                let mut sum = 0.0;
                                for y in ya..yb {
                                    for xx in xa..xb {
                                        let v = x.data[((b * ch + c) * h + y as usize) * wd + xx as usize];
                                        best = best.max(v);
                                        sum += v;
                                    }
                                }
                                let inside = ((yb - ya).max(0) * (xb - xa).max(0)) as f64;
                                out[((b * ch + c) * ho + oy) * wo + ox] = match p.kind {
                                    PoolKind::Max => best,
                                    PoolKind::Sum => sum,
                                    PoolKind::Avg if p.count_include_pad => sum / padded_area,
                                    PoolKind::Avg => sum / inside.max(1.0),
                                };
                            }
                        }
                    }
                }
                Array::new(out_shape, out)
            }
            Op::BatchNorm(bn) => {
                let x = arg(0);
                let (gamma, beta, mean, var) = (param(1), param(2), param(3), param(4));
                let ch = x.shape[1];
                let inner: usize = x.shape[2..].iter().product();
                let out = x
                    .data
                    .iter()
                    .enumerate()
                    .map(|(idx, &v)| {
                        let c = (idx / inner) % ch;
                        let g = if bn.fix_gamma { 1.0 } else { gamma[c] };
                        (v - mean[c]) / (var[c] + bn.eps).sqrt() * g + beta[c]
                    })
                    .collect();
                Array::new(out_shape, out)
            }
            Op::Dropout | Op::Flatten | Op::Reshape { .. } | Op::Identity => Array::new(out_shape, arg(0).data.clone()),
            Op::Add { .. } | Op::Mul => {
                let product = matches!(node.op, Op::Mul);
                let (a, b) = (arg(0), arg(1));
                let os = strides(&out_shape);
                let pick = |arr: &Array, idx: usize| -> f64 {
                    let off = out_shape.len() - arr.shape.len();
                    let st = strides(&arr.shape);
                    let mut flat = 0;
                    for (d, &dim) in arr.shape.iter().enumerate() {
                        let coord = (idx / os[d + off]) % out_shape[d + off];
                        flat += if dim == 1 { 0 } else { coord * st[d] };
                    }
                    arr.data[flat]
                };
                Array::new(
                    out_shape.clone(),
                    (0..n_out)
                        .map(|idx| {
                            if product {
                                pick(a, idx) * pick(b, idx)
                            } else {
                                pick(a, idx) + pick(b, idx)
                            }
                        })
                        .collect(),
                )
            }
            Op::Concat { axis } => {
                let outer: usize = out_shape[..*axis].iter().product();
                let mut out = Vec::with_capacity(n_out);
                for o in 0..outer {
                    for k in 0..node.inputs.len() {
                        let a = arg(k);
                        let chunk: usize = a.shape[*axis..].iter().product();
                        out.extend_from_slice(&a.data[o * chunk..(o + 1) * chunk]);
                    }
                }
                Array::new(out_shape, out)
            }
            Op::Softmax { axis } => {
                let ax = if *axis < 0 {
                    (out_shape.len() as i64 + axis) as usize
                } else {
                    *axis as usize
                };
                softmax(arg(0), ax)
            }
            Op::SoftmaxOutput => softmax(arg(0), 1),
            Op::Opaque { op_type, .. } => {
                return Err(GraphError::UnsupportedOp {
                    node: node.name.clone(),
                    op: op_type.clone(),
                });
            }
        };
        values[i] = Some(value);
    }
    Ok(graph
        .heads
        .iter()
        .map(|h| values[h.node].clone().expect("heads are computed"))
        .collect())
}

fn param_or_zero(model: &Model, name: &str, shape: &[usize]) -> Vec<f64> {
    model
        .param(name)
        .map(|t| t.data().iter().map(|&v| v as f64).collect())
        .unwrap_or_else(|| vec![0.0; shape.iter().product()])
}

fn softmax(x: &Array, axis: usize) -> Array {
    let dim = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    let mut out = x.data.clone();
    for o in 0..outer {
        for i in 0..inner {
            let idx = |k: usize| (o * dim + k) * inner + i;
            let m = (0..dim).map(|k| x.data[idx(k)]).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..dim).map(|k| (x.data[idx(k)] - m).exp()).sum();
            for k in 0..dim {
                out[idx(k)] = (x.data[idx(k)] - m).exp() / z;
            }
        }
    }
    Array::new(x.shape.clone(), out)
}
