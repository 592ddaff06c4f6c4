//! CPU pooling with MXNet's window conventions (valid/full/same, padding, count_include_pad).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use accnn_graph::ir::{PoolAttrs, PoolKind};

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
        // Windows start `pad` before the input and are clipped `end` after its start.
        let (kernel, stride, pad, end) = if p.global {
            ([h, w], [1, 1], [0, 0], [h, w])
        } else {
            (
                p.kernel,
                p.stride,
                [p.pad.top, p.pad.left],
                [h + p.pad.bottom, w + p.pad.right],
            )
        };
        let mut out = vec![0f32; n * c * ho * wo];
        let halving = p.kind == PoolKind::Max && kernel == [2, 2] && stride == [2, 2] && pad == [0, 0];
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(plane, o)| {
            let src = &x[plane * h * w..(plane + 1) * h * w];
            for oy in 0..ho {
                let y0 = (oy * stride[0]) as isize - pad[0] as isize;
                let y1 = (y0 + kernel[0] as isize).min(end[0] as isize);
                let (ya, yb) = (y0.max(0) as usize, (y1.min(h as isize)).max(0) as usize);
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
                    let x0 = (ox * stride[1]) as isize - pad[1] as isize;
                    let x1 = (x0 + kernel[1] as isize).min(end[1] as isize);
                    let (xa, xb) = (x0.max(0) as usize, (x1.min(w as isize)).max(0) as usize);
                    let window = (ya..yb).flat_map(|y| &src[y * w + xa..y * w + xb]);
                    *v = match p.kind {
                        PoolKind::Max => window.fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
                        PoolKind::Sum => window.sum(),
                        PoolKind::Avg if p.count_include_pad => window.sum::<f32>() / ((y1 - y0) * (x1 - x0)) as f32,
                        PoolKind::Avg => {
                            window.sum::<f32>() / ((yb.saturating_sub(ya)) * (xb.saturating_sub(xa))).max(1) as f32
                        }
                    };
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}
