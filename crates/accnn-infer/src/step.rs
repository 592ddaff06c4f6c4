//! How each operator runs in the engine: [`Lowering::lower`] turns a node into a [`Step`] (weights
//! re-laid out for the kernels, the path chosen), and [`Step::forward`] computes it.
//!
//! Elementwise functions without a tensor-op formula here run through
//! [`accnn_graph::ir::Activation::apply`], the definition the reference interpreter uses, so a new
//! function needs nothing in the engine.

use std::sync::Arc;

use accnn_graph::ir::{
    Activation, BatchNormAttrs, BinaryOp, ConvAttrs, FcAttrs, LrnAttrs, PoolAttrs, ReduceAttrs, ReduceOp, SliceAttrs,
};
use accnn_graph::{Model, Node, Op};
use candle_core::{CustomOp1, DType, Device, Tensor};

use crate::conv::ConvKernel;
use crate::dense::DenseKernel;
use crate::pool::PoolKernel;
use crate::{InferError, layers};

pub(crate) enum Step {
    /// The data input.
    Input,
    /// A stored value used directly as an operand (not as a layer's weight).
    Value(Tensor),
    /// A weight consumed by its layer at build time.
    Weight,
    /// A convolution or pooling kernel (candle custom op, shared between runs).
    Kernel(Arc<Box<dyn CustomOp1 + Send + Sync>>),
    /// A convolution kernel that adds its last input to its outputs (a fused residual `Add`).
    ResidualConv(Arc<ConvKernel>),
    /// The same as candle tensor ops.
    Conv(layers::Conv),
    Pool(layers::Pool),
    Dense {
        kernel: DenseLayer,
        outputs: usize,
        flatten: bool,
    },
    Activation(Activation),
    /// `x * scale + shift` per channel (BatchNorm at inference).
    Affine {
        scale: Tensor,
        shift: Tensor,
    },
    /// Flatten at an axis.
    Flatten(i64),
    Identity,
    Binary(BinaryOp),
    Where,
    Concat(i64),
    Softmax(i64),
    Reshape(Vec<i64>),
    Transpose(Vec<usize>),
    Lrn(LrnAttrs),
    Reduce(ReduceAttrs),
    MatMul,
    Slice(SliceAttrs),
    /// An operator that only changes the shape, computed by the graph's own shape rule.
    Reshaped(Op),
    Deconv(crate::resample::Deconv),
    Resize(accnn_graph::ir::ResizeAttrs),
    Normalize(crate::normalize::Normalize),
    LogSoftmax(i64),
    /// A rearranging operator (Pad, Gather, Expand, Tile, DepthToSpace, SpaceToDepth).
    Rearrange(Op),
}

pub(crate) enum DenseLayer {
    Kernel(Arc<Box<dyn CustomOp1 + Send + Sync>>),
    Ops(layers::Dense),
}

/// What lowering a node needs to know of the model and the engine.
pub(crate) struct Lowering<'a> {
    pub model: &'a Model,
    pub device: &'a Device,
    pub dtype: DType,
    pub threads: usize,
    /// Candle tensor ops instead of accnn's CPU kernels.
    pub candle_ops: bool,
    pub fast_kernels: bool,
    /// The data input's node.
    pub data: usize,
    /// Variables consumed as layer weights (folded into their layers).
    pub weight_use: &'a [bool],
    /// What the convolutions absorb of the nodes after them.
    pub fusion: &'a crate::fusion::Fusion,
}

impl Lowering<'_> {
    /// The step of node `i`.
    pub(crate) fn lower(&self, i: usize, node: &Node) -> Result<Step, InferError> {
        Ok(match &node.op {
            Op::Variable if i == self.data => Step::Input,
            Op::Variable if self.weight_use[i] => Step::Weight,
            // A ReLU or residual Add computed by the convolution it reads.
            _ if self.fusion.absorbed[i] => Step::Identity,
            Op::Variable => match self.model.param(&node.name) {
                Some(t) => Step::Value(self.vector(t.data().to_vec(), t.shape())?),
                None => Step::Weight, // an unused label
            },
            Op::Convolution(c) => self.conv(i, node, c)?,
            Op::FullyConnected(f) => self.dense(node, f)?,
            Op::Activation(a) => Step::Activation(*a),
            Op::Pooling(p) => self.pool(p),
            Op::BatchNorm(b) => self.batch_norm(node, b)?,
            Op::Flatten { axis } => Step::Flatten(*axis),
            Op::Dropout | Op::Identity => Step::Identity,
            Op::Binary { op, .. } => Step::Binary(*op),
            Op::Where => Step::Where,
            Op::Concat { axis } => Step::Concat(*axis),
            Op::Softmax { axis } => Step::Softmax(*axis),
            Op::SoftmaxOutput => Step::Softmax(1),
            Op::Reshape { shape } => Step::Reshape(shape.clone()),
            Op::Transpose { perm } => Step::Transpose(perm.clone()),
            Op::Lrn(l) => Step::Lrn(*l),
            Op::Reduce(r) => Step::Reduce(r.clone()),
            Op::MatMul => Step::MatMul,
            Op::Squeeze { .. } | Op::Unsqueeze { .. } => Step::Reshaped(node.op.clone()),
            Op::Slice(s) => Step::Slice(s.clone()),
            Op::ConvTranspose(c) => self.deconv(node, c)?,
            Op::Resize(r) => Step::Resize(r.clone()),
            Op::Normalization(n) => self.normalize(node, n)?,
            Op::LogSoftmax { axis } => Step::LogSoftmax(*axis),
            Op::Pad(_) | Op::Gather { .. } | Op::Expand { .. } | Op::Tile { .. } | Op::SpaceDepth(_) => {
                Step::Rearrange(node.op.clone())
            }
            Op::Opaque { op_type, .. } => {
                return Err(InferError::Node {
                    node: node.name.clone(),
                    message: format!("accnn's engine cannot run the operator '{op_type}'"),
                });
            }
        })
    }

    fn vector(&self, v: Vec<f32>, shape: &[usize]) -> Result<Tensor, InferError> {
        Ok(Tensor::from_vec(v, shape, self.device)?.to_dtype(self.dtype)?)
    }

    fn conv(&self, i: usize, node: &Node, c: &ConvAttrs) -> Result<Step, InferError> {
        let weight = param(self.model, node, 1, "weight")?;
        let bias = if c.no_bias {
            None
        } else {
            Some(param(self.model, node, 2, "bias")?)
        };
        let channels = input_channels(self.model, node, c)?;
        Ok(if self.candle_ops {
            let mut conv = layers::Conv::new(c, channels, weight, bias, self.device, self.dtype)?;
            conv.relu = self.fusion.relu[i];
            Step::Conv(conv)
        } else {
            let mut kernel = ConvKernel::new(c.clone(), channels, &weight, bias, self.threads, self.fast_kernels);
            kernel.relu = self.fusion.relu[i];
            if self.fusion.residual[i].is_some() {
                Step::ResidualConv(Arc::new(kernel))
            } else {
                Step::Kernel(Arc::new(Box::new(kernel)))
            }
        })
    }

    fn deconv(&self, node: &Node, c: &accnn_graph::ir::ConvTransposeAttrs) -> Result<Step, InferError> {
        let weight = param(self.model, node, 1, "weight")?;
        let bias = if c.no_bias {
            None
        } else {
            Some(param(self.model, node, 2, "bias")?)
        };
        let per_channel = c.num_filter / c.num_group * c.kernel[0] * c.kernel[1];
        let channels = weight.len() / per_channel.max(1);
        let deconv = crate::resample::Deconv::new(c.clone(), channels, &weight, bias, self.device, self.dtype)
            .map_err(|e| InferError::Node {
                node: node.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Step::Deconv(deconv))
    }

    fn normalize(&self, node: &Node, n: &accnn_graph::ir::NormalizationAttrs) -> Result<Step, InferError> {
        let scale = param(self.model, node, 1, "scale")?;
        let bias = if n.bias {
            Some(param(self.model, node, 2, "bias")?)
        } else {
            None
        };
        let step = crate::normalize::Normalize::new(*n, scale, bias, self.device, self.dtype).map_err(|e| {
            InferError::Node {
                node: node.name.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(Step::Normalize(step))
    }

    fn dense(&self, node: &Node, f: &FcAttrs) -> Result<Step, InferError> {
        let weight = param(self.model, node, 1, "weight")?;
        let bias = if f.no_bias {
            None
        } else {
            Some(param(self.model, node, 2, "bias")?)
        };
        let kernel = if self.candle_ops {
            DenseLayer::Ops(layers::Dense::new(weight, bias, f.num_hidden, self.device, self.dtype)?)
        } else {
            DenseLayer::Kernel(Arc::new(Box::new(DenseKernel::new(
                weight,
                bias,
                f.num_hidden,
                self.threads,
            ))))
        };
        Ok(Step::Dense {
            kernel,
            outputs: f.num_hidden,
            flatten: f.flatten,
        })
    }

    fn pool(&self, p: &PoolAttrs) -> Step {
        if self.candle_ops {
            Step::Pool(layers::Pool::new(p.clone()))
        } else {
            Step::Kernel(Arc::new(Box::new(PoolKernel { attrs: p.clone() })))
        }
    }

    fn batch_norm(&self, node: &Node, b: &BatchNormAttrs) -> Result<Step, InferError> {
        let stat = |k: usize, what: &str| -> Result<Vec<f64>, InferError> {
            Ok(param(self.model, node, k, what)?.into_iter().map(f64::from).collect())
        };
        let (gamma, beta) = (stat(1, "gamma")?, stat(2, "beta")?);
        let (mean, var) = (stat(3, "moving mean")?, stat(4, "moving variance")?);
        let (scale, shift) = b.scale_shift(&gamma, &beta, &mean, &var);
        let c = mean.len();
        let narrow = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        Ok(Step::Affine {
            scale: self.vector(narrow(scale), &[1, c, 1, 1])?,
            shift: self.vector(narrow(shift), &[1, c, 1, 1])?,
        })
    }
}

/// The stored weight at input `k` of `node`; `what` names it in errors.
fn param(model: &Model, node: &Node, k: usize, what: &str) -> Result<Vec<f32>, InferError> {
    let var = node.inputs.get(k).map(|e| &model.graph.nodes[e.node].name);
    var.and_then(|v| model.param(v))
        .map(|t| t.data().to_vec())
        .ok_or_else(|| InferError::Node {
            node: node.name.clone(),
            message: format!("{what} is missing"),
        })
}

fn input_channels(model: &Model, node: &Node, c: &ConvAttrs) -> Result<usize, InferError> {
    let w = node.inputs.get(1).map(|e| &model.graph.nodes[e.node].name);
    let t = w.and_then(|w| model.param(w)).ok_or_else(|| InferError::Node {
        node: node.name.clone(),
        message: "weight is missing".into(),
    })?;
    Ok(t.shape()[1] * c.num_group)
}

impl Step {
    /// The step's value from the data `input` and its inputs' values (`args`; `None` where an
    /// input is a weight); `None` for weights themselves. `name` is the node's,
    /// for errors.
    pub(crate) fn forward(
        &self,
        name: &str,
        input: Option<&Tensor>,
        args: &[Option<&Tensor>],
    ) -> Result<Option<Tensor>, InferError> {
        let arg = |k: usize| -> Result<&Tensor, InferError> {
            args.get(k).copied().flatten().ok_or_else(|| InferError::Node {
                node: name.to_string(),
                message: format!("input #{k} has no value"),
            })
        };
        let wrap = |e: candle_core::Error| InferError::Node {
            node: name.to_string(),
            message: e.to_string(),
        };
        Ok(match self {
            Step::Input => Some(
                input
                    .ok_or_else(|| InferError::Node {
                        node: name.to_string(),
                        message: "the data input is read but was not given".into(),
                    })?
                    .clone(),
            ),
            Step::Value(t) => Some(t.clone()),
            Step::Weight => None,
            Step::Kernel(k) => Some(arg(0)?.contiguous()?.apply_op1_arc(k.clone()).map_err(wrap)?),
            Step::ResidualConv(k) => {
                let x = arg(0)?.contiguous()?;
                let residual = arg(args.len() - 1)?;
                Some(residual_conv(k, &x, residual).map_err(wrap)?)
            }
            Step::Conv(conv) => Some(conv.forward(arg(0)?).map_err(wrap)?),
            Step::Pool(pool) => Some(pool.forward(&arg(0)?.contiguous()?).map_err(wrap)?),
            Step::Dense {
                kernel,
                outputs,
                flatten,
            } => Some(dense(arg(0)?, kernel, *outputs, *flatten).map_err(wrap)?),
            Step::Activation(a) => Some(activation(*a, arg(0)?).map_err(wrap)?),
            Step::Affine { scale, shift } => Some(arg(0)?.broadcast_mul(scale)?.broadcast_add(shift)?),
            Step::Flatten(axis) => {
                let x = arg(0)?;
                let dims = accnn_graph::ops::shape_ops::flatten(x.dims(), *axis).ok_or_else(|| InferError::Node {
                    node: name.to_string(),
                    message: format!("flatten axis {axis} is out of range for {:?}", x.dims()),
                })?;
                Some(x.reshape(dims.to_vec())?)
            }
            Step::Identity => Some(arg(0)?.clone()),
            Step::Binary(op) => {
                let mut acc = binary(*op, arg(0)?, arg(1)?).map_err(wrap)?;
                for k in 2..args.len() {
                    acc = binary(*op, &acc, arg(k)?).map_err(wrap)?;
                }
                Some(acc)
            }
            Step::Where => Some(select(arg(0)?, arg(1)?, arg(2)?).map_err(wrap)?),
            Step::Concat(axis) => {
                let parts: Vec<&Tensor> = (0..args.len()).map(arg).collect::<Result<_, _>>()?;
                let ax = accnn_graph::ops::resolve_axis(*axis, arg(0)?.rank()).ok_or_else(|| InferError::Node {
                    node: name.to_string(),
                    message: format!("concat axis {axis} is out of range"),
                })?;
                Some(Tensor::cat(&parts, ax).map_err(wrap)?)
            }
            Step::Softmax(axis) => {
                let x = arg(0)?;
                let ax = accnn_graph::ops::resolve_axis(*axis, x.rank()).ok_or_else(|| InferError::Node {
                    node: name.to_string(),
                    message: format!("softmax axis {axis} is out of range"),
                })?;
                let e = x.broadcast_sub(&x.max_keepdim(ax)?)?.exp()?;
                Some(e.broadcast_div(&e.sum_keepdim(ax)?)?)
            }
            Step::LogSoftmax(axis) => {
                let x = arg(0)?;
                let ax = accnn_graph::ops::resolve_axis(*axis, x.rank()).ok_or_else(|| InferError::Node {
                    node: name.to_string(),
                    message: format!("log-softmax axis {axis} is out of range"),
                })?;
                let shifted = x.broadcast_sub(&x.max_keepdim(ax)?)?;
                Some(shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(ax)?.log()?)?)
            }
            Step::Rearrange(op) => {
                use crate::rearrange as r;
                let x = arg(0)?;
                let y = match op {
                    Op::Pad(p) => r::pad(p, x),
                    Op::Gather {
                        axis,
                        indices,
                        index_dims,
                    } => r::gather(*axis, indices, index_dims, x),
                    Op::Expand { shape } => r::expand(shape, x),
                    Op::Tile { repeats } => r::tile(repeats, x),
                    Op::SpaceDepth(s) => r::space_depth(*s, x),
                    other => Err(candle_core::Error::Msg(format!("{other:?} is not a rearrangement"))),
                };
                Some(y.map_err(wrap)?)
            }
            Step::Reshape(codes) => {
                let x = arg(0)?;
                let dims = accnn_graph::shape::reshape(name, x.dims(), codes)?;
                Some(x.reshape(dims)?)
            }
            Step::Transpose(perm) => Some(arg(0)?.permute(perm.as_slice()).map_err(wrap)?.contiguous()?),
            Step::Lrn(l) => Some(lrn(l, arg(0)?).map_err(wrap)?),
            Step::Reshaped(op) => {
                let x = arg(0)?;
                let dims = match op {
                    Op::Squeeze { axes } => accnn_graph::ops::shape_ops::squeezed(x.dims(), axes.as_deref()),
                    Op::Unsqueeze { axes } => accnn_graph::ops::shape_ops::unsqueezed(x.dims(), axes),
                    _ => None,
                }
                .ok_or_else(|| InferError::Node {
                    node: name.to_string(),
                    message: format!("cannot reshape {:?} as {op:?}", x.dims()),
                })?;
                Some(x.reshape(dims)?)
            }
            Step::Deconv(d) => Some(d.forward(arg(0)?).map_err(wrap)?),
            Step::Normalize(n) => Some(n.forward(arg(0)?).map_err(wrap)?),
            Step::Resize(r) => Some(crate::resample::resize(r, arg(0)?).map_err(wrap)?),
            Step::MatMul => Some(matmul(arg(0)?, arg(1)?).map_err(wrap)?),
            Step::Slice(s) => {
                let x = arg(0)?;
                let ranges = s.ranges(x.dims()).map_err(|message| InferError::Node {
                    node: name.to_string(),
                    message,
                })?;
                Some(slice(x, &ranges).map_err(wrap)?)
            }
            Step::Reduce(r) => {
                let x = arg(0)?;
                let out = r.output_shape(x.dims()).ok_or_else(|| InferError::Node {
                    node: name.to_string(),
                    message: format!("reduction axes {:?} out of range for {:?}", r.axes, x.dims()),
                })?;
                Some(reduce(r, x).and_then(|y| y.reshape(out)).map_err(wrap)?)
            }
        })
    }
}

/// `conv(x) + residual`, then the kernel's ReLU. A residual that only broadcasts to the output's
/// shape is expanded to it first; one the output broadcasts to instead (rare: a 1x1 output plus a
/// map) takes an unfused sum.
fn residual_conv(kernel: &Arc<ConvKernel>, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
    let out = kernel
        .output_dims(x.dims())
        .ok_or_else(|| candle_core::Error::Msg(format!("accnn-conv2d: cannot convolve an input of {:?}", x.dims())))?;
    let fused = crate::conv::ResidualConv(kernel.clone());
    if residual.dims() == out {
        return x.apply_op2_no_bwd(&residual.contiguous()?, &fused);
    }
    let shape = residual
        .shape()
        .broadcast_shape_binary_op(&candle_core::Shape::from(out.to_vec()), "add")?;
    if shape.dims() == out {
        return x.apply_op2_no_bwd(&residual.broadcast_as(&out)?.contiguous()?, &fused);
    }
    let sum = x
        .apply_op1_no_bwd(&crate::conv::Unfused(kernel))?
        .broadcast_add(residual)?;
    if kernel.relu { sum.relu() } else { Ok(sum) }
}

fn dense(x: &Tensor, kernel: &DenseLayer, outputs: usize, flatten: bool) -> candle_core::Result<Tensor> {
    let x2 = if flatten {
        x.flatten_from(1)?
    } else {
        let last = *x.dims().last().unwrap_or(&1);
        x.reshape(((), last))?
    };
    let x2 = x2.contiguous()?;
    let mut y = match kernel {
        DenseLayer::Kernel(k) => x2.apply_op1_arc(k.clone()),
        DenseLayer::Ops(dense) => dense.forward(&x2),
    }?;
    if !flatten {
        let mut dims = x.dims().to_vec();
        *dims.last_mut().unwrap_or(&mut 0) = outputs;
        y = y.reshape(dims)?;
    }
    Ok(y)
}

/// `x / (bias + alpha / size * window sum of x²)^beta`, the window sum as shifted slices of the
/// zero-padded squares (windows are a handful of channels).
fn lrn(l: &LrnAttrs, x: &Tensor) -> candle_core::Result<Tensor> {
    let channels = x.dim(1)?;
    let (below, above) = l.reach();
    let squares = x.sqr()?.pad_with_zeros(1, below, above)?;
    let mut sum = squares.narrow(1, 0, channels)?;
    for k in 1..l.size {
        sum = (sum + squares.narrow(1, k, channels)?)?;
    }
    let denominator = sum
        .affine(l.alpha as f64 / l.size as f64, l.bias as f64)?
        .powf(l.beta as f64)?;
    x / denominator
}

/// numpy's matmul: 1-D operands as a row or a column vector, batch axes broadcast.
fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let out = accnn_graph::ops::matmul::matmul_shape(a.dims(), b.dims())
        .ok_or_else(|| candle_core::Error::Msg(format!("cannot multiply {:?} by {:?}", a.dims(), b.dims())))?;
    let a2 = if a.rank() == 1 { a.unsqueeze(0)? } else { a.clone() };
    let b2 = if b.rank() == 1 { b.unsqueeze(1)? } else { b.clone() };
    a2.contiguous()?.broadcast_matmul(&b2.contiguous()?)?.reshape(out)
}

/// A window of `x`: narrowing for unit steps, the shared index arithmetic otherwise.
fn slice(x: &Tensor, ranges: &[accnn_graph::ops::layout::SliceAxis]) -> candle_core::Result<Tensor> {
    if ranges.iter().all(|r| r.step == 1 || r.count <= 1) {
        let mut y = x.clone();
        for (axis, r) in ranges.iter().enumerate() {
            if r.count != x.dims()[axis] {
                y = y.narrow(axis, r.start as usize, r.count)?;
            }
        }
        return y.contiguous();
    }
    let values: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let (dims, data) = accnn_graph::ops::layout::slice(x.dims(), &values, ranges);
    Tensor::from_vec(data, dims, &Device::Cpu)?
        .to_device(x.device())?
        .to_dtype(x.dtype())
}

/// The reduction with the reduced axes kept as size 1; the product through its definition.
fn reduce(r: &ReduceAttrs, x: &Tensor) -> candle_core::Result<Tensor> {
    let axes = r
        .resolved_axes(x.rank())
        .ok_or_else(|| candle_core::Error::Msg(format!("reduction axes {:?} out of range", r.axes)))?;
    let count: usize = axes.iter().map(|&k| x.dims()[k]).product();
    if count == 0 {
        // An empty reduction is the operation's start value (0, 1, -inf, +inf), finished.
        let kept: Vec<usize> = (0..x.rank())
            .map(|k| if axes.contains(&k) { 1 } else { x.dims()[k] })
            .collect();
        let value = r.op.finish(r.op.start(), 0);
        return Tensor::full(value as f32, kept, x.device())?.to_dtype(x.dtype());
    }
    let over = |t: &Tensor, f: &dyn Fn(&Tensor, usize) -> candle_core::Result<Tensor>| {
        axes.iter().try_fold(t.clone(), |acc, &k| f(&acc, k))
    };
    match r.op {
        ReduceOp::Sum => x.sum_keepdim(axes.clone()),
        ReduceOp::Mean => x.sum_keepdim(axes.clone())? / count as f64,
        ReduceOp::Max => over(x, &|t, k| t.max_keepdim(k)),
        ReduceOp::Min => over(x, &|t, k| t.min_keepdim(k)),
        ReduceOp::L1 => x.abs()?.sum_keepdim(axes.clone()),
        ReduceOp::L2 => x.sqr()?.sum_keepdim(axes.clone())?.sqrt(),
        ReduceOp::SumSquare => x.sqr()?.sum_keepdim(axes.clone()),
        ReduceOp::LogSumExp => x.exp()?.sum_keepdim(axes.clone())?.log(),
        ReduceOp::Prod => {
            let dims = x.dims().to_vec();
            let kept: Vec<usize> = (0..dims.len())
                .map(|k| if axes.contains(&k) { 1 } else { dims[k] })
                .collect();
            let values: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            let mut acc = vec![1f64; kept.iter().product()];
            let mut index = vec![0usize; dims.len()];
            for v in values {
                let target = index
                    .iter()
                    .zip(&kept)
                    .fold(0, |t, (&i, &d)| t * d + if d == 1 { 0 } else { i });
                acc[target] *= v as f64;
                for d in (0..dims.len()).rev() {
                    index[d] += 1;
                    if index[d] < dims[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
            let acc: Vec<f32> = acc.into_iter().map(|a| a as f32).collect();
            Tensor::from_vec(acc, kept, &Device::Cpu)?
                .to_device(x.device())?
                .to_dtype(x.dtype())
        }
    }
}

/// The common functions as tensor ops (on any device); any other through its definition.
fn activation(a: Activation, x: &Tensor) -> candle_core::Result<Tensor> {
    match a {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip(),
        Activation::LeakyRelu { slope } => x.relu()? - (x.neg()?.relu()? * slope as f64)?,
        Activation::Clip { min, max } => x.clamp(min, max),
        Activation::Erf => x.erf(),
        Activation::Gelu { tanh: false } => x.gelu_erf(),
        other => elementwise(x, |v| other.apply(v as f64) as f32),
    }
}

/// `on_true` where `cond` is non-zero, else `on_false`, the three broadcast together.
fn select(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> candle_core::Result<Tensor> {
    let shape = candle_core::Shape::broadcast_shape_binary_op(cond.shape(), on_true.shape(), "where")?;
    let shape = candle_core::Shape::broadcast_shape_binary_op(&shape, on_false.shape(), "where")?;
    let mask = cond.broadcast_as(shape.clone())?.ne(0.0)?;
    mask.where_cond(&on_true.broadcast_as(shape.clone())?, &on_false.broadcast_as(shape)?)
}

/// The common operators as tensor ops; any other through its definition.
fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match op {
        BinaryOp::Add => a.broadcast_add(b),
        BinaryOp::Sub => a.broadcast_sub(b),
        BinaryOp::Mul => a.broadcast_mul(b),
        BinaryOp::Div => a.broadcast_div(b),
        BinaryOp::Min => a.broadcast_minimum(b),
        BinaryOp::Max => a.broadcast_maximum(b),
        BinaryOp::PRelu => a.relu()?.broadcast_add(&a.minimum(0.0)?.broadcast_mul(b)?),
        // Comparisons give u8 masks; the IR holds truth values as 0.0 and 1.0 in the input's dtype.
        BinaryOp::Equal => a.broadcast_eq(b)?.to_dtype(a.dtype()),
        BinaryOp::Less => a.broadcast_lt(b)?.to_dtype(a.dtype()),
        BinaryOp::LessOrEqual => a.broadcast_le(b)?.to_dtype(a.dtype()),
        BinaryOp::Greater => a.broadcast_gt(b)?.to_dtype(a.dtype()),
        BinaryOp::GreaterOrEqual => a.broadcast_ge(b)?.to_dtype(a.dtype()),
        other => {
            let shape = candle_core::Shape::broadcast_shape_binary_op(a.shape(), b.shape(), "binary")?;
            let (x, y) = (a.broadcast_as(shape.clone())?, b.broadcast_as(shape.clone())?);
            let host = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
            let values: Vec<f32> = host(&x)?
                .into_iter()
                .zip(host(&y)?)
                .map(|(p, q)| other.apply(p as f64, q as f64) as f32)
                .collect();
            Tensor::from_vec(values, shape, &Device::Cpu)?
                .to_device(a.device())?
                .to_dtype(a.dtype())
        }
    }
}

/// `f` applied to every element, on the host (a round trip for a GPU tensor: for rare functions).
fn elementwise(x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let values: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mapped: Vec<f32> = values.par_iter().map(|&v| f(v)).collect();
    Tensor::from_vec(mapped, x.dims(), &Device::Cpu)?
        .to_device(x.device())?
        .to_dtype(x.dtype())
}
