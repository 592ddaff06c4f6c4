//! CPU pooling with MXNet's window conventions (valid/full/same, padding, count_include_pad).

use std::mem::MaybeUninit;

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
        // Every value is written by `Plane::pool`, so the output is not zero-filled first (a pass
        // over memory on one thread: a sixth of VGG-16's first pooling).
        let mut out: Vec<f32> = Vec::with_capacity(n * c * ho * wo);
        // Windows are separable: reduce each output row's input rows into one row (contiguous,
        // vectorised), then each output's columns of that row.
        let rows: Vec<Window> = (0..ho).map(|o| window(p, 0, o, h)).collect();
        let cols: Vec<Window> = (0..wo).map(|o| window(p, 1, o, w)).collect();
        let plane = Plane::new(p, &rows, &cols, w);
        #[cfg(target_arch = "x86_64")]
        let wide = std::arch::is_x86_feature_detected!("avx512f");
        // Each worker's line and phases, reused from plane to plane.
        let scratch = || plane.scratch();
        out.spare_capacity_mut()[..n * c * ho * wo]
            .par_chunks_mut(ho * wo)
            .enumerate()
            .for_each_init(scratch, |(line, phases, row), (k, o)| {
                let src = &x[k * h * w..(k + 1) * h * w];
                #[cfg(target_arch = "x86_64")]
                if wide {
                    // SAFETY: the CPU has AVX-512F (checked above).
                    unsafe { plane.pool_avx512(src, o, line, phases, row) };
                    return;
                }
                plane.pool(src, o, line, phases, row);
            });
        // SAFETY: `Plane::pool` wrote every value of every plane.
        unsafe { out.set_len(n * c * ho * wo) };
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

/// The largest plane (output rows x input columns) pooled a plane at a time by
/// [`Plane::pool_pairs`]: its two scratch planes stay in L1 and L2. VGG-16's 2x2 poolings, batch 1,
/// 2 threads, per node row path / plane path (ms): 224 pixels 0.39-0.40 / 0.54-0.68 (above the
/// limit), 112 0.25-0.31 / 0.22-0.25, 56 0.21 / 0.09-0.10, 28 0.20-0.21 / 0.07, 14 0.10-0.11 /
/// 0.03-0.04.
const PAIRS_MAX_CELLS: usize = 8192;

/// One plane's pooling: its windows along both axes.
struct Plane<'a> {
    p: &'a PoolAttrs,
    rows: &'a [Window],
    cols: &'a [Window],
    w: usize,
    /// The output columns `first..last` have whole windows, unclipped by the borders.
    first: usize,
    last: usize,
    /// A 2x2, stride-2 max pooling whose every window is whole (VGG's): pooled plane-wide, see
    /// [`Plane::pool_pairs`].
    pairs: bool,
}

impl<'a> Plane<'a> {
    fn new(p: &'a PoolAttrs, rows: &'a [Window], cols: &'a [Window], w: usize) -> Self {
        let (k, s, pad) = (p.kernel[1], p.stride[1].max(1), p.pad.left);
        let whole = |j: usize| {
            let c = &cols[j];
            !p.global && c.lo + k == c.hi && c.lo + pad == s * j
        };
        let wo = cols.len();
        let first = (0..wo).find(|&j| whole(j)).unwrap_or(wo);
        let last = (first..wo).find(|&j| !whole(j)).unwrap_or(wo);
        let pairs = p.kind == PoolKind::Max
            && !p.global
            && p.kernel == [2, 2]
            && p.stride == [2, 2]
            && w == 2 * wo
            && (first, last) == (0, wo)
            && rows.len() * w <= PAIRS_MAX_CELLS
            && rows.iter().enumerate().all(|(y, r)| (r.lo, r.hi) == (2 * y, 2 * y + 2));
        Plane {
            p,
            rows,
            cols,
            w,
            first,
            last,
            pairs,
        }
    }

    /// A worker's line, stride phases and output row for [`Plane::pool`].
    fn scratch(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        if self.pairs {
            let plane = self.rows.len() * self.w;
            return (vec![0f32; plane], vec![0f32; plane], Vec::new());
        }
        let s = self.p.stride[1].max(1);
        let phases = if self.first < self.last {
            s * self.w.div_ceil(s)
        } else {
            0
        };
        (vec![0f32; self.w], vec![0f32; phases], vec![0f32; self.cols.len()])
    }

    /// [`Plane::pool`] compiled for AVX-512, which the plain loops vectorise to (the build
    /// targets baseline x86-64).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn pool_avx512(
        &self,
        src: &[f32],
        out: &mut [MaybeUninit<f32>],
        line: &mut [f32],
        phases: &mut [f32],
        row: &mut [f32],
    ) {
        self.pool(src, out, line, phases, row)
    }

    /// Pools the `(H, W)` plane `src` into `out` `(Ho, Wo)`. Windows are separable: each output
    /// row's input rows are reduced into one line (contiguous, vectorised), then each output's
    /// columns of that line. Columns whose windows lie wholly inside the line (all but the
    /// borders) are reduced from the line split into its `stride` phases: cell `s * j + d` of
    /// output `j` is cell `j + floor(d / s)` of phase `d mod s`, so each of the `k` cells of every
    /// window is one shifted contiguous pass, which vectorises; the cells are taken in the same
    /// order as the border windows' fold, so results do not depend on the path.
    /// Each output row is made in `row`, then written to `out`, every value of which is written.
    /// `line`, `phases` and `row` are [`Plane::scratch`]'s.
    #[inline(always)]
    fn pool(&self, src: &[f32], out: &mut [MaybeUninit<f32>], line: &mut [f32], phases: &mut [f32], row: &mut [f32]) {
        if self.pairs {
            self.pool_pairs(src, out, line, phases);
            return;
        }
        let (p, w, wo, first, last) = (self.p, self.w, self.cols.len(), self.first, self.last);
        let max = p.kind == PoolKind::Max;
        let empty = if max { f32::NEG_INFINITY } else { 0.0 };
        for (rw, dst) in self.rows.iter().zip(out.chunks_mut(wo)) {
            line.fill(empty);
            for y in rw.lo..rw.hi {
                let input = &src[y * w..(y + 1) * w];
                if max {
                    line.iter_mut().zip(input).for_each(|(m, &v)| *m = m.max(v));
                } else {
                    line.iter_mut().zip(input).for_each(|(m, &v)| *m += v);
                }
            }
            // The border columns only (the inner ones follow): walking every column to skip the
            // inner ones took a sixth of the pooling.
            for j in (0..first.min(wo)).chain(last.max(first).min(wo)..wo) {
                let cw = &self.cols[j];
                row[j] = self.reduce(&line[cw.lo..cw.hi.max(cw.lo)], rw, cw);
            }
            if first < last {
                self.inner_columns(line, phases, &mut row[first..last], rw);
            }
            for (d, &v) in dst.iter_mut().zip(row.iter()) {
                d.write(v);
            }
        }
    }

    /// [`Plane::pool`] for a 2x2, stride-2 max pooling of whole windows, a plane at a time
    /// instead of a row at a time: each pair of rows maxed into `rows`, every pair of columns
    /// then split into even and odd cells (`phases`) and maxed. Long vectorised passes: on small
    /// planes the row-by-row path spends its time setting up rows (`PAIRS_MAX_CELLS`).
    /// Values are folded from -inf in the row path's order, so both paths give the same results.
    #[inline(always)]
    fn pool_pairs(&self, src: &[f32], out: &mut [MaybeUninit<f32>], rows: &mut [f32], phases: &mut [f32]) {
        let (w, cells) = (self.w, self.rows.len() * self.cols.len());
        for (y, maxed) in rows.chunks_mut(w).enumerate() {
            let (a, b) = (&src[2 * y * w..(2 * y + 1) * w], &src[(2 * y + 1) * w..(2 * y + 2) * w]);
            for ((m, &a), &b) in maxed.iter_mut().zip(a).zip(b) {
                *m = f32::NEG_INFINITY.max(a).max(b);
            }
        }
        split_phases(rows, 2, cells, phases);
        let (even, odd) = phases.split_at(cells);
        for ((d, &e), &o) in out.iter_mut().zip(even).zip(odd) {
            d.write(f32::NEG_INFINITY.max(e).max(o));
        }
    }

    /// Output columns `first..last` of one row (`inner`), whose windows lie wholly inside `line`.
    #[inline(always)]
    fn inner_columns(&self, line: &[f32], phases: &mut [f32], inner: &mut [f32], rw: &Window) {
        let (p, w, first) = (self.p, self.w, self.first);
        let max = p.kind == PoolKind::Max;
        let (k, s, pad) = (p.kernel[1], p.stride[1].max(1), p.pad.left);
        let phase_len = w.div_ceil(s);
        split_phases(line, s, phase_len, phases);
        // -0.0 is what f32's `sum` starts from, so that the sums equal the border windows'.
        inner.fill(if max { f32::NEG_INFINITY } else { -0.0 });
        for t in 0..k {
            // Cell `s * j + t - pad` of output `j`, for `j` in `first..last`.
            let d = t as isize - pad as isize;
            let (r, shift) = (d.rem_euclid(s as isize) as usize, d.div_euclid(s as isize));
            let start = (first as isize + shift) as usize;
            let cells = &phases[r * phase_len + start..r * phase_len + start + inner.len()];
            if max {
                inner.iter_mut().zip(cells).for_each(|(m, &v)| *m = m.max(v));
            } else {
                inner.iter_mut().zip(cells).for_each(|(m, &v)| *m += v);
            }
        }
        if p.kind == PoolKind::Avg {
            let count = (rw.count(p) * self.cols[first].count(p)).max(1) as f32;
            inner.iter_mut().for_each(|v| *v /= count);
        }
    }

    /// One window's value from its cells of the reduced line.
    #[inline(always)]
    fn reduce(&self, cells: &[f32], rw: &Window, cw: &Window) -> f32 {
        let p = self.p;
        match p.kind {
            PoolKind::Max => cells.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
            PoolKind::Sum => cells.iter().sum(),
            PoolKind::Avg => cells.iter().sum::<f32>() / (rw.count(p) * cw.count(p)).max(1) as f32,
        }
    }
}

/// `line` split into its `s` stride phases: cell `i` of phase `r` (at `r * phase_len + i`, with
/// `phase_len = ceil(len / s)`) is `line[s * i + r]`. Stride 2 (VGG's and ResNet's pooling) is
/// deinterleaved 32 cells at a time on AVX-512: the cell-by-cell copy took 40% of the pooling.
#[inline(always)]
fn split_phases(line: &[f32], s: usize, phase_len: usize, phases: &mut [f32]) {
    if s == 1 {
        phases.copy_from_slice(line);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if s == 2 && std::arch::is_x86_feature_detected!("avx512f") {
        let (even, odd) = phases.split_at_mut(phase_len);
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { deinterleave_avx512(line, even, odd) };
        return;
    }
    for (r, phase) in phases.chunks_mut(phase_len).enumerate().take(s) {
        for (cell, &v) in phase.iter_mut().zip(line.iter().skip(r).step_by(s)) {
            *cell = v;
        }
    }
}

/// `even[i] = line[2i]` and `odd[i] = line[2i + 1]` for every cell of `line`; `even` and `odd`
/// hold at least `ceil(len / 2)` cells.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_avx512(line: &[f32], even: &mut [f32], odd: &mut [f32]) {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_permutex2var_ps, _mm512_setr_epi32, _mm512_storeu_ps};
    let blocks = line.len() / 32;
    assert!(even.len() >= 16 * blocks && odd.len() >= 16 * blocks);
    let even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for b in 0..blocks {
        // SAFETY: cells `32 b..32 b + 32` lie in `line`, `16 b..16 b + 16` in `even` and `odd`
        // (asserted above).
        unsafe {
            let lo = _mm512_loadu_ps(line.as_ptr().add(32 * b));
            let hi = _mm512_loadu_ps(line.as_ptr().add(32 * b + 16));
            _mm512_storeu_ps(
                even.as_mut_ptr().add(16 * b),
                _mm512_permutex2var_ps(lo, even_lanes, hi),
            );
            _mm512_storeu_ps(odd.as_mut_ptr().add(16 * b), _mm512_permutex2var_ps(lo, odd_lanes, hi));
        }
    }
    for (i, &v) in line.iter().enumerate().skip(32 * blocks) {
        if i % 2 == 0 {
            even[i / 2] = v;
        } else {
            odd[i / 2] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_phases;

    #[test]
    fn phases_hold_every_strided_cell() {
        for s in [1, 2, 3] {
            // Shorter than a 32-cell block, whole blocks, blocks and a tail, odd lengths.
            for len in [1usize, 7, 31, 32, 33, 64, 77, 224] {
                let line: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
                let phase_len = len.div_ceil(s);
                let mut phases = vec![f32::NAN; s * phase_len];
                split_phases(&line, s, phase_len, &mut phases);
                for (i, &v) in line.iter().enumerate() {
                    let (r, cell) = (i % s, i / s);
                    assert_eq!(phases[r * phase_len + cell], v, "stride {s}, length {len}, cell {i}");
                }
            }
        }
    }
}
