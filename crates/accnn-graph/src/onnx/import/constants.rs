//! Constant folding at import. A node whose inputs are all known — constants, or for `Shape` and
//! `Size` a tensor whose shape is known at the input shape the model is read for — is evaluated
//! once and its output becomes a constant. This turns weights made by `ConstantOfShape`,
//! `Unsqueeze`, `Cast` or `Transpose` into plain weights, and the shape subgraphs of exporters
//! (`Shape → Gather → Unsqueeze → Concat → Reshape`) into constant reshape targets.

use super::Importer;
use super::convert::unary;
use crate::error::GraphError;
use crate::onnx::attrs::NodeAttrs;
use crate::onnx::proto::NodeProto;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::{Value, decode};
use crate::ops::layout;
use crate::ops::resolve_axis;
use crate::ops::shape_ops::{squeezed, unsqueezed};
use crate::tensor::Tensor;

/// A constant's elements, in the two kinds accnn computes with.
#[derive(Clone, Debug)]
enum Elements {
    Float(Vec<f32>),
    Int(Vec<i64>),
}

/// A constant: its dimensions and elements.
#[derive(Clone, Debug)]
struct Known {
    dims: Vec<usize>,
    elements: Elements,
}

impl Known {
    fn ints(dims: Vec<usize>, values: Vec<i64>) -> Self {
        Known {
            dims,
            elements: Elements::Int(values),
        }
    }

    fn int_values(&self) -> Option<&[i64]> {
        match &self.elements {
            Elements::Int(v) => Some(v),
            Elements::Float(_) => None,
        }
    }

    fn into_value(self) -> Result<Value, GraphError> {
        Ok(match self.elements {
            Elements::Float(data) => Value::Float(Tensor::new(self.dims, data)?),
            Elements::Int(values) => Value::Ints {
                dims: self.dims,
                values,
            },
        })
    }
}

/// A layout function (generic over the element type) applied to either kind of elements.
macro_rules! each_kind {
    ($elements:expr, $v:ident => $body:expr) => {
        match $elements {
            Elements::Float($v) => $body.map(|(dims, e)| Known {
                dims,
                elements: Elements::Float(e),
            }),
            Elements::Int($v) => $body.map(|(dims, e)| Known {
                dims,
                elements: Elements::Int(e),
            }),
        }
    };
}

/// Whether ONNX element type `to` is one accnn folds as floats (`Some(true)`), as integers
/// (`Some(false)`), or not at all.
fn cast_target(to: i64) -> Option<bool> {
    use DataType as D;
    match D::try_from(to as i32).ok()? {
        D::Float | D::Float16 | D::Double | D::Bfloat16 => Some(true),
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::Uint8 | D::Uint16 | D::Uint32 | D::Uint64 | D::Bool => {
            Some(false)
        }
        _ => None,
    }
}

fn cast(v: Known, to: i64) -> Option<Known> {
    let to_float = cast_target(to)?;
    let to_bool = to == DataType::Bool as i64;
    let elements = match (v.elements, to_float) {
        (Elements::Float(f), true) => Elements::Float(f),
        (Elements::Float(f), false) if to_bool => Elements::Int(f.iter().map(|&x| i64::from(x != 0.0)).collect()),
        (Elements::Float(f), false) => Elements::Int(f.iter().map(|&x| x as i64).collect()),
        (Elements::Int(i), true) => Elements::Float(i.iter().map(|&x| x as f32).collect()),
        (Elements::Int(i), false) if to_bool => Elements::Int(i.iter().map(|&x| i64::from(x != 0)).collect()),
        (Elements::Int(i), false) => Elements::Int(i),
    };
    Some(Known { dims: v.dims, elements })
}

/// `ConstantOfShape`: `shape` filled with the one value of `fill` (float 0 when absent).
fn constant_of_shape(shape: &[i64], fill: Option<Value>, a: &NodeAttrs) -> Result<Option<Known>, GraphError> {
    let Some(dims) = shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<_>>>()
    else {
        return Err(a.err(format!("ConstantOfShape of negative dimensions {shape:?}")));
    };
    let count = crate::tensor::element_count(&dims)?;
    Ok(match fill {
        None => Some(Known {
            dims,
            elements: Elements::Float(vec![0.0; count]),
        }),
        Some(Value::Float(t)) if t.len() == 1 => Some(Known {
            dims,
            elements: Elements::Float(vec![t.data()[0]; count]),
        }),
        Some(Value::Ints { values, .. }) if values.len() == 1 => Some(Known::ints(dims, vec![values[0]; count])),
        Some(_) => None,
    })
}

/// `Concat` of constants of one kind.
fn concat(parts: &[Known], axis: i64) -> Option<Known> {
    let axis = resolve_axis(axis, parts.first()?.dims.len())?;
    match &parts[0].elements {
        Elements::Float(_) => {
            let views: Option<Vec<(&[usize], &[f32])>> = parts
                .iter()
                .map(|p| match &p.elements {
                    Elements::Float(f) => Some((&p.dims[..], &f[..])),
                    Elements::Int(_) => None,
                })
                .collect();
            let (dims, e) = layout::concat(&views?, axis)?;
            Some(Known {
                dims,
                elements: Elements::Float(e),
            })
        }
        Elements::Int(_) => {
            let views: Option<Vec<(&[usize], &[i64])>> =
                parts.iter().map(|p| p.int_values().map(|v| (&p.dims[..], v))).collect();
            let (dims, e) = layout::concat(&views?, axis)?;
            Some(Known::ints(dims, e))
        }
    }
}

/// `Range` of integer or float scalars.
fn range(start: Known, limit: Known, delta: Known) -> Option<Known> {
    match (start.elements, limit.elements, delta.elements) {
        (Elements::Int(s), Elements::Int(l), Elements::Int(d)) => {
            let (s, l, d) = (*s.first()?, *l.first()?, *d.first()?);
            let count = if d == 0 {
                return None;
            } else {
                ((l - s) as f64 / d as f64).ceil().max(0.0) as usize
            };
            Some(Known::ints(vec![count], (0..count as i64).map(|k| s + k * d).collect()))
        }
        (Elements::Float(s), Elements::Float(l), Elements::Float(d)) => {
            let (s, l, d) = (*s.first()?, *l.first()?, *d.first()?);
            let count = if d == 0.0 {
                return None;
            } else {
                ((l - s) / d).ceil().max(0.0) as usize
            };
            Some(Known {
                dims: vec![count],
                elements: Elements::Float((0..count).map(|k| s + k as f32 * d).collect()),
            })
        }
        _ => None,
    }
}

/// `Where`: `x` where `cond` is non-zero, else `y`, all three broadcast together.
fn select(cond: &Known, x: &Known, y: &Known) -> Option<Known> {
    let flags = cond.int_values()?;
    let broadcast = |a: &[usize], b: &[usize]| crate::ops::elementwise::broadcast("", a, b).ok();
    let out = broadcast(&broadcast(&cond.dims, &x.dims)?, &y.dims)?;
    let units = vec![(); out.iter().product()];
    // For every output position, the element of `v` it reads.
    let positions = |dims: &[usize]| -> Option<Vec<usize>> {
        let index: Vec<usize> = (0..dims.iter().product()).collect();
        layout::broadcast_map((dims, &index), (&out, &units), |i, _| i).map(|(_, p)| p)
    };
    let (pc, px, py) = (positions(&cond.dims)?, positions(&x.dims)?, positions(&y.dims)?);
    fn pick<T: Copy>(flags: &[i64], pc: &[usize], px: &[usize], py: &[usize], a: &[T], b: &[T]) -> Vec<T> {
        (0..pc.len())
            .map(|k| if flags[pc[k]] != 0 { a[px[k]] } else { b[py[k]] })
            .collect()
    }
    match (&x.elements, &y.elements) {
        (Elements::Int(a), Elements::Int(b)) => Some(Known::ints(out, pick(flags, &pc, &px, &py, a, b))),
        (Elements::Float(a), Elements::Float(b)) => Some(Known {
            elements: Elements::Float(pick(flags, &pc, &px, &py, a, b)),
            dims: out,
        }),
        _ => None,
    }
}

/// `f` on integers or `g` on floats, elementwise over the broadcast operands of one kind.
fn binary(a: &Known, b: &Known, f: impl Fn(i64, i64) -> Option<i64>, g: impl Fn(f32, f32) -> f32) -> Option<Known> {
    match (&a.elements, &b.elements) {
        (Elements::Int(x), Elements::Int(y)) => {
            let (dims, v) = layout::broadcast_map((&a.dims, x), (&b.dims, y), f)?;
            Some(Known::ints(dims, v.into_iter().collect::<Option<_>>()?))
        }
        (Elements::Float(x), Elements::Float(y)) => {
            let (dims, v) = layout::broadcast_map((&a.dims, x), (&b.dims, y), g)?;
            Some(Known {
                dims,
                elements: Elements::Float(v),
            })
        }
        _ => None,
    }
}

/// The arithmetic ONNX operator `op_type` on two constants.
fn arithmetic(op_type: &str, x: &Known, y: &Known) -> Option<Known> {
    match op_type {
        "Add" => binary(x, y, |p, q| p.checked_add(q), |p, q| p + q),
        "Sub" => binary(x, y, |p, q| p.checked_sub(q), |p, q| p - q),
        "Mul" => binary(x, y, |p, q| p.checked_mul(q), |p, q| p * q),
        // ONNX integer division truncates toward zero, like Rust's.
        "Div" => binary(x, y, |p, q| p.checked_div(q), |p, q| p / q),
        "Pow" => binary(
            x,
            y,
            |p, q| u32::try_from(q).ok().and_then(|q| p.checked_pow(q)),
            f32::powf,
        ),
        "Min" => binary(x, y, |p, q| Some(p.min(q)), f32::min),
        "Max" => binary(x, y, |p, q| Some(p.max(q)), f32::max),
        _ => comparison(op_type, x, y),
    }
}

/// A comparison of two constants of one kind, as 0/1 integers.
fn comparison(op_type: &str, a: &Known, b: &Known) -> Option<Known> {
    let f: fn(f64, f64) -> bool = match op_type {
        "Equal" => |p, q| p == q,
        "Less" => |p, q| p < q,
        "Greater" => |p, q| p > q,
        "LessOrEqual" => |p, q| p <= q,
        "GreaterOrEqual" => |p, q| p >= q,
        _ => return None,
    };
    let (dims, v) = match (&a.elements, &b.elements) {
        (Elements::Int(x), Elements::Int(y)) => {
            layout::broadcast_map((&a.dims, x), (&b.dims, y), |p, q| i64::from(f(p as f64, q as f64)))?
        }
        (Elements::Float(x), Elements::Float(y)) => {
            layout::broadcast_map((&a.dims, x), (&b.dims, y), |p, q| i64::from(f(p as f64, q as f64)))?
        }
        _ => return None,
    };
    Some(Known::ints(dims, v))
}

impl Importer {
    /// The value of tensor `name` when it is a constant of a kind accnn computes with.
    fn known(&self, name: &str) -> Option<Known> {
        if let Some(t) = self.float_const(name) {
            return Some(Known {
                dims: t.shape().to_vec(),
                elements: Elements::Float(t.data().to_vec()),
            });
        }
        match self.consts.get(name)? {
            Value::Ints { dims, values } => Some(Known::ints(dims.clone(), values.clone())),
            _ => None,
        }
    }

    /// The shape of tensor `name` at the input shape being read: constants' and IR values' alike.
    pub(super) fn known_shape(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(e) = self.produced.get(name) {
            return self.shapes.known(*e).map(<[usize]>::to_vec);
        }
        self.known(name).map(|k| k.dims)
    }

    /// The output of `n` computed now, when its inputs are known and it has one output that is not a
    /// graph output; `None` leaves it to be converted (or kept opaque).
    pub(super) fn fold(
        &self,
        n: &NodeProto,
        a: &NodeAttrs,
        is_graph_output: bool,
    ) -> Result<Option<Value>, GraphError> {
        if n.output.len() != 1 || is_graph_output || !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Ok(None);
        }
        let input = |k: usize| n.input.get(k).filter(|s| !s.is_empty());
        let arg = |k: usize| input(k).and_then(|s| self.known(s));
        let ints = |k: usize| arg(k).and_then(|v| v.int_values().map(<[i64]>::to_vec));
        // Axes are an attribute before opset 13 (Squeeze, Unsqueeze), an input after.
        let axes = || if self.opset < 13 { a.ints("axes") } else { ints(1) };
        let folded: Option<Known> = match n.op_type.as_str() {
            "Identity" => arg(0),
            "ConstantOfShape" => {
                let Some(shape) = ints(0) else { return Ok(None) };
                let fill = n
                    .attribute
                    .iter()
                    .find(|x| x.name == "value")
                    .and_then(|x| x.t.as_ref());
                let fill = fill.map(|t| decode(t, std::path::Path::new(a.label))).transpose()?;
                constant_of_shape(&shape, fill, a)?
            }
            "Shape" => input(0).and_then(|s| self.known_shape(s)).map(|dims| {
                let rank = dims.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let start = clamp(a.int("start").unwrap_or(0));
                let end = clamp(a.int("end").unwrap_or(rank)).max(start);
                let values: Vec<i64> = dims[start..end].iter().map(|&d| d as i64).collect();
                Known::ints(vec![values.len()], values)
            }),
            "Size" => input(0)
                .and_then(|s| self.known_shape(s))
                .map(|dims| Known::ints(vec![], vec![dims.iter().product::<usize>() as i64])),
            "Cast" => arg(0).zip(a.int("to")).and_then(|(v, to)| cast(v, to)),
            "Unsqueeze" => arg(0).zip(axes()).and_then(|(v, axes)| {
                let dims = unsqueezed(&v.dims, &axes)?;
                Some(Known { dims, ..v })
            }),
            "Squeeze" => arg(0).and_then(|v| {
                let dims = squeezed(&v.dims, axes().as_deref())?;
                Some(Known { dims, ..v })
            }),
            "Flatten" => arg(0).and_then(|v| {
                let dims = crate::ops::shape_ops::flatten(&v.dims, a.int("axis").unwrap_or(1))?.to_vec();
                Some(Known { dims, ..v })
            }),
            "Reshape" => match (arg(0), ints(1)) {
                (Some(v), Some(s)) if a.int("allowzero").unwrap_or(0) == 0 || !s.contains(&0) => {
                    let dims = crate::ops::shape_ops::reshape(a.label, &v.dims, &s)?;
                    Some(Known { dims, ..v })
                }
                _ => None,
            },
            "Concat" => n
                .input
                .iter()
                .map(|s| self.known(s))
                .collect::<Option<Vec<_>>>()
                .and_then(|parts| concat(&parts, a.int("axis")?)),
            "Gather" => arg(0).zip(arg(1)).and_then(|(v, idx)| {
                let axis = resolve_axis(a.int("axis").unwrap_or(0), v.dims.len())?;
                let indices = idx.int_values()?;
                each_kind!(&v.elements, e => layout::gather(&v.dims, e, axis, indices, &idx.dims))
            }),
            "Slice" => {
                let Some(v) = arg(0) else { return Ok(None) };
                let (starts, ends, axes, steps) = if self.opset < 10 {
                    (a.ints("starts"), a.ints("ends"), a.ints("axes"), None)
                } else {
                    (ints(1), ints(2), ints(3), ints(4))
                };
                let (Some(starts), Some(ends)) = (starts, ends) else {
                    return Ok(None);
                };
                let ranges = layout::slice_axes(&v.dims, &starts, &ends, axes.as_deref(), steps.as_deref())
                    .map_err(|m| a.err(m))?;
                each_kind!(&v.elements, e => Some(layout::slice(&v.dims, e, &ranges)))
            }
            "Transpose" => arg(0).and_then(|v| {
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p.iter().map(|&x| usize::try_from(x).ok()).collect::<Option<_>>()?,
                    None => (0..v.dims.len()).rev().collect(),
                };
                each_kind!(&v.elements, e => layout::transpose(&v.dims, e, &perm))
            }),
            "Expand" => arg(0).zip(ints(1)).and_then(|(v, shape)| {
                let target: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
                let ones = vec![(); target.iter().product()];
                each_kind!(&v.elements, e => layout::broadcast_map((&v.dims, e), (&target, &ones), |x, _| x))
            }),
            "Range" => match (arg(0), arg(1), arg(2)) {
                (Some(s), Some(l), Some(d)) => range(s, l, d),
                _ => None,
            },
            "Where" => match (arg(0), arg(1), arg(2)) {
                (Some(c), Some(x), Some(y)) => select(&c, &x, &y),
                _ => None,
            },
            "Not" => arg(0).and_then(|v| {
                let values = v.int_values()?.iter().map(|&x| i64::from(x == 0)).collect();
                Some(Known::ints(v.dims, values))
            }),
            "Neg" => arg(0).map(|v| match v.elements {
                Elements::Int(i) => Known::ints(v.dims, i.iter().map(|&x| -x).collect()),
                Elements::Float(f) => Known {
                    dims: v.dims,
                    elements: Elements::Float(f.iter().map(|&x| -x).collect()),
                },
            }),
            op_type
                if n.input.len() == 2
                    && matches!(
                        op_type,
                        "Add"
                            | "Sub"
                            | "Mul"
                            | "Div"
                            | "Pow"
                            | "Min"
                            | "Max"
                            | "Equal"
                            | "Less"
                            | "Greater"
                            | "LessOrEqual"
                            | "GreaterOrEqual"
                    ) =>
            {
                arg(0).zip(arg(1)).and_then(|(x, y)| arithmetic(op_type, &x, &y))
            }
            op_type => match (unary(op_type, a), arg(0)) {
                (
                    Some(f),
                    Some(Known {
                        dims,
                        elements: Elements::Float(x),
                    }),
                ) => Some(Known {
                    dims,
                    elements: Elements::Float(x.iter().map(|&v| f.apply(v as f64) as f32).collect()),
                }),
                _ => None,
            },
        };
        folded.map(Known::into_value).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[usize], values: &[i64]) -> Known {
        Known::ints(dims.to_vec(), values.to_vec())
    }

    fn values(k: &Known) -> (Vec<usize>, Vec<i64>) {
        (k.dims.clone(), k.int_values().expect("integers").to_vec())
    }

    #[test]
    fn integer_arithmetic_follows_onnx() {
        let (a, b) = (ints(&[3], &[7, -7, 9]), ints(&[], &[2]));
        assert_eq!(
            values(&arithmetic("Div", &a, &b).expect("folds")),
            (vec![3], vec![3, -3, 4])
        );
        assert_eq!(
            values(&arithmetic("Mul", &a, &b).expect("folds")),
            (vec![3], vec![14, -14, 18])
        );
        assert_eq!(
            values(&arithmetic("Equal", &a, &ints(&[3], &[7, 0, 9])).expect("folds")).1,
            vec![1, 0, 1]
        );
        // Overflow and division by zero are left unfolded rather than wrapped.
        assert!(arithmetic("Div", &a, &ints(&[], &[0])).is_none());
        assert!(arithmetic("Mul", &ints(&[], &[i64::MAX]), &b).is_none());
    }

    #[test]
    fn where_range_and_cast_give_hand_computed_values() {
        let picked = select(&ints(&[2, 1], &[1, 0]), &ints(&[3], &[1, 2, 3]), &ints(&[], &[-1])).expect("folds");
        assert_eq!(values(&picked), (vec![2, 3], vec![1, 2, 3, -1, -1, -1]));
        let r = range(ints(&[], &[10]), ints(&[], &[1]), ints(&[], &[-4])).expect("folds");
        assert_eq!(values(&r), (vec![3], vec![10, 6, 2]));
        let f = Known {
            dims: vec![3],
            elements: Elements::Float(vec![-1.7, 0.0, 2.9]),
        };
        assert_eq!(
            values(&cast(f.clone(), DataType::Int64 as i64).expect("folds")).1,
            vec![-1, 0, 2]
        );
        assert_eq!(values(&cast(f, DataType::Bool as i64).expect("folds")).1, vec![1, 0, 1]);
    }
}
