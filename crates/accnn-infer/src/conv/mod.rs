//! CPU convolution.
//!
//! On CPUs with AVX-512, convolutions run on a register-blocked micro-kernel ([`direct`]), or, where
//! its padded row pitch would waste work (7x7 and 14x14 images), on one vectorised over filters
//! instead ([`rows`]).
//! Elsewhere, as GEMMs over shifted views of the padded input: for a stride-1
//! convolution, tap `(i, j)` of the kernel multiplies the `(filters x channels)` slice
//! `W[:, :, i, j]` with the padded input shifted by `i * dilate_h * Wp + j * dilate_w` in the
//! flattened `(Hp x Wp)` plane: no im2col copy at all, one GEMM per tap accumulating into the output.
//! Output positions are computed on the padded row pitch `Wp` and compacted afterwards, which
//! wastes `(Wp - Wo) / Wp` of the work (none for the vertical `(kh, 1)` half of a decomposed pair).
//! Strided convolutions there take im2col + one GEMM.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use accnn_graph::ir::{ConvAttrs, Padding2d};

#[cfg(target_arch = "x86_64")]
mod direct;
#[cfg(target_arch = "x86_64")]
mod rows;

#[cfg(target_arch = "x86_64")]
pub(crate) fn direct_available() -> bool {
    direct::available()
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn direct_available() -> bool {
    false
}

/// Reduction length (input channels per tap) below which taps run as AXPYs instead of GEMMs.
const SMALL_REDUCTION: usize = 8;

/// Filters per weight block of the micro-kernel.
const BLOCK_FILTERS: usize = 4;

/// One group's weights `[Fg][Cg][taps]` re-laid out for the micro-kernel as
/// `[filter block][Cg][taps][4]`, the order it reads them in; filters past `Fg` (up to a multiple
/// of 6 blocks, so that 8- and 12-filter tiles always read whole blocks) are zero.
fn pack_blocks(weight: &[f32], fg: usize, cg: usize, taps: usize) -> Vec<f32> {
    let blocks = 6 * fg.div_ceil(6 * BLOCK_FILTERS);
    let mut packed = vec![0f32; blocks * cg * taps * BLOCK_FILTERS];
    for f in 0..fg {
        let (block, lane) = (f / BLOCK_FILTERS, f % BLOCK_FILTERS);
        for c in 0..cg {
            for t in 0..taps {
                packed[((block * cg + c) * taps + t) * BLOCK_FILTERS + lane] = weight[(f * cg + c) * taps + t];
            }
        }
    }
    packed
}

/// What a convolution does to its outputs after adding the bias: adds a residual of the output's
/// shape (a fused `Add`; positioned like the output it goes with), then (`relu`) a ReLU.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl<'a> Epilogue<'a> {
    /// The epilogue of the outputs from `start` on.
    fn from(self, start: usize) -> Epilogue<'a> {
        Epilogue {
            residual: self.residual.map(|r| &r[start..]),
            relu: self.relu,
        }
    }

    /// Writes `values` (bias included) as outputs `at..`: plus the residual there, then the ReLU.
    #[inline]
    fn finish(&self, values: &[f32], at: usize, out: &mut [f32]) {
        match (self.residual, self.relu) {
            (Some(r), relu) => {
                let r = &r[at..at + values.len()];
                for ((o, v), r) in out.iter_mut().zip(values).zip(r) {
                    let sum = v + r;
                    *o = if relu { sum.max(0.0) } else { sum };
                }
            }
            (None, true) => out.iter_mut().zip(values).for_each(|(o, v)| *o = v.max(0.0)),
            (None, false) => out.copy_from_slice(values),
        }
    }
}

/// One group of one image: its attributes and sizes.
pub(crate) struct Geometry<'a> {
    pub attrs: &'a ConvAttrs,
    /// Index of the group.
    pub group: usize,
    /// Input channels and filters of the group.
    pub channels: usize,
    pub filters: usize,
    pub input_hw: (usize, usize),
    pub output_hw: (usize, usize),
}

/// Where an output goes, possibly not yet initialised, written by tasks that each own a disjoint
/// set of its values.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: every user writes a set of output values no other task writes (see its callers).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Value `i`: a method, so that closures capture the whole (Sync) wrapper, not its pointer.
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// The zero-padded `(C, Hp, Wp)` input split by `stride = [sh, sw]` into phase planes: phase
/// `(pi, pj)` holds the padded cells `(pi + sh * r, pj + sw * q)`, as a `(ceil(Hp / sh),
/// ceil(Wp / sw))` plane (zeros past the padded extent). Only the `phases` listed are made (a 1x1
/// strided convolution reads one of four), channel `c`'s consecutive, `phases[k]` at
/// `c * phases.len() + k`. A stride-`s` convolution reads each phase at stride 1; with stride
/// `[1, 1]` and phase `[0, 0]` this is the plain padded copy. Followed by zeros up to `len` values;
/// written plane by plane, in parallel with `workers` > 1, each value once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn phase_split(
    x: &[f32],
    channels: usize,
    (h, w): (usize, usize),
    pad: Padding2d,
    [sh, sw]: [usize; 2],
    phases: &[[usize; 2]],
    len: usize,
    workers: usize,
) -> Vec<f32> {
    let (hp, wp) = (h + pad.top + pad.bottom, w + pad.left + pad.right);
    let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
    let plane = hq * wq;
    let mut xp: Vec<f32> = Vec::with_capacity(len);
    let fill = |(k, dst): (usize, &mut [MaybeUninit<f32>])| {
        let (c, [pi, pj]) = (k / phases.len(), phases[k % phases.len()]);
        for (r, row) in dst.chunks_mut(wq).enumerate() {
            // Padded row `pi + sh * r` is input row `y`, when inside the input.
            let y = (pi + sh * r).checked_sub(pad.top).filter(|&y| y < h);
            let (Some(y), true) = (y.filter(|_| c < channels), row.len() == wq) else {
                row.iter_mut().for_each(|v| {
                    v.write(0.0);
                });
                continue;
            };
            let src = &x[(c * h + y) * w..(c * h + y + 1) * w];
            if sw == 1 {
                let (before, rest) = row.split_at_mut(pad.left.min(wq));
                let (body, after) = rest.split_at_mut(w.min(rest.len()));
                before.iter_mut().chain(after).for_each(|v| {
                    v.write(0.0);
                });
                body.iter_mut().zip(src).for_each(|(d, s)| {
                    d.write(*s);
                });
                continue;
            }
            for (q, v) in row.iter_mut().enumerate() {
                let col = (pj + sw * q).checked_sub(pad.left).filter(|&col| col < w);
                v.write(col.map_or(0.0, |col| src[col]));
            }
        }
    };
    let spare = &mut xp.spare_capacity_mut()[..len];
    if workers > 1 {
        spare.par_chunks_mut(plane).enumerate().for_each(fill);
    } else {
        spare.chunks_mut(plane).enumerate().for_each(fill);
    }
    // SAFETY: `fill` wrote every one of the first `len` values.
    unsafe { xp.set_len(len) };
    xp
}

/// A convolution with its weights laid out for the kernel.
pub(crate) struct ConvKernel {
    pub attrs: ConvAttrs,
    /// Input channels per group.
    pub channels: usize,
    /// One layout, chosen by the path that runs the convolution: for the micro-kernel, per group
    /// `[filter block][channel][tap][4 filters]`; for the shifted GEMMs,
    /// `[group][tap][filter][channel]` (one contiguous `(Fg x Cg)` matrix per group and tap); for
    /// strided ones, `[filter][channel][i][j]` as stored (`F x Cg*kh*kw`, for im2col).
    weights: Vec<f32>,
    /// Whether the weights are packed for the micro-kernel (on an AVX-512 CPU).
    direct: bool,
    /// The weights laid out for the filter-vectorised kernel (`rows`), per group, packed from
    /// `weights` the first time an input small enough for that kernel comes.
    row_weights: std::sync::OnceLock<Vec<f32>>,
    bias: Option<Vec<f32>>,
    pub threads: usize,
    /// Apply ReLU to the output (a following ReLU fused into the convolution).
    pub relu: bool,
}

impl ConvKernel {
    /// `direct`: use the AVX-512 micro-kernel where the CPU has it.
    pub fn new(
        attrs: ConvAttrs,
        channels: usize,
        weight: &[f32],
        bias: Option<Vec<f32>>,
        threads: usize,
        direct: bool,
    ) -> Self {
        let (f, g) = (attrs.num_filter, attrs.num_group);
        let (fg, cg) = (f / g, channels / g);
        let taps_n = attrs.kernel[0] * attrs.kernel[1];
        let per_group = fg * cg * taps_n;
        let strided = attrs.stride != [1, 1];
        let direct = direct && direct_available();
        let weights = if direct {
            (0..g)
                .flat_map(|group| pack_blocks(&weight[group * per_group..(group + 1) * per_group], fg, cg, taps_n))
                .collect()
        } else if strided {
            weight.to_vec()
        } else {
            let mut taps = vec![0f32; weight.len()];
            for group in 0..g {
                for t in 0..taps_n {
                    for fl in 0..fg {
                        for c in 0..cg {
                            let src = ((group * fg + fl) * cg + c) * taps_n + t;
                            taps[((group * taps_n + t) * fg + fl) * cg + c] = weight[src];
                        }
                    }
                }
            }
            taps
        };
        ConvKernel {
            attrs,
            channels,
            weights,
            direct,
            row_weights: std::sync::OnceLock::new(),
            bias,
            threads,
            relu: false,
        }
    }

    /// Group `group`'s weights for the filter-vectorised kernel, from the micro-kernel's blocks.
    #[cfg(target_arch = "x86_64")]
    fn row_weights(&self, group: usize) -> &[f32] {
        let a = &self.attrs;
        let g = a.num_group;
        let (fg, cg, taps) = (a.num_filter / g, self.channels / g, a.kernel[0] * a.kernel[1]);
        let all = self.row_weights.get_or_init(|| {
            let per_group = self.weights.len() / g;
            (0..g)
                .flat_map(|group| {
                    let blocks = &self.weights[group * per_group..(group + 1) * per_group];
                    let weight = |f: usize, c: usize, t: usize| {
                        blocks[((f / BLOCK_FILTERS * cg + c) * taps + t) * BLOCK_FILTERS + f % BLOCK_FILTERS]
                    };
                    rows::pack_vectors(weight, fg, cg, taps)
                })
                .collect()
        });
        let per_group = all.len() / g;
        &all[group * per_group..(group + 1) * per_group]
    }

    /// Output spatial size for an `h x w` input.
    fn output_hw(&self, h: usize, w: usize) -> (usize, usize) {
        accnn_graph::shape::conv_output_hw(&self.attrs, h, w).unwrap_or((0, 0))
    }

    /// One group of one image, zero-padded to `(Cg, Hp, Wp)`: on both axes, or (`vertical` false)
    /// on the horizontal axis only. Borrowed when there is nothing to pad.
    fn pad<'x>(&self, x: &'x [f32], geo: &Geometry, vertical: bool, workers: usize) -> (Cow<'x, [f32]>, usize, usize) {
        let mut p = self.attrs.pad;
        if !vertical {
            (p.top, p.bottom) = (0, 0);
        }
        let (h, w) = geo.input_hw;
        let (hp, wp) = (h + p.top + p.bottom, w + p.left + p.right);
        if hp == h && wp == w {
            return (Cow::Borrowed(&x[..geo.channels * h * w]), hp, wp);
        }
        let len = geo.channels * hp * wp;
        (
            Cow::Owned(phase_split(x, geo.channels, (h, w), p, [1, 1], &[[0, 0]], len, workers)),
            hp,
            wp,
        )
    }

    /// One image: `x` is `(C, H, W)`; `out` receives `(F, Ho, Wo)` values, finished by `epilogue`.
    /// Off the micro-kernel, `out` must be initialised (the GEMM paths accumulate into it).
    fn image(&self, x: &[f32], input_hw: (usize, usize), out: OutPtr, epilogue: Epilogue, workers: usize) {
        let a = &self.attrs;
        let (g, cg, fg) = (a.num_group, self.channels / a.num_group, a.num_filter / a.num_group);
        let (h, w) = input_hw;
        let output_hw = self.output_hw(h, w);
        let group_out = fg * output_hw.0 * output_hw.1;
        for group in 0..g {
            let geo = Geometry {
                attrs: a,
                group,
                channels: cg,
                filters: fg,
                input_hw,
                output_hw,
            };
            let xg = &x[group * cg * h * w..(group + 1) * cg * h * w];
            let og = OutPtr(out.at(group * group_out));
            let epilogue = epilogue.from(group * group_out);
            #[cfg(target_arch = "x86_64")]
            if self.direct {
                let bias = self.bias.as_ref().map(|b| &b[group * fg..(group + 1) * fg]);
                let per_group = self.weights.len() / g;
                if let Some(tile) = rows::plan(&geo, direct::computed_products(&geo)) {
                    let packed = self.row_weights(group);
                    rows::convolve(xg, packed, bias, &geo, tile, epilogue, og, workers);
                    continue;
                }
                let packed = &self.weights[group * per_group..(group + 1) * per_group];
                direct::convolve(xg, packed, bias, &geo, epilogue, og, workers);
                continue;
            }
            // SAFETY: off the micro-kernel `out` is initialised (see `cpu_fwd`), and this group's
            // values belong to this call alone.
            let og = unsafe { std::slice::from_raw_parts_mut(og.0, group_out) };
            // The shifted GEMMs clip rows instead of padding them, so they need horizontal padding only.
            let strided = a.stride != [1, 1];
            let (xp, hp, wp) = self.pad(xg, &geo, strided, workers);
            if strided {
                self.im2col_gemm(&xp, (hp, wp), &geo, og, epilogue, workers);
            } else {
                self.shifted_gemms(&xp, wp, &geo, og, epilogue, workers);
            }
        }
    }

    /// Stride-1 convolution of one padded group as one GEMM per tap over shifted views.
    ///
    /// The output is walked in tiles of whole rows, small enough that the tap GEMMs accumulate in
    /// cache; tiles run in parallel. Positions are computed on the padded pitch `wp`, and the `wo`
    /// valid ones of each row copied out through the epilogue.
    fn shifted_gemms(&self, xp: &[f32], wp: usize, geo: &Geometry, og: &mut [f32], epilogue: Epilogue, workers: usize) {
        let a = geo.attrs;
        let (group, cg, fg) = (geo.group, geo.channels, geo.filters);
        let (h, (ho, wo)) = (geo.input_hw.0, geo.output_hw);
        // About 1 MB of tile and input panel, and at least two tiles per worker when possible.
        let rows = ((1usize << 18) / ((fg + cg) * wp)).clamp(1, ho.div_ceil(2 * workers).max(1));
        let tile = |y0: usize| -> Vec<f32> {
            let y1 = (y0 + rows).min(ho);
            let len = (y1 - y0 - 1) * wp + wo;
            let mut dst = vec![0f32; fg * len];
            if let Some(bias) = &self.bias {
                for (fl, row) in dst.chunks_mut(len).enumerate() {
                    row.fill(bias[group * fg + fl]);
                }
            }
            let [kh, kw] = a.kernel;
            let top = a.pad.top;
            for i in 0..kh {
                // Output rows whose input row for this tap lies inside the image (the rest read
                // vertical padding, i.e. zeros).
                let shift = i * a.dilate[0];
                let lo = y0.max(top.saturating_sub(shift));
                let hi = y1.min((h + top).saturating_sub(shift));
                if lo >= hi {
                    continue;
                }
                let (d0, tlen) = ((lo - y0) * wp, (hi - lo - 1) * wp + wo);
                for j in 0..kw {
                    let offset = (lo + shift - top) * wp + j * a.dilate[1];
                    let lhs_start = (group * kh * kw + i * kw + j) * fg * cg;
                    let weights = &self.weights[lhs_start..lhs_start + fg * cg];
                    if cg <= SMALL_REDUCTION {
                        // A GEMM with a reduction this short runs far below peak: plain AXPYs win.
                        for (fl, row) in dst.chunks_mut(len).enumerate() {
                            let row = &mut row[d0..d0 + tlen];
                            for c in 0..cg {
                                let w = weights[fl * cg + c];
                                let src = &xp[c * h * wp + offset..c * h * wp + offset + tlen];
                                row.iter_mut().zip(src).for_each(|(d, x)| *d += w * x);
                            }
                        }
                    } else {
                        let lhs = MatRef::from_row_major_slice(weights, fg, cg);
                        let rhs = MatRef::from_row_major_slice_with_stride(&xp[offset..], cg, tlen, h * wp);
                        if tlen == len {
                            let out = MatMut::from_row_major_slice_mut(&mut dst[..], fg, len);
                            matmul(out, Accum::Add, lhs, rhs, 1.0f32, Par::Seq);
                        } else {
                            // A tile clipped at the image border: into scratch, then added.
                            let mut part = vec![0f32; fg * tlen];
                            let out = MatMut::from_row_major_slice_mut(&mut part[..], fg, tlen);
                            matmul(out, Accum::Replace, lhs, rhs, 1.0f32, Par::Seq);
                            for (row, src) in dst.chunks_mut(len).zip(part.chunks(tlen)) {
                                row[d0..d0 + tlen].iter_mut().zip(src).for_each(|(d, v)| *d += v);
                            }
                        }
                    }
                }
            }
            dst
        };
        let starts: Vec<usize> = (0..ho).step_by(rows).collect();
        let tiles: Vec<Vec<f32>> = if workers > 1 {
            starts.par_iter().map(|&y0| tile(y0)).collect()
        } else {
            starts.iter().map(|&y0| tile(y0)).collect()
        };
        for (&y0, dst) in starts.iter().zip(&tiles) {
            let y1 = (y0 + rows).min(ho);
            let len = (y1 - y0 - 1) * wp + wo;
            for fl in 0..fg {
                for y in y0..y1 {
                    let src = &dst[fl * len + (y - y0) * wp..fl * len + (y - y0) * wp + wo];
                    let at = (fl * ho + y) * wo;
                    epilogue.finish(src, at, &mut og[at..at + wo]);
                }
            }
        }
    }

    fn im2col_gemm(
        &self,
        xp: &[f32],
        (hp, wp): (usize, usize),
        geo: &Geometry,
        og: &mut [f32],
        epilogue: Epilogue,
        workers: usize,
    ) {
        let a = geo.attrs;
        let (group, cg, fg) = (geo.group, geo.channels, geo.filters);
        let (ho, wo) = geo.output_hw;
        let [kh, kw] = a.kernel;
        let k = cg * kh * kw;
        let n = ho * wo;
        let mut cols = vec![0f32; k * n];
        for c in 0..cg {
            for i in 0..kh {
                for j in 0..kw {
                    let row = &mut cols[((c * kh + i) * kw + j) * n..((c * kh + i) * kw + j + 1) * n];
                    for y in 0..ho {
                        let src_row = (c * hp + y * a.stride[0] + i * a.dilate[0]) * wp + j * a.dilate[1];
                        for x in 0..wo {
                            row[y * wo + x] = xp[src_row + x * a.stride[1]];
                        }
                    }
                }
            }
        }
        // The GEMM accumulates onto the bias and the residual.
        let mut accum = Accum::Replace;
        if let Some(b) = &self.bias {
            for fl in 0..fg {
                og[fl * n..(fl + 1) * n].fill(b[group * fg + fl]);
            }
            accum = Accum::Add;
        }
        if let Some(r) = epilogue.residual {
            let r = &r[..fg * n];
            if matches!(accum, Accum::Add) {
                og.iter_mut().zip(r).for_each(|(o, r)| *o += r);
            } else {
                og.copy_from_slice(r);
            }
            accum = Accum::Add;
        }
        let lhs = MatRef::from_row_major_slice(&self.weights[group * fg * k..(group + 1) * fg * k], fg, k);
        let rhs = MatRef::from_row_major_slice(&cols, k, n);
        let dst = MatMut::from_row_major_slice_mut(&mut og[..], fg, n);
        matmul(dst, accum, lhs, rhs, 1.0f32, crate::par(workers));
        if epilogue.relu {
            og.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

impl ConvKernel {
    /// The convolution of the `(N, C, H, W)` batch `x`, plus `residual` (of the output's shape)
    /// when given, then (`relu`) a ReLU.
    fn forward(
        &self,
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        residual: Option<&[f32]>,
        relu: bool,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if c != self.channels {
            candle_core::bail!("accnn-conv2d expects {} channels, got {c}", self.channels);
        }
        let (ho, wo) = self.output_hw(h, w);
        let f = self.attrs.num_filter;
        let chunk = f * ho * wo;
        if residual.is_some_and(|r| r.len() != n * chunk) {
            candle_core::bail!(
                "accnn-conv2d: the residual is not of the output's shape {:?}",
                [n, f, ho, wo]
            );
        }
        // The micro-kernel writes every output value once, so its buffer skips the zero fill; the
        // GEMM paths accumulate into theirs.
        let mut out: Vec<f32> = if self.direct {
            Vec::with_capacity(n * chunk)
        } else {
            vec![0f32; n * chunk]
        };
        let ptr = OutPtr(out.as_mut_ptr());
        let image = |b: usize, workers: usize| {
            let epilogue = Epilogue {
                residual: residual.map(|r| &r[b * chunk..(b + 1) * chunk]),
                relu,
            };
            self.image(
                &x[b * c * h * w..(b + 1) * c * h * w],
                (h, w),
                OutPtr(ptr.at(b * chunk)),
                epilogue,
                workers,
            )
        };
        if n > 1 && self.threads > 1 {
            // Images in parallel, each on one thread: better than splitting small convolutions.
            (0..n).into_par_iter().for_each(|b| image(b, 1));
        } else {
            (0..n).for_each(|b| image(b, self.threads));
        }
        // SAFETY: every image's `chunk` values were written (or zero-filled at allocation).
        unsafe { out.set_len(n * chunk) };
        Ok((CpuStorage::F32(out), Shape::from((n, f, ho, wo))))
    }

    /// The output shape for an input of `dims` `(N, C, H, W)`.
    pub(crate) fn output_dims(&self, dims: &[usize]) -> Option<[usize; 4]> {
        let &[n, _, h, w] = dims else { return None };
        let (ho, wo) = accnn_graph::shape::conv_output_hw(&self.attrs, h, w)?;
        Some([n, self.attrs.num_filter, ho, wo])
    }
}

impl CustomOp1 for ConvKernel {
    fn name(&self) -> &'static str {
        "accnn-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, dims) = crate::op_input(storage, layout, self.name())?;
        self.forward(x, dims, None, self.relu)
    }
}

/// A convolution without its fused ReLU (for a residual it cannot take in: see [`ResidualConv`]).
pub(crate) struct Unfused<'a>(pub &'a ConvKernel);

impl CustomOp1 for Unfused<'_> {
    fn name(&self) -> &'static str {
        "accnn-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, dims) = crate::op_input(storage, layout, self.name())?;
        self.0.forward(x, dims, None, false)
    }
}

/// A convolution that adds a residual to its outputs (a fused `Add`): `x.apply_op2(residual)`.
pub(crate) struct ResidualConv(pub std::sync::Arc<ConvKernel>);

impl CustomOp2 for ResidualConv {
    fn name(&self) -> &'static str {
        "accnn-conv2d-residual"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, dims) = crate::op_input(storage, layout, self.name())?;
        let (r, _) = crate::op_input::<4>(residual, residual_layout, self.name())?;
        self.0.forward(x, dims, Some(r), self.0.relu)
    }
}
