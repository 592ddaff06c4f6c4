//! The operators that rearrange values by index (Pad, Gather, Expand, Tile, DepthToSpace and
//! SpaceToDepth), as candle tensor ops on any device: one `index_select` per axis that moves,
//! following the per-axis sources the graph crate defines for its reference.

use accnn_graph::ir::{PadAttrs, SpaceDepth};
use accnn_graph::ops::rearrange::{AxisSource, expanded, gathered, tile_sources};
use candle_core::{Error, Result, Tensor};

/// `x` read through per-axis sources; `fill` where a source is `None`.
fn remap(x: &Tensor, sources: &[AxisSource], fill: f32) -> Result<Tensor> {
    let mut y = x.clone();
    for (axis, source) in sources.iter().enumerate() {
        let n = x.dims()[axis];
        let identity = source.len() == n && source.iter().enumerate().all(|(o, s)| *s == Some(o));
        if identity {
            continue;
        }
        let index: Vec<u32> = source.iter().map(|s| s.unwrap_or(0) as u32).collect();
        let len = index.len();
        y = y.index_select(&Tensor::from_vec(index, len, x.device())?, axis)?;
        if source.iter().any(Option::is_none) {
            // Positions outside the input: the gathered value times 0, plus the fill.
            let mut shape = vec![1; x.rank()];
            shape[axis] = len;
            let keep: Vec<f32> = source.iter().map(|s| if s.is_some() { 1.0 } else { 0.0 }).collect();
            let add: Vec<f32> = source.iter().map(|s| if s.is_some() { 0.0 } else { fill }).collect();
            let as_tensor = |v: Vec<f32>| Tensor::from_vec(v, shape.clone(), x.device())?.to_dtype(x.dtype());
            y = y.broadcast_mul(&as_tensor(keep)?)?.broadcast_add(&as_tensor(add)?)?;
        }
    }
    y.contiguous()
}

pub(crate) fn pad(p: &PadAttrs, x: &Tensor) -> Result<Tensor> {
    let sources = p
        .sources(x.dims())
        .ok_or_else(|| Error::Msg(format!("pads {:?} do not fit {:?}", p.pads, x.dims())))?;
    remap(x, &sources, p.fill())
}

pub(crate) fn tile(repeats: &[usize], x: &Tensor) -> Result<Tensor> {
    let sources = tile_sources(x.dims(), repeats)
        .ok_or_else(|| Error::Msg(format!("{} repeats for {:?}", repeats.len(), x.dims())))?;
    remap(x, &sources, 0.0)
}

pub(crate) fn expand(shape: &[i64], x: &Tensor) -> Result<Tensor> {
    let out =
        expanded(x.dims(), shape).ok_or_else(|| Error::Msg(format!("cannot expand {:?} to {shape:?}", x.dims())))?;
    x.broadcast_as(out)?.contiguous()
}

pub(crate) fn gather(axis: i64, indices: &[i64], index_dims: &[usize], x: &Tensor) -> Result<Tensor> {
    let bad = || {
        Error::Msg(format!(
            "gather axis {axis} or an index is out of range for {:?}",
            x.dims()
        ))
    };
    let a = accnn_graph::ops::resolve_axis(axis, x.rank()).ok_or_else(bad)?;
    let n = x.dims()[a] as i64;
    let index: Vec<u32> = indices
        .iter()
        .map(|&i| {
            let i = if i < 0 { i + n } else { i };
            (0..n).contains(&i).then_some(i as u32)
        })
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let out = gathered(x.dims(), axis, index_dims).ok_or_else(bad)?;
    let len = index.len();
    x.index_select(&Tensor::from_vec(index, len, x.device())?, a)?
        .reshape(out)
}

pub(crate) fn space_depth(s: SpaceDepth, x: &Tensor) -> Result<Tensor> {
    let (view, perm, out) = s
        .plan(x.dims())
        .ok_or_else(|| Error::Msg(format!("{s:?} does not fit {:?}", x.dims())))?;
    x.reshape(view.to_vec())?
        .permute(perm.to_vec())?
        .contiguous()?
        .reshape(out.to_vec())
}
