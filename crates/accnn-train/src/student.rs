//! A model as a differentiable function of its weights: [`Student::forward`] runs the graph as
//! candle ops with the trainable weights held in [`Var`]s, so `loss.backward()` yields their
//! gradients.

use std::collections::{BTreeMap, HashMap};

use accnn_graph::ir::{Activation, BinaryOp, ReduceOp};
use accnn_graph::{Entry, Model, Node, Op};
use candle_core::{DType, Device, Tensor, Var};

use crate::TrainError;
use crate::layers::{conv2d, pool2d};

/// One weight of the model: trained ([`Var`]) or held fixed.
pub struct Parameter {
    /// The variable's name in the model (its `args` key).
    pub name: String,
    /// The layer that reads it.
    pub layer: String,
    value: Value,
}

enum Value {
    Trained(Var),
    Fixed(Tensor),
}

impl Parameter {
    /// The current value.
    pub fn tensor(&self) -> &Tensor {
        match &self.value {
            Value::Trained(v) => v.as_tensor(),
            Value::Fixed(t) => t,
        }
    }

    /// The variable, when this weight is trained.
    pub fn var(&self) -> Option<&Var> {
        match &self.value {
            Value::Trained(v) => Some(v),
            Value::Fixed(_) => None,
        }
    }
}

/// How a node is computed.
enum Step {
    Input,
    Parameter(usize),
    /// A variable nobody reads as a value (an MXNet label).
    Unused,
    Node(Op),
    /// A frozen BatchNorm as `x · scale + shift` per channel of `axis`: computed once here, not
    /// on every step.
    Affine {
        scale: Tensor,
        shift: Tensor,
        axis: usize,
    },
}

/// A model ready for training: every node a candle op, the chosen layers' weights trainable.
pub struct Student {
    device: Device,
    steps: Vec<(String, Step, Vec<Entry>)>,
    parameters: Vec<Parameter>,
    logits: Entry,
}

/// The entry holding a model's logits: its output, or the input of the softmax that ends it.
pub fn logits_entry(model: &Model) -> Result<Entry, TrainError> {
    let [head] = model.graph.heads.as_slice() else {
        return Err(TrainError::Model(format!(
            "the model has {} outputs; fine-tuning takes a classifier with one",
            model.graph.heads.len()
        )));
    };
    let node = &model.graph.nodes[head.node];
    Ok(match node.op {
        Op::Softmax { .. } | Op::SoftmaxOutput | Op::LogSoftmax { .. } => node.inputs[0],
        _ => *head,
    })
}

impl Student {
    /// `model` as candle ops on `device`; the weights of layers for which `trains(layer)` holds
    /// become trainable (f32), every other weight is fixed.
    pub fn new(model: &Model, trains: &dyn Fn(&Node) -> bool, device: &Device) -> Result<Self, TrainError> {
        let graph = &model.graph;
        let data = model.data_input()?;
        // Which layer reads each variable, and whether that layer trains.
        let mut reader: HashMap<usize, (String, bool)> = HashMap::new();
        for node in &graph.nodes {
            let weights = match node.op {
                Op::Convolution(_) | Op::FullyConnected(_) => 2,
                Op::BatchNorm(_) => 4,
                _ => 0,
            };
            // BatchNorm stays frozen (folded, or at its running statistics).
            let trained = weights == 2 && trains(node);
            for e in node.inputs.iter().skip(1).take(weights) {
                reader.insert(e.node, (node.name.clone(), trained));
            }
        }
        let mut parameters = Vec::new();
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for (i, node) in graph.nodes.iter().enumerate() {
            let step = match &node.op {
                Op::Variable if i == data => Step::Input,
                Op::Variable => match model.param(&node.name) {
                    Some(t) => {
                        let value = Tensor::from_slice(t.data(), t.shape(), device)?;
                        let (layer, trained) = reader.get(&i).cloned().unwrap_or_default();
                        let value = if trained {
                            Value::Trained(Var::from_tensor(&value)?)
                        } else {
                            Value::Fixed(value)
                        };
                        parameters.push(Parameter {
                            name: node.name.clone(),
                            layer,
                            value,
                        });
                        Step::Parameter(parameters.len() - 1)
                    }
                    None => Step::Unused,
                },
                Op::BatchNorm(b) => {
                    let stat = |k: usize| -> Result<Vec<f64>, TrainError> {
                        let e = node.inputs.get(k).ok_or_else(|| TrainError::Node {
                            node: node.name.clone(),
                            message: format!("BatchNorm input {k} is missing"),
                        })?;
                        let name = &graph.nodes[e.node].name;
                        let t = model.param(name).ok_or_else(|| TrainError::Node {
                            node: node.name.clone(),
                            message: format!("BatchNorm statistic '{name}' has no value"),
                        })?;
                        Ok(t.data().iter().map(|&v| v as f64).collect())
                    };
                    let (scale, shift) = b.scale_shift(&stat(1)?, &stat(2)?, &stat(3)?, &stat(4)?);
                    let tensor = |v: Vec<f64>| -> Result<Tensor, TrainError> {
                        Ok(Tensor::new(v, device)?.to_dtype(DType::F32)?)
                    };
                    Step::Affine {
                        scale: tensor(scale)?,
                        shift: tensor(shift)?,
                        axis: b.axis,
                    }
                }
                op => {
                    check_trainable(node)?;
                    Step::Node(op.clone())
                }
            };
            steps.push((node.name.clone(), step, node.inputs.clone()));
        }
        Ok(Student {
            device: device.clone(),
            steps,
            parameters,
            logits: logits_entry(model)?,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every weight, trained or fixed.
    pub fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    /// The trainable weights, in graph order.
    pub fn vars(&self) -> Vec<Var> {
        self.parameters.iter().filter_map(|p| p.var().cloned()).collect()
    }

    /// The logits for `input` `(B, C, H, W)`.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor, TrainError> {
        Ok(self.forward_collect(input, &[])?.0)
    }

    /// The logits and the values of `taps` (other entries of the graph, such as decomposed layers'
    /// outputs, for a feature loss).
    pub fn forward_collect(&self, input: &Tensor, taps: &[Entry]) -> Result<(Tensor, Vec<Tensor>), TrainError> {
        let mut values: Vec<Option<Tensor>> = vec![None; self.steps.len()];
        for (i, (name, step, inputs)) in self.steps.iter().enumerate().take(self.logits.node + 1) {
            values[i] = match step {
                Step::Input => Some(input.clone()),
                Step::Parameter(p) => Some(self.parameters[*p].tensor().clone()),
                Step::Unused => None,
                Step::Affine { scale, shift, axis } => {
                    let x = inputs
                        .first()
                        .and_then(|e| values[e.node].as_ref())
                        .ok_or_else(|| TrainError::Node {
                            node: name.clone(),
                            message: "input has no value".into(),
                        })?;
                    let mut dims = vec![1; x.rank()];
                    if let Some(d) = dims.get_mut(*axis) {
                        *d = scale.elem_count();
                    }
                    let scaled = scale
                        .reshape(dims.as_slice())
                        .and_then(|sc| shift.reshape(dims.as_slice()).map(|sh| (sc, sh)))
                        .and_then(|(sc, sh)| x.broadcast_mul(&sc)?.broadcast_add(&sh));
                    Some(scaled.map_err(|e| TrainError::Node {
                        node: name.clone(),
                        message: e.to_string(),
                    })?)
                }
                Step::Node(op) => {
                    let args: Vec<Option<&Tensor>> = inputs.iter().map(|e| values[e.node].as_ref()).collect();
                    Some(run(op, &args).map_err(|e| TrainError::Node {
                        node: name.clone(),
                        message: e.to_string(),
                    })?)
                }
            };
        }
        let value = |e: &Entry| {
            values[e.node].clone().ok_or_else(|| TrainError::Node {
                node: self.steps[e.node].0.clone(),
                message: "has no value".into(),
            })
        };
        let logits = value(&self.logits)?;
        let taps = taps.iter().map(value).collect::<Result<Vec<_>, _>>()?;
        Ok((logits, taps))
    }

    /// Copies the trained weights into `model` (the model this student was made from), keeping
    /// each weight's stored precision.
    pub fn write_back(&self, model: &mut Model) -> Result<(), TrainError> {
        for p in &self.parameters {
            let Some(var) = p.var() else { continue };
            let values = var.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let target = model
                .args
                .get_mut(&p.name)
                .ok_or_else(|| TrainError::Model(format!("weight '{}' is not in the model", p.name)))?;
            if target.len() != values.len() {
                return Err(TrainError::Model(format!(
                    "weight '{}' holds {} values, the trained one {}",
                    p.name,
                    target.len(),
                    values.len()
                )));
            }
            target.data_mut().copy_from_slice(&values);
        }
        Ok(())
    }

    /// The trained weights by name (for checkpoints of the optimiser's state).
    pub fn named_vars(&self) -> BTreeMap<String, Var> {
        self.parameters
            .iter()
            .filter_map(|p| p.var().map(|v| (p.name.clone(), v.clone())))
            .collect()
    }
}

/// Refuses, before training starts, operators whose gradient accnn does not compute.
fn check_trainable(node: &Node) -> Result<(), TrainError> {
    let refuse = |what: &str| {
        Err(TrainError::Node {
            node: node.name.clone(),
            message: format!("{what} cannot be fine-tuned yet"),
        })
    };
    match &node.op {
        Op::Activation(a) if activation_op(*a).is_none() => refuse(&format!("the activation {a:?}")),
        Op::Binary { op, .. }
            if !matches!(
                op,
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min
            ) =>
        {
            refuse(&format!("the elementwise operator {op:?}"))
        }
        Op::Reduce(r) if !matches!(r.op, ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max) => {
            refuse(&format!("the reduction {:?}", r.op))
        }
        Op::Convolution(_)
        | Op::FullyConnected(_)
        | Op::Activation(_)
        | Op::Pooling(_)
        | Op::Flatten { .. }
        | Op::Dropout
        | Op::Identity
        | Op::BatchNorm(_)
        | Op::Binary { .. }
        | Op::Concat { .. }
        | Op::Softmax { .. }
        | Op::SoftmaxOutput
        | Op::LogSoftmax { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Reduce(_)
        | Op::MatMul => Ok(()),
        other => refuse(&format!("the operator {}", other.mxnet_name())),
    }
}

type Unary = fn(&Tensor) -> candle_core::Result<Tensor>;
/// An activation as a differentiable function of its input.
type ActivationFn = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;

/// The activations with a candle formula (and so a gradient).
fn activation_op(a: Activation) -> Option<ActivationFn> {
    let plain = |f: Unary| -> Option<ActivationFn> { Some(Box::new(f)) };
    match a {
        Activation::Relu => plain(Tensor::relu),
        Activation::Sigmoid => plain(|x| candle_core::Tensor::ones_like(x)? / (x.neg()?.exp()? + 1.0)?),
        Activation::Tanh => plain(Tensor::tanh),
        Activation::Exp => plain(Tensor::exp),
        Activation::Neg => plain(Tensor::neg),
        Activation::Abs => plain(Tensor::abs),
        Activation::Sqrt => plain(Tensor::sqrt),
        Activation::Log => plain(Tensor::log),
        Activation::Reciprocal => plain(Tensor::recip),
        Activation::SoftRelu => plain(|x| (x.exp()? + 1.0)?.log()),
        Activation::LeakyRelu { slope } => Some(Box::new(move |x| {
            let positive = x.relu()?;
            positive.clone() + ((x - positive)? * slope as f64)?
        })),
        Activation::Clip { min, max } => Some(Box::new(move |x| x.clamp(min, max))),
        Activation::HardSigmoid { alpha, beta } => Some(Box::new(move |x| {
            x.affine(alpha as f64, beta as f64)?.clamp(0f32, 1f32)
        })),
        Activation::HardSwish => plain(|x| x * x.affine(1.0 / 6.0, 0.5)?.clamp(0f32, 1f32)?),
        _ => None,
    }
}

/// Node `op` on its inputs' values (`None` where an input has no value).
fn run(op: &Op, args: &[Option<&Tensor>]) -> candle_core::Result<Tensor> {
    let arg = |k: usize| -> candle_core::Result<&Tensor> {
        args.get(k)
            .copied()
            .flatten()
            .ok_or_else(|| candle_core::Error::Msg(format!("input {k} has no value")))
    };
    match op {
        Op::Convolution(c) => {
            let bias = if c.no_bias { None } else { Some(arg(2)?) };
            conv2d(arg(0)?, arg(1)?, bias, c)
        }
        Op::FullyConnected(f) => {
            let x = arg(0)?;
            let x = if f.flatten || x.rank() == 2 {
                x.flatten_from(1)?
            } else {
                x.flatten_to(x.rank() - 2)?
            };
            let y = x.matmul(&arg(1)?.t()?)?;
            if f.no_bias { Ok(y) } else { y.broadcast_add(arg(2)?) }
        }
        Op::Activation(a) => {
            let f = activation_op(*a).ok_or_else(|| candle_core::Error::Msg(format!("{a:?} has no gradient")))?;
            f(arg(0)?)
        }
        Op::Pooling(p) => pool2d(arg(0)?, p),
        Op::Flatten { axis } => {
            let x = arg(0)?;
            let axis = accnn_graph::ops::resolve_axis(*axis, x.rank())
                .ok_or_else(|| candle_core::Error::Msg("flatten axis out of range".into()))?;
            let outer: usize = x.dims()[..axis].iter().product();
            x.reshape((outer, x.elem_count() / outer.max(1)))
        }
        Op::Dropout | Op::Identity => Ok(arg(0)?.clone()),
        Op::Binary { op, .. } => {
            let (a, b) = (arg(0)?, arg(1)?);
            match op {
                BinaryOp::Add => a.broadcast_add(b),
                BinaryOp::Sub => a.broadcast_sub(b),
                BinaryOp::Mul => a.broadcast_mul(b),
                BinaryOp::Div => a.broadcast_div(b),
                BinaryOp::Max => a.broadcast_maximum(b),
                BinaryOp::Min => a.broadcast_minimum(b),
                other => Err(candle_core::Error::Msg(format!("{other:?} has no gradient"))),
            }
        }
        Op::Concat { axis } => {
            let parts: Vec<&Tensor> = (0..args.len()).map(arg).collect::<candle_core::Result<_>>()?;
            let axis = accnn_graph::ops::resolve_axis(*axis, parts[0].rank())
                .ok_or_else(|| candle_core::Error::Msg("concat axis out of range".into()))?;
            Tensor::cat(&parts, axis)
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let x = arg(0)?;
            let axis = accnn_graph::ops::resolve_axis(*axis, x.rank())
                .ok_or_else(|| candle_core::Error::Msg("softmax axis out of range".into()))?;
            let log_p = log_softmax(x, axis)?;
            if matches!(op, Op::LogSoftmax { .. }) {
                Ok(log_p)
            } else {
                log_p.exp()
            }
        }
        Op::SoftmaxOutput => candle_core::Tensor::exp(&log_softmax(arg(0)?, 1)?),
        Op::Reshape { shape } => {
            let x = arg(0)?;
            let dims =
                accnn_graph::shape::reshape("", x.dims(), shape).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            x.reshape(dims)
        }
        Op::Transpose { perm } => arg(0)?.permute(perm.as_slice()),
        Op::Squeeze { axes } => {
            let x = arg(0)?;
            let dims = accnn_graph::ops::shape_ops::squeezed(x.dims(), axes.as_deref())
                .ok_or_else(|| candle_core::Error::Msg("squeeze axes out of range".into()))?;
            x.reshape(dims)
        }
        Op::Unsqueeze { axes } => {
            let x = arg(0)?;
            let dims = accnn_graph::ops::shape_ops::unsqueezed(x.dims(), axes)
                .ok_or_else(|| candle_core::Error::Msg("unsqueeze axes out of range".into()))?;
            x.reshape(dims)
        }
        Op::Reduce(r) => {
            let x = arg(0)?;
            let axes = r
                .resolved_axes(x.rank())
                .ok_or_else(|| candle_core::Error::Msg("reduction axes out of range".into()))?;
            let mut y = x.clone();
            for &axis in axes.iter().rev() {
                y = match r.op {
                    ReduceOp::Sum => y.sum_keepdim(axis)?,
                    ReduceOp::Mean => y.mean_keepdim(axis)?,
                    ReduceOp::Max => y.max_keepdim(axis)?,
                    other => return Err(candle_core::Error::Msg(format!("{other:?} has no gradient"))),
                };
            }
            if r.keep_dims {
                Ok(y)
            } else {
                let dims: Vec<usize> = x
                    .dims()
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| !axes.contains(k))
                    .map(|(_, &d)| d)
                    .collect();
                y.reshape(dims)
            }
        }
        Op::MatMul => arg(0)?.broadcast_matmul(arg(1)?),
        other => Err(candle_core::Error::Msg(format!(
            "the operator {} cannot be fine-tuned yet",
            other.mxnet_name()
        ))),
    }
}

/// `log softmax(x)` over `axis`, stable.
pub(crate) fn log_softmax(x: &Tensor, axis: usize) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(axis)?.detach())?;
    let log_sum = shifted.exp()?.sum_keepdim(axis)?.log()?;
    shifted.broadcast_sub(&log_sum)
}
