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
        // Windows are separable: reduce each output row's input rows into one row (contiguous,
        // vectorised), then each output's columns of that row.
        let rows: Vec<Window> = (0..ho).map(|o| window(p, 0, o, h)).collect();
        let cols: Vec<Window> = (0..wo).map(|o| window(p, 1, o, w)).collect();
        let max = p.kind == PoolKind::Max;
        let empty = if max { f32::NEG_INFINITY } else { 0.0 };
        let halving = max && !p.global && p.kernel == [2, 2] && p.stride == [2, 2] && [p.pad.top, p.pad.left] == [0, 0];
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(plane, o)| {
            let src = &x[plane * h * w..(plane + 1) * h * w];
            let mut line = vec![empty; w];
            for (rw, dst) in rows.iter().zip(o.chunks_mut(wo)) {
                if halving && rw.hi == rw.lo + 2 && 2 * wo <= w {
                    // The common 2x2/2 max pooling, with whole windows: pairwise maxima of two rows.
                    let r0 = &src[rw.lo * w..rw.lo * w + 2 * wo];
                    let r1 = &src[(rw.lo + 1) * w..(rw.lo + 1) * w + 2 * wo];
                    for ((v, a), b) in dst.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                        *v = a[0].max(a[1]).max(b[0].max(b[1]));
                    }
                    continue;
                }
                line.fill(empty);
                for y in rw.lo..rw.hi {
                    let row = &src[y * w..(y + 1) * w];
                    if max {
                        line.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
                    } else {
                        line.iter_mut().zip(row).for_each(|(m, &v)| *m += v);
                    }
                }
                for (cw, v) in cols.iter().zip(dst.iter_mut()) {
                    let cells = &line[cw.lo..cw.hi.max(cw.lo)];
                    *v = match p.kind {
                        PoolKind::Max => cells.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
                        PoolKind::Sum => cells.iter().sum(),
                        PoolKind::Avg => cells.iter().sum::<f32>() / (rw.count(p) * cw.count(p)).max(1) as f32,
                    };
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}
