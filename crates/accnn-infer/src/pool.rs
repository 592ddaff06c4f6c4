//! CPU pooling with MXNet's window conventions (valid/full/same, padding, count_include_pad).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use accnn_graph::ir::{PoolAttrs, PoolKind};

/// One pooling window along one axis.
pub(crate) struct Window {
    /// Where it starts (`-pad` for the first) and ends, clipped to the padded extent (`size + pad`).
    start: isize,
    end: isize,
    /// The cells of it inside the input.
    pub lo: usize,
    pub hi: usize,
}

impl Window {
    /// Its cells in an average's divisor: padding included or not, as the layer says.
    pub fn count(&self, p: &PoolAttrs) -> usize {
        if p.count_include_pad {
            (self.end - self.start).max(0) as usize
        } else {
            self.hi.saturating_sub(self.lo)
        }
    }
}

/// Window `o` along `axis` (0: rows, 1: columns) of an input `size` cells long: windows start `pad`
/// before the input and are clipped `pad` after its end (MXNet's `full` convention lets the last
/// one reach past it).
pub(crate) fn window(p: &PoolAttrs, axis: usize, o: usize, size: usize) -> Window {
    let (kernel, stride, before, after) = if p.global {
        (size, 1, 0, 0)
    } else {
        let pad = [(p.pad.top, p.pad.bottom), (p.pad.left, p.pad.right)][axis];
        (p.kernel[axis], p.stride[axis], pad.0, pad.1)
    };
    let start = (o * stride) as isize - before as isize;
    let end = (start + kernel as isize).min((size + after) as isize);
    Window {
        start,
        end,
        lo: start.max(0) as usize,
        hi: end.min(size as isize).max(0) as usize,
    }
}

pub(crate) struct PoolKernel {
    pub attrs: PoolAttrs,
}

impl CustomOp1 for PoolKernel {
    fn name(&self) -> &'static str {
        "accnn-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, [n, c, h, w]) = crate::op_input(storage, layout, self.name())?;
        let p = &self.attrs;
        let (ho, wo) = accnn_graph::shape::pool_output_hw(p, h, w)
            .ok_or_else(|| candle_core::Error::Msg(format!("pooling window does not fit {h}x{w}")))?;
        let mut out = vec![0f32; n * c * ho * wo];
        let halving = p.kind == PoolKind::Max
            && !p.global
            && p.kernel == [2, 2]
            && p.stride == [2, 2]
            && [p.pad.top, p.pad.left] == [0, 0];
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(plane, o)| {
            let src = &x[plane * h * w..(plane + 1) * h * w];
            for oy in 0..ho {
                let rows = window(p, 0, oy, h);
                let (ya, yb) = (rows.lo, rows.hi);
                let row = &mut o[oy * wo..(oy + 1) * wo];
                if halving && yb == ya + 2 && 2 * wo <= w {
                    // The common 2x2/2 max pooling, with whole windows: two rows, pairwise maxima.
                    let (r0, r1) = (&src[ya * w..ya * w + 2 * wo], &src[(ya + 1) * w..(ya + 1) * w + 2 * wo]);
                    for ((v, a), b) in row.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                        *v = a[0].max(a[1]).max(b[0].max(b[1]));
                    }
                    continue;
                }
                for (ox, v) in row.iter_mut().enumerate() {
                    let cols = window(p, 1, ox, w);
                    let (xa, xb) = (cols.lo, cols.hi);
                    let values = (ya..yb).flat_map(|y| &src[y * w + xa..y * w + xb]);
                    *v = match p.kind {
                        PoolKind::Max => values.fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
                        PoolKind::Sum => values.sum(),
                        PoolKind::Avg => values.sum::<f32>() / (rows.count(p) * cols.count(p)).max(1) as f32,
                    };
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}
