//! MXNet operator attributes: parsing them into [`Op`] and writing them back.

use std::collections::BTreeMap;

use crate::error::GraphError;
use crate::ir::{
    Activation, BatchNormAttrs, BinaryOp, ConvAttrs, FcAttrs, Op, Padding2d, PoolAttrs, PoolConvention, PoolKind,
};

struct Attrs<'a> {
    node: &'a str,
    map: &'a BTreeMap<String, String>,
}

impl Attrs<'_> {
    fn err(&self, message: impl Into<String>) -> GraphError {
        GraphError::node(self.node, message)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|s| s.trim())
    }

    fn required(&self, key: &str) -> Result<&str, GraphError> {
        self.get(key)
            .ok_or_else(|| self.err(format!("missing attribute '{key}'")))
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, GraphError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(self.err(format!("attribute '{key}' = '{v}' is not a boolean"))),
            },
        }
    }

    fn usize(&self, key: &str) -> Result<usize, GraphError> {
        let v = self.required(key)?;
        v.parse()
            .map_err(|_| self.err(format!("attribute '{key}' = '{v}' is not a non-negative integer")))
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, GraphError> {
        if self.get(key).is_some() {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, GraphError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        parse_tuple(v)
            .map(Some)
            .ok_or_else(|| self.err(format!("attribute '{key}' = '{v}' is not a tuple of integers")))
    }

    /// A 2-D window attribute such as `kernel`, `stride` or `pad`.
    fn pair(&self, key: &str, default: Option<[usize; 2]>) -> Result<[usize; 2], GraphError> {
        match self.ints(key)? {
            None => default.ok_or_else(|| self.err(format!("missing attribute '{key}'"))),
            Some(v) if v.is_empty() => default.ok_or_else(|| self.err(format!("empty attribute '{key}'"))),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => Ok([v[0] as usize, v[1] as usize]),
            Some(v) => Err(self.err(format!(
                "attribute '{key}' = {v:?}: accnn supports 2-D windows only (two non-negative values)"
            ))),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, GraphError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| self.err(format!("attribute '{key}' = '{v}' is not a number"))),
        }
    }
}

/// Parses `(3, 3)`, `[3,3]`, `(3,)` or `3` into integers.
pub(crate) fn parse_tuple(text: &str) -> Option<Vec<i64>> {
    let inner = text.trim().trim_start_matches(['(', '[']).trim_end_matches([')', ']']);
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<i64>().ok())
        .collect()
}

fn positive(attrs: &Attrs, key: &str, v: [usize; 2]) -> Result<[usize; 2], GraphError> {
    if v.contains(&0) {
        return Err(attrs.err(format!("attribute '{key}' must be positive, got {v:?}")));
    }
    Ok(v)
}

/// Parses an MXNet operator name and attributes into an [`Op`].
pub fn parse_op(node: &str, op: &str, map: &BTreeMap<String, String>) -> Result<Op, GraphError> {
    let a = Attrs { node, map };
    if let Some((op, broadcast)) = BinaryOp::from_mxnet_name(op) {
        return Ok(Op::Binary { op, broadcast });
    }
    Ok(match op {
        "null" => Op::Variable,
        "Convolution" => {
            let kernel = positive(&a, "kernel", a.pair("kernel", None)?)?;
            let stride = positive(&a, "stride", a.pair("stride", Some([1, 1]))?)?;
            let dilate = positive(&a, "dilate", a.pair("dilate", Some([1, 1]))?)?;
            let [ph, pw] = a.pair("pad", Some([0, 0]))?;
            if let Some(layout) = a.get("layout").filter(|l| *l != "NCHW" && *l != "None") {
                return Err(a.err(format!(
                    "layout '{layout}' is not supported; accnn reads NCHW convolutions"
                )));
            }
            let num_filter = a.usize("num_filter")?;
            let num_group = a.usize_or("num_group", 1)?;
            if num_filter == 0 || num_group == 0 || num_filter % num_group != 0 {
                return Err(a.err(format!(
                    "num_filter {num_filter} is not a positive multiple of num_group {num_group}"
                )));
            }
            Op::Convolution(ConvAttrs {
                kernel,
                stride,
                dilate,
                pad: Padding2d::symmetric(ph, pw),
                num_filter,
                num_group,
                no_bias: a.bool_or("no_bias", false)?,
            })
        }
        "Deconvolution" => {
            if a.get("target_shape")
                .is_some_and(|t| !matches!(t, "()" | "[]" | "None"))
            {
                return Err(a.err("Deconvolution with a target_shape is not supported; give pad and adj"));
            }
            let num_filter = a.usize("num_filter")?;
            let num_group = a.usize_or("num_group", 1)?;
            if num_filter == 0 || num_group == 0 || num_filter % num_group != 0 {
                return Err(a.err(format!(
                    "num_filter {num_filter} is not a positive multiple of num_group {num_group}"
                )));
            }
            let [ph, pw] = a.pair("pad", Some([0, 0]))?;
            Op::ConvTranspose(crate::ir::ConvTransposeAttrs {
                kernel: positive(&a, "kernel", a.pair("kernel", None)?)?,
                stride: positive(&a, "stride", a.pair("stride", Some([1, 1]))?)?,
                dilate: positive(&a, "dilate", a.pair("dilate", Some([1, 1]))?)?,
                pad: Padding2d::symmetric(ph, pw),
                output_padding: a.pair("adj", Some([0, 0]))?,
                num_filter,
                num_group,
                // MXNet's Deconvolution has no bias unless asked.
                no_bias: a.bool_or("no_bias", true)?,
            })
        }
        "UpSampling" => {
            if a.get("sample_type").unwrap_or("nearest") != "nearest" || a.usize_or("num_args", 1)? != 1 {
                return Err(a.err("only single-input nearest UpSampling is supported"));
            }
            let scale = a.usize("scale")?;
            if scale == 0 {
                return Err(a.err("UpSampling scale must be positive"));
            }
            Op::Resize(crate::ir::ResizeAttrs {
                mode: crate::ir::ResizeMode::Nearest(crate::ir::NearestRounding::Floor),
                coordinates: crate::ir::CoordinateTransform::Asymmetric,
                target: crate::ir::ResizeTarget::Scales(vec![1.0, 1.0, scale as f32, scale as f32]),
                antialias: false,
            })
        }
        "FullyConnected" => {
            let num_hidden = a.usize("num_hidden")?;
            if num_hidden == 0 {
                return Err(a.err("num_hidden must be positive"));
            }
            Op::FullyConnected(FcAttrs {
                num_hidden,
                no_bias: a.bool_or("no_bias", false)?,
                flatten: a.bool_or("flatten", true)?,
            })
        }
        "Activation" => {
            let act_type = a.required("act_type")?;
            Op::Activation(
                Activation::from_mxnet_act_type(act_type)
                    .ok_or_else(|| a.err(format!("unsupported act_type '{act_type}'")))?,
            )
        }
        "LeakyReLU" => match a.get("act_type").unwrap_or("leaky") {
            "leaky" => Op::Activation(Activation::LeakyRelu {
                slope: a.f64_or("slope", 0.25)? as f32,
            }),
            other => return Err(a.err(format!("unsupported LeakyReLU act_type '{other}'"))),
        },
        "clip" => Op::Activation(Activation::Clip {
            min: a.f64_or("a_min", f64::NEG_INFINITY)? as f32,
            max: a.f64_or("a_max", f64::INFINITY)? as f32,
        }),
        "_copy" | "identity" => Op::Identity,
        "relu" => Op::Activation(Activation::Relu),
        "sigmoid" => Op::Activation(Activation::Sigmoid),
        "tanh" => Op::Activation(Activation::Tanh),
        "Pooling" => {
            let global = a.bool_or("global_pool", false)?;
            let kernel = if global {
                a.pair("kernel", Some([1, 1]))?
            } else {
                a.pair("kernel", None)?
            };
            let kind = match a.get("pool_type").unwrap_or("max") {
                "max" => PoolKind::Max,
                "avg" => PoolKind::Avg,
                "sum" => PoolKind::Sum,
                other => return Err(a.err(format!("unsupported pool_type '{other}'"))),
            };
            let convention = match a.get("pooling_convention").unwrap_or("valid") {
                "valid" => PoolConvention::Valid,
                "full" => PoolConvention::Full,
                "same" => PoolConvention::Same,
                other => return Err(a.err(format!("unsupported pooling_convention '{other}'"))),
            };
            let [ph, pw] = a.pair("pad", Some([0, 0]))?;
            Op::Pooling(PoolAttrs {
                kind,
                kernel: if global {
                    kernel
                } else {
                    positive(&a, "kernel", kernel)?
                },
                stride: positive(&a, "stride", a.pair("stride", Some([1, 1]))?)?,
                pad: Padding2d::symmetric(ph, pw),
                global,
                convention,
                count_include_pad: a.bool_or("count_include_pad", true)?,
            })
        }
        "Flatten" | "flatten" => Op::Flatten { axis: 1 },
        "Dropout" => Op::Dropout,
        "LRN" => Op::Lrn(crate::ir::LrnAttrs {
            size: a.usize_or("nsize", 0).and_then(|n| {
                if n == 0 {
                    Err(a.err("LRN needs a positive nsize"))
                } else {
                    Ok(n)
                }
            })?,
            alpha: a.f64_or("alpha", 1e-4)? as f32,
            beta: a.f64_or("beta", 0.75)? as f32,
            bias: a.f64_or("knorm", 2.0)? as f32,
        }),
        "transpose" => {
            let axes = a.ints("axes")?.unwrap_or_default();
            let perm: Option<Vec<usize>> = axes.iter().map(|&x| usize::try_from(x).ok()).collect();
            match perm {
                Some(perm) if !perm.is_empty() => Op::Transpose { perm },
                _ => return Err(a.err(format!("transpose needs explicit non-negative axes, got {axes:?}"))),
            }
        }
        "BatchNorm" => {
            let axis = match a.get("axis") {
                None => 1,
                Some(v) => match v.parse::<i64>() {
                    Ok(1) => 1,
                    _ => return Err(a.err(format!("BatchNorm axis {v} is not supported (only axis 1, NCHW)"))),
                },
            };
            Op::BatchNorm(BatchNormAttrs {
                eps: a.f64_or("eps", 1e-3)?,
                fix_gamma: a.bool_or("fix_gamma", true)?,
                axis,
            })
        }
        "Concat" | "concat" => {
            let dim = a.get("dim").unwrap_or("1");
            match dim.parse::<i64>() {
                Ok(axis) => Op::Concat { axis },
                Err(_) => return Err(a.err(format!("Concat dim '{dim}' is not an integer"))),
            }
        }
        "SoftmaxOutput" | "Softmax" => Op::SoftmaxOutput,
        "softmax" => Op::Softmax {
            axis: a.get("axis").map_or(Ok(-1), |v| {
                v.parse().map_err(|_| a.err(format!("bad softmax axis '{v}'")))
            })?,
        },
        "log_softmax" => Op::LogSoftmax {
            axis: a.get("axis").map_or(Ok(-1), |v| {
                v.parse().map_err(|_| a.err(format!("bad log_softmax axis '{v}'")))
            })?,
        },
        "SoftmaxActivation" => {
            if a.get("mode") == Some("channel") {
                Op::Softmax { axis: 1 }
            } else {
                Op::Softmax { axis: -1 }
            }
        }
        "Reshape" | "reshape" => {
            if a.bool_or("reverse", false)? {
                return Err(a.err("Reshape with reverse=True is not supported"));
            }
            let shape = match a.ints("shape")? {
                Some(s) => s,
                None => a
                    .ints("target_shape")?
                    .ok_or_else(|| a.err("missing attribute 'shape'"))?,
            };
            if shape.iter().any(|&d| d < -3) {
                return Err(a.err(format!("Reshape code -4 (split) in {shape:?} is not supported")));
            }
            Op::Reshape { shape }
        }
        other => {
            return Err(GraphError::UnsupportedOp {
                node: node.to_string(),
                op: other.to_string(),
            });
        }
    })
}

fn tuple(v: [usize; 2]) -> String {
    format!("({}, {})", v[0], v[1])
}

fn bool_text(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

/// The MXNet attributes that describe `op`, for nodes accnn creates.
///
/// Fails only for a convolution or pooling window whose padding differs between the two sides of an
/// axis, which MXNet cannot express.
pub fn op_attrs(op: &Op) -> Result<BTreeMap<String, String>, GraphError> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    let symmetric = |pad: &Padding2d| {
        pad.as_symmetric()
            .map(|(h, w)| tuple([h, w]))
            .ok_or_else(|| GraphError::Invalid(format!("MXNet cannot express asymmetric padding {pad:?}")))
    };
    match op {
        Op::Binary {
            op: BinaryOp::PRelu, ..
        } => {
            return Err(GraphError::Invalid(
                "MXNet's PReLU takes its slope per channel, not broadcast numpy-style; accnn does not write it".into(),
            ));
        }
        Op::Variable | Op::Flatten { axis: 1 } | Op::SoftmaxOutput | Op::Binary { .. } | Op::Identity => {}
        Op::Opaque { op_type, .. } => {
            return Err(GraphError::Invalid(format!(
                "MXNet has no equivalent of the operator '{op_type}'"
            )));
        }
        Op::Flatten { axis } => {
            return Err(GraphError::Invalid(format!(
                "MXNet's Flatten keeps the first axis; it cannot flatten at axis {axis}"
            )));
        }
        Op::Convolution(c) => {
            put("kernel", tuple(c.kernel));
            put("stride", tuple(c.stride));
            put("dilate", tuple(c.dilate));
            put("pad", symmetric(&c.pad)?);
            put("num_filter", c.num_filter.to_string());
            put("num_group", c.num_group.to_string());
            put("no_bias", bool_text(c.no_bias));
        }
        Op::ConvTranspose(c) => {
            put("kernel", tuple(c.kernel));
            put("stride", tuple(c.stride));
            put("dilate", tuple(c.dilate));
            put("pad", symmetric(&c.pad)?);
            put("adj", tuple(c.output_padding));
            put("num_filter", c.num_filter.to_string());
            put("num_group", c.num_group.to_string());
            put("no_bias", bool_text(c.no_bias));
        }
        Op::Normalization(n) => {
            return Err(GraphError::Invalid(format!(
                "accnn does not write {:?} normalisation to MXNet",
                n.kind
            )));
        }
        Op::Resize(r) => {
            use crate::ir::{CoordinateTransform, NearestRounding, ResizeMode, ResizeTarget};
            let scale = match (&r.mode, &r.coordinates, &r.target) {
                (
                    ResizeMode::Nearest(NearestRounding::Floor),
                    CoordinateTransform::Asymmetric,
                    ResizeTarget::Scales(s),
                ) if s.len() == 4
                    && s[0] == 1.0
                    && s[1] == 1.0
                    && s[2] == s[3]
                    && s[2] >= 1.0
                    && s[2].fract() == 0.0 =>
                {
                    s[2] as usize
                }
                _ => {
                    return Err(GraphError::Invalid(format!(
                        "MXNet's UpSampling is nearest by an integer factor on H and W; it cannot express {r:?}"
                    )));
                }
            };
            put("scale", scale.to_string());
            put("sample_type", "nearest".to_string());
            put("num_args", "1".to_string());
        }
        Op::FullyConnected(f) => {
            put("num_hidden", f.num_hidden.to_string());
            put("no_bias", bool_text(f.no_bias));
            put("flatten", bool_text(f.flatten));
        }
        Op::Activation(Activation::LeakyRelu { slope }) => {
            put("act_type", "leaky".to_string());
            put("slope", slope.to_string());
        }
        Op::Activation(Activation::Clip { min, max }) => {
            put("a_min", min.to_string());
            put("a_max", max.to_string());
        }
        Op::Activation(a) => {
            let act_type = a
                .mxnet_act_type()
                .ok_or_else(|| GraphError::Invalid(format!("MXNet has no activation {a:?}")))?;
            put("act_type", act_type.to_string());
        }
        Op::Pooling(p) => {
            put("kernel", tuple(p.kernel));
            put("stride", tuple(p.stride));
            put("pad", symmetric(&p.pad)?);
            put("global_pool", bool_text(p.global));
            put(
                "pool_type",
                match p.kind {
                    PoolKind::Max => "max",
                    PoolKind::Avg => "avg",
                    PoolKind::Sum => "sum",
                }
                .to_string(),
            );
            put(
                "pooling_convention",
                match p.convention {
                    PoolConvention::Valid => "valid",
                    PoolConvention::Full | PoolConvention::Ceil => "full",
                    PoolConvention::Same => "same",
                }
                .to_string(),
            );
        }
        Op::Dropout => put("p", "0.5".to_string()),
        Op::BatchNorm(b) => {
            put("eps", b.eps.to_string());
            put("fix_gamma", bool_text(b.fix_gamma));
            put("axis", b.axis.to_string());
        }
        Op::Concat { axis } => put("dim", axis.to_string()),
        Op::Transpose { perm } => put(
            "axes",
            format!("({})", perm.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
        ),
        Op::MatMul => {
            return Err(GraphError::Invalid(
                "MXNet's batch_dot does not broadcast like ONNX MatMul; accnn does not write it".into(),
            ));
        }
        Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            return Err(GraphError::Invalid(
                "accnn does not write ONNX Squeeze or Unsqueeze to MXNet".into(),
            ));
        }
        Op::Slice(_) => {
            return Err(GraphError::Invalid(
                "accnn does not write ONNX Slice to MXNet (its clamping differs)".into(),
            ));
        }
        Op::Reduce(r) => {
            if r.op.mxnet_supported() {
                if let Some(axes) = &r.axes {
                    put(
                        "axis",
                        format!("({})", axes.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
                    );
                }
                put("keepdims", bool_text(r.keep_dims));
            } else {
                return Err(GraphError::Invalid(format!("MXNet has no {:?} reduction", r.op)));
            }
        }
        Op::Lrn(l) => {
            put("nsize", l.size.to_string());
            put("alpha", l.alpha.to_string());
            put("beta", l.beta.to_string());
            put("knorm", l.bias.to_string());
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => put("axis", axis.to_string()),
        Op::Pad(_) | Op::Gather { .. } | Op::Expand { .. } | Op::Tile { .. } | Op::SpaceDepth(_) | Op::Where => {
            return Err(GraphError::Invalid(format!(
                "accnn does not write ONNX {} to MXNet",
                op.mxnet_name()
            )));
        }
        Op::Reshape { shape } => put(
            "shape",
            format!("({})", shape.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
        ),
    }
    Ok(m)
}
