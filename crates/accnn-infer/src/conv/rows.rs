//! Convolution by an AVX-512 micro-kernel vectorised over filters, for small images.
//!
//! The position-vectorised kernel ([`super::direct`]) computes whole vectors of positions on the
//! padded row pitch, so the padding columns are computed and dropped: 64 positions for the 49
//! outputs of a 7x7 image, 224 for the 196 of a 14x14 one. This kernel puts 16 filters in a vector
//! instead and walks `R` consecutive positions of one output row, each broadcast from the same
//! phase-split input (`super::phase_split`) at `o + offset(tap)`: only real outputs are computed,
//! at the price of an output tile that is transposed when written. It runs where that saves enough
//! work ([`plan`]).
//!
//! A micro-tile is `16 * NV` filters x `R` positions (2 x 14 or 3 x 7 vectors: 28 or 21
//! accumulators); each step loads `NV` weight vectors and broadcasts `R` inputs for `NV * R` FMAs.

use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use rayon::prelude::*;

use super::direct::PhaseLayout;
use super::{Epilogue, Geometry, OutPtr};

const LANES: usize = 16;
/// Filter vectors of the widest tile.
const MAX_VECTORS: usize = 3;
/// Positions of the longest tile.
const MAX_POSITIONS: usize = 14;
/// Filters are packed in whole tiles of every shape: a multiple of 2 and 3 vectors.
const PACKED_VECTORS: usize = 6;
/// Reductions (channels x taps) shorter than this stay on the position-vectorised kernel, whose
/// output needs no transposing.
const MIN_REDUCTION: usize = 64;

/// A tile shape: `vectors` of 16 filters x `positions` of one output row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RowTile {
    pub vectors: usize,
    pub positions: usize,
}

const SHAPES: [RowTile; 2] = [
    RowTile {
        vectors: 2,
        positions: 14,
    },
    RowTile {
        vectors: 3,
        positions: 7,
    },
];

/// The tile this kernel would run `geo` with, when it computes at most 93% of the filter x position
/// products the position-vectorised kernel computes (`direct_computed`). This includes the `(k, 1)`
/// and `(1, k)` halves of decomposed layers on small images: timed alternately in one process
/// against the position-vectorised kernel (`layer_speed` pairs at 7x7 and 14x14, batch 1 and 8,
/// 2 threads), pairs ran 8-14% faster with both halves here; at 28x28 and 56x56 they ran level.
pub(super) fn plan(geo: &Geometry, direct_computed: usize) -> Option<RowTile> {
    let [kh, kw] = geo.attrs.kernel;
    if geo.channels * kh * kw < MIN_REDUCTION {
        return None;
    }
    let (ho, wo) = geo.output_hw;
    let computed = |t: RowTile| {
        let filters = geo.filters.div_ceil(t.vectors * LANES) * t.vectors * LANES;
        filters * ho * wo.div_ceil(t.positions) * t.positions
    };
    let best = SHAPES.iter().copied().min_by_key(|&t| computed(t))?;
    (computed(best) * 100 <= direct_computed * 93).then_some(best)
}

/// One group's weights, `weight(filter, channel, tap)`, laid out as
/// `[vector of 16 filters][Cg][taps][16]`, filters past `Fg` (up to a multiple of 6 vectors) zero.
pub(super) fn pack_vectors(weight: impl Fn(usize, usize, usize) -> f32, fg: usize, cg: usize, taps: usize) -> Vec<f32> {
    let vectors = PACKED_VECTORS * fg.div_ceil(PACKED_VECTORS * LANES);
    let mut packed = vec![0f32; vectors * cg * taps * LANES];
    for f in 0..fg {
        let (v, lane) = (f / LANES, f % LANES);
        for c in 0..cg {
            for t in 0..taps {
                packed[((v * cg + c) * taps + t) * LANES + lane] = weight(f, c, t);
            }
        }
    }
    packed
}

/// Convolves one group as [`super::direct::convolve`] does, with `tile`'s shape; `packed` from
/// [`pack_vectors`].
///
/// Must only be called on a CPU with AVX-512F, with `out` valid for `Fg * Ho * Wo` writes.
#[allow(clippy::too_many_arguments)]
pub(super) fn convolve(
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    geo: &Geometry,
    tile: RowTile,
    epilogue: Epilogue,
    out: OutPtr,
    workers: usize,
) {
    let relu = epilogue.relu && epilogue.residual.is_none();
    let (cg, fg) = (geo.channels, geo.filters);
    let (ho, wo) = geo.output_hw;
    // Output position (y, x) of tap t reads phase-plane cell `y * wq + x + offsets[t]`.
    let layout = PhaseLayout::new(geo);
    let (wq, plane, offsets) = (layout.wq, layout.plane, &layout.offsets);
    let RowTile { vectors, positions } = tile;
    let segments = wo.div_ceil(positions);
    // The last segment of the last row reads `positions` cells from its start.
    let xp = layout.split(x, geo, (ho - 1) * wq + segments * positions, workers);
    let filter_tiles = fg.div_ceil(vectors * LANES);
    let vector_stride = cg * offsets.len() * LANES;
    let task = |t: usize| {
        let (ft, cell) = (t % filter_tiles, t / filter_tiles);
        let (y, x0) = (cell / segments, (cell % segments) * positions);
        let first = ft * vectors * LANES;
        let mut b = [0f32; MAX_VECTORS * LANES];
        for (lane, v) in b.iter_mut().enumerate().take(vectors * LANES) {
            *v = bias.and_then(|bias| bias.get(first + lane)).copied().unwrap_or(0.0);
        }
        let mut values = [0f32; MAX_POSITIONS * MAX_VECTORS * LANES];
        // SAFETY: AVX-512F by the caller's contract; the kernel reads channel planes `0..cg` at
        // `y * wq + x0 + offset + 0..positions`, inside `reach`, and `vectors` packed weight vectors
        // from `first / 16`, which `pack_vectors` pads to a multiple of 6.
        unsafe {
            let rows = Rows {
                x: xp.as_ptr().add(y * wq + x0),
                plane,
                channels: cg,
                offsets,
                weights: packed.as_ptr().add(first / LANES * vector_stride),
                vector_stride,
            };
            match (vectors, positions) {
                (2, 14) => row_kernel::<2, 14>(&rows, &b, relu, &mut values),
                _ => row_kernel::<3, 7>(&rows, &b, relu, &mut values),
            }
        }
        // `values` holds `positions` rows of `16 * vectors` filters: write each filter's run.
        let run = positions.min(wo - x0);
        let width = vectors * LANES;
        let mut line = [0f32; MAX_POSITIONS];
        for lane in 0..width.min(fg - first) {
            let f = first + lane;
            for (p, v) in line.iter_mut().enumerate().take(run) {
                *v = values[p * width + lane];
            }
            let at = (f * ho + y) * wo + x0;
            // SAFETY: outputs (f, y, x0..x0 + run) belong to this task alone (tasks partition
            // filters x row segments) and lie inside `out`; nothing reads them while it lives.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), run) };
            epilogue.finish(&line[..run], at, dst);
        }
    };
    let tasks = filter_tiles * ho * segments;
    if workers > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// What a row tile reads: `channels` input planes `plane` apart from `x` (the tile's first
/// position), one offset per tap, and its weight vectors `vector_stride` apart from `weights`.
struct Rows<'a> {
    x: *const f32,
    plane: usize,
    channels: usize,
    offsets: &'a [usize],
    weights: *const f32,
    vector_stride: usize,
}

/// `16 * NV` filters x `R` consecutive positions summed over every channel and tap; results (after
/// a ReLU with `relu`) go to `values` as `R` rows of `16 * NV` filters.
///
/// # Safety
/// AVX-512F must be available; `x.add(c * plane + offset + r)` must be readable for every channel,
/// tap offset and `r < R`, and `weights.add(v * vector_stride)` for `channels * taps * 16` values
/// for every `v < NV`.
#[target_feature(enable = "avx512f")]
unsafe fn row_kernel<const NV: usize, const R: usize>(
    input: &Rows,
    bias: &[f32; MAX_VECTORS * LANES],
    relu: bool,
    values: &mut [f32; MAX_POSITIONS * MAX_VECTORS * LANES],
) {
    let start: [__m512; NV] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias.as_ptr().add(v * LANES)) });
    let mut acc: [[__m512; NV]; R] = [start; R];
    let Rows {
        x,
        plane,
        channels,
        offsets,
        weights,
        vector_stride,
    } = *input;
    let mut step = 0;
    for c in 0..channels {
        // SAFETY (whole loop): in bounds by the function's contract.
        let xc = unsafe { x.add(c * plane) };
        for &off in offsets {
            let p = unsafe { xc.add(off) };
            let wv: [__m512; NV] =
                std::array::from_fn(|v| unsafe { _mm512_loadu_ps(weights.add(v * vector_stride + step)) });
            for (r, row) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(unsafe { *p.add(r) });
                for (a, w) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(*w, b, *a);
                }
            }
            step += LANES;
        }
    }
    // Indexed stores: an iterator over `acc` here makes LLVM keep it in memory through the loop.
    #[allow(clippy::needless_range_loop)]
    for r in 0..R {
        for v in 0..NV {
            let value = if relu {
                _mm512_max_ps(acc[r][v], _mm512_setzero_ps())
            } else {
                acc[r][v]
            };
            // SAFETY: `(r * NV + v + 1) * 16 <= R * NV * 16 <= values.len()`.
            unsafe { _mm512_storeu_ps(values.as_mut_ptr().add((r * NV + v) * LANES), value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use accnn_graph::ir::{ConvAttrs, Padding2d};

    use super::*;

    /// A deterministic value in [-1, 1) for index `i` of stream `seed`.
    fn value(seed: u64, i: usize) -> f32 {
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 31;
        z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 29;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// The convolution of one group in f64, straight from its definition.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], geo: &Geometry) -> Vec<f64> {
        let a = geo.attrs;
        let ((h, wd), (ho, wo)) = (geo.input_hw, geo.output_hw);
        let (cg, fg, [kh, kw]) = (geo.channels, geo.filters, a.kernel);
        let mut out = vec![0f64; fg * ho * wo];
        for f in 0..fg {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut sum = bias[f] as f64;
                    for c in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let r = (y * a.stride[0] + i * a.dilate[0]).checked_sub(a.pad.top);
                                let q = (xo * a.stride[1] + j * a.dilate[1]).checked_sub(a.pad.left);
                                if let (Some(r), Some(q)) = (r.filter(|&r| r < h), q.filter(|&q| q < wd)) {
                                    let wv = w[((f * cg + c) * kh + i) * kw + j] as f64;
                                    sum += wv * x[(c * h + r) * wd + q] as f64;
                                }
                            }
                        }
                    }
                    out[(f * ho + y) * wo + xo] = sum;
                }
            }
        }
        out
    }

    /// The kernel a layer gets: what `plan` decides from the two kernels' computed products.
    fn planned(channels: usize, filters: usize, size: usize, kernel: [usize; 2]) -> Option<RowTile> {
        let attrs = ConvAttrs {
            kernel,
            stride: [1, 1],
            dilate: [1, 1],
            pad: Padding2d::symmetric(kernel[0] / 2, kernel[1] / 2),
            num_filter: filters,
            num_group: 1,
            no_bias: false,
        };
        let geo = Geometry {
            attrs: &attrs,
            group: 0,
            channels,
            filters,
            input_hw: (size, size),
            output_hw: (size, size),
        };
        plan(&geo, super::super::direct::computed_products(&geo))
    }

    #[test]
    fn small_images_and_their_pair_halves_run_here() {
        let (wide, long) = (SHAPES[1], SHAPES[0]);
        // 7x7: the position kernel computes 64 positions for 49; 14x14: 224 (or 240) for 196.
        assert_eq!(planned(512, 512, 7, [3, 3]), Some(wide));
        assert_eq!(planned(512, 384, 7, [3, 1]), Some(wide));
        assert_eq!(planned(384, 512, 7, [1, 3]), Some(wide));
        assert_eq!(planned(256, 192, 14, [3, 1]), Some(long));
        assert_eq!(planned(192, 256, 14, [1, 3]), Some(long));
        // 56x56: a vertical half has no padded columns and whole vectors nearly fill the rows.
        assert_eq!(planned(128, 96, 56, [3, 1]), None);
        // A reduction shorter than 64 stays on the position kernel.
        assert_eq!(planned(16, 64, 7, [3, 1]), None);
    }

    #[test]
    fn row_tiles_match_the_definition() {
        if !super::super::direct_available() {
            return;
        }
        // (channels, filters, input, kernel, stride, dilation, padding): filters that fill no
        // whole tile, rows shorter and longer than a tile, strides, dilation, asymmetric padding.
        let cases = [
            (64, 40, (7, 7), [3, 3], [1, 1], [1, 1], Padding2d::symmetric(1, 1)),
            (32, 96, (14, 14), [3, 3], [1, 1], [1, 1], Padding2d::symmetric(1, 1)),
            (24, 17, (9, 11), [3, 3], [2, 2], [1, 1], Padding2d::symmetric(1, 1)),
            (16, 33, (10, 16), [3, 1], [2, 1], [1, 1], Padding2d::symmetric(1, 0)),
            (
                72,
                20,
                (6, 20),
                [1, 3],
                [1, 1],
                [1, 2],
                Padding2d {
                    top: 0,
                    bottom: 0,
                    left: 1,
                    right: 3,
                },
            ),
            (8, 48, (15, 15), [3, 3], [1, 1], [2, 2], Padding2d::symmetric(2, 2)),
        ];
        for (seed, &(cg, fg, (h, w), kernel, stride, dilate, pad)) in cases.iter().enumerate() {
            let attrs = ConvAttrs {
                kernel,
                stride,
                dilate,
                pad,
                num_filter: fg,
                num_group: 1,
                no_bias: false,
            };
            let output_hw = accnn_graph::shape::conv_output_hw(&attrs, h, w).expect("output size");
            let geo = Geometry {
                attrs: &attrs,
                group: 0,
                channels: cg,
                filters: fg,
                input_hw: (h, w),
                output_hw,
            };
            let taps = kernel[0] * kernel[1];
            let seed = seed as u64;
            let x: Vec<f32> = (0..cg * h * w).map(|i| value(seed, i)).collect();
            let weight: Vec<f32> = (0..fg * cg * taps).map(|i| value(seed + 100, i)).collect();
            let bias: Vec<f32> = (0..fg).map(|i| value(seed + 200, i)).collect();
            let packed = pack_vectors(|f, c, t| weight[(f * cg + c) * taps + t], fg, cg, taps);
            let expected = reference(&x, &weight, &bias, &geo);
            let residual: Vec<f32> = (0..expected.len()).map(|i| value(seed + 300, i)).collect();
            for tile in SHAPES {
                for (with_residual, relu) in [(false, false), (false, true), (true, true)] {
                    for workers in [1, 2] {
                        let epilogue = Epilogue {
                            residual: with_residual.then_some(&residual[..]),
                            relu,
                        };
                        let mut out = vec![f32::NAN; expected.len()];
                        convolve(
                            &x,
                            &packed,
                            Some(&bias),
                            &geo,
                            tile,
                            epilogue,
                            OutPtr(out.as_mut_ptr()),
                            workers,
                        );
                        for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
                            let want = want + if with_residual { residual[i] as f64 } else { 0.0 };
                            let want = if relu { want.max(0.0) } else { want };
                            assert!(
                                (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "case {seed} {tile:?} residual {with_residual} relu {relu}: output {i} is {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
