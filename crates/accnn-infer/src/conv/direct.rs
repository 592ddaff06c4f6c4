//! Convolution by an AVX-512 register-blocked micro-kernel ("direct" convolution), any stride.
//!
//! The input group is copied zero-padded to `(Cg, Hp, Wp)`, and for a stride `(sh, sw)` split into
//! `sh * sw` phase planes per channel (`phase_split`), so that every tap reads its phase at stride 1.
//! Stride-1 convolutions without horizontal padding (the vertical `(kh, 1)` half of a decomposed
//! pair, 1x1 layers) skip the copy: their padded plane has the input's pitch, so tiles read the
//! input in place, and only the tiles at the top and bottom borders get a padded panel each.
//! Output positions are numbered on the phase plane's pitch `Wq = ceil(Wp / sw)`,
//! `o = y * Wq + x`, so that each tap reads element `o + offset(tap)` of every channel: one offset
//! for all positions. A block of 96 consecutive positions thus reads six consecutive vectors from one
//! address per channel and tap, with no masks and no gathers; the `Wq - Wo` positions per row past
//! the output are computed and dropped (none for the vertical `(kh, 1)` half of a decomposed pair,
//! which has no horizontal padding).
//!
//! A micro-tile is 4 filters x 96 positions, 8 x 48 or 12 x 32, whichever computes the fewest
//! wasted positions and filters (from 64 input channels on, never 4 x 96): 24 zmm accumulators
//! stay in registers through the whole reduction over channels and taps, and each step loads 6, 3
//! or 2 input vectors and broadcasts 4, 8 or 12 weights for 24 FMAs. Unlike one GEMM per tap (the portable path in
//! `mod.rs`) or im2col, every output is written once, and nothing is packed but the weights, once,
//! when the engine is built. The padded copy and the output are written in parallel and never
//! zero-filled first. A task is a block of positions swept by every filter tile in turn, or, for
//! short reductions, a band of blocks swept by each tile in turn (`band_blocks`).

use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use rayon::prelude::*;

use super::{BLOCK_FILTERS, Epilogue, Geometry, OutPtr, phase_split};

/// Filters per packed weight block.
const FILTERS: usize = BLOCK_FILTERS;
const LANES: usize = 16;
/// Accumulator registers per micro-tile.
const ACCUMULATORS: usize = 24;
/// Reductions (channels x taps) below which a convolution's blocks are taken in bands.
const BANDED_BELOW_REDUCTION: usize = 128;
/// Input values a band of blocks reads, in bytes (see [`band_blocks`]).
const BAND_BYTES: usize = 256 << 10;
/// Tasks per worker a convolution is split into, at least, where filter tiles allow. Tasks are
/// of equal size, so few of them leave workers idle: ResNet-18's 64 x 56 x 56 → 128 stride-2
/// layer has 17 blocks, one task each at 8 per worker, 0.71-0.82 ms on 2 threads; split in two by
/// filters (34 tasks), 0.64-0.66 ms.
const TASKS_PER_WORKER: usize = 16;
/// Filters of the widest tile (12 x 32).
const MAX_TILE_FILTERS: usize = 3 * FILTERS;
/// Input channels from which the 4 x 96 tile is never used.
const NARROW_FROM_CHANNELS: usize = 64;

/// Whether this CPU runs the micro-kernel.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Convolves one group: `x` is `(Cg, H, W)`, `out` receives `(Fg, Ho, Wo)` values (every one
/// written, through `epilogue`); `packed` from `pack_blocks`.
///
/// Must only be called when [`available`] is true, with `out` valid for `Fg * Ho * Wo` writes.
pub(super) fn convolve(
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    geo: &Geometry,
    epilogue: Epilogue,
    out: OutPtr,
    workers: usize,
) {
    // Without a residual the ReLU is applied in registers; with one, after adding it.
    let relu = epilogue.relu && epilogue.residual.is_none();
    let (cg, fg) = (geo.channels, geo.filters);
    let (ho, wo) = geo.output_hw;
    let layout = PhaseLayout::new(geo);
    let (wq, offsets) = (layout.wq, &layout.offsets);
    let (tile_blocks, vectors) = tile_shape(geo);
    let (tile_filters, positions) = (tile_blocks * FILTERS, vectors * LANES);
    // Positions 0..span on the phase pitch hold every output; blocks may run past it.
    let span = (ho - 1) * wq + wo;
    let blocks = span.div_ceil(positions);
    let source = Source::new(x, geo, &layout, positions, blocks, workers);
    let filter_tiles = fg.div_ceil(tile_filters);
    let band = band_blocks(geo, &layout, positions, blocks);
    let bands = blocks.div_ceil(band);
    // Enough tasks to balance the workers: split filters as well as positions on small images.
    let chunks = (TASKS_PER_WORKER * workers).div_ceil(bands).clamp(1, filter_tiles);
    let per_chunk = filter_tiles.div_ceil(chunks);
    let block_stride = cg * offsets.len() * FILTERS;
    let task = |t: usize| {
        let (band_index, chunk) = (t / chunks, t % chunks);
        let in_band = band_index * band..((band_index + 1) * band).min(blocks);
        // Each block's input and output runs, found once for every filter tile that sweeps it.
        let mut scratch = [(0usize, 0usize, 0usize); MAX_RUNS];
        let mut band_runs = Vec::new();
        let band_tiles: Vec<(*const f32, usize, std::ops::Range<usize>)> = in_band
            .map(|block| {
                let o0 = block * positions;
                let (start, plane) = source.tile(x, geo, &layout, block, positions);
                let from = band_runs.len();
                band_runs.extend_from_slice(tile_runs(o0, (o0 + positions).min(span), wq, wo, &mut scratch));
                (start, plane, from..band_runs.len())
            })
            .collect();
        let mut tile = [0f32; ACCUMULATORS * LANES];
        for ft in chunk * per_chunk..((chunk + 1) * per_chunk).min(filter_tiles) {
            let first = ft * tile_filters;
            let mut b = [0f32; MAX_TILE_FILTERS];
            for (lane, v) in b.iter_mut().enumerate().take(tile_filters) {
                *v = bias.and_then(|bias| bias.get(first + lane)).copied().unwrap_or(0.0);
            }
            let fb = first / FILTERS;
            for (start, plane, runs) in &band_tiles {
                let (start, plane, runs) = (*start, *plane, &band_runs[runs.clone()]);
                // SAFETY: `available()` was checked by the caller; the kernel reads channel planes
                // `0..cg` at `offset + 0..positions` from the panel's start, which `Source::tile`
                // keeps inside its input, and `packed` holds `cg * taps * 4` values for every block
                // up to a multiple of 6.
                unsafe {
                    let panel = Panel {
                        x: start,
                        plane,
                        channels: cg,
                        offsets,
                    };
                    let w = |k: usize| packed.as_ptr().add((fb + k) * block_stride);
                    match tile_blocks {
                        1 => tile_kernel::<1, 6>(&panel, [w(0)], &b, relu, &mut tile),
                        2 => tile_kernel::<2, 3>(&panel, [w(0), w(1)], &b, relu, &mut tile),
                        _ => tile_kernel::<3, 2>(&panel, [w(0), w(1), w(2)], &b, relu, &mut tile),
                    }
                }
                for (lane, values) in tile.chunks(positions).enumerate().take(tile_filters.min(fg - first)) {
                    let plane_start = (first + lane) * ho * wo;
                    for &(from, at, run) in runs {
                        let (at, values) = (plane_start + at, &values[from..from + run]);
                        if epilogue.residual.is_some() {
                            // SAFETY: these outputs of filter `first + lane` belong to this task
                            // alone (bands partition positions, chunks partition filters) and lie
                            // inside `out`; nothing reads them while the slice lives.
                            let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), run) };
                            epilogue.finish(values, at, dst);
                        } else {
                            // SAFETY: as above.
                            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out.at(at), run) };
                        }
                    }
                }
            }
        }
    };
    let tasks = bands * chunks;
    if workers > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// How many consecutive blocks of `positions` one task takes, each of its filter tiles sweeping
/// them all before the next tile starts. With a short reduction (the horizontal halves of
/// decomposed pairs at 224 pixels: 5 or 32 channels x 3 taps) a tile does few FMAs per output
/// value, and writing the outputs is what takes the time: a block that cycles through every
/// filter tile writes a few hundred bytes into each of up to 64 output planes, where a tile that
/// sweeps a band writes its 4-12 planes as sequential streams. Measured in the VGG-16
/// `config.json` model (`ACCNN_PROFILE`, batch 1, 2 threads): conv1_1's horizontal half (5
/// channels) 1.64-1.80 → 0.95-1.04 ms, conv1_2's (32) 4.52-4.86 → 4.00-4.33 ms. A band's input
/// (`BAND_BYTES`) stays in L2 while the tiles sweep it. Longer reductions keep one block per task,
/// which measured faster there (64 x 56 x 56 → 64, 3x3, `layer_speed` example: 1.12 ms, banded
/// 1.19-1.43 ms; ResNet-18's stem, 147 steps, 1.48-1.53 ms in the model, banded 1.63-1.64 ms).
fn band_blocks(geo: &Geometry, layout: &PhaseLayout, positions: usize, blocks: usize) -> usize {
    if geo.channels * layout.offsets.len() >= BANDED_BELOW_REDUCTION {
        return 1;
    }
    let per_block = geo.channels * layout.phases.len() * positions * std::mem::size_of::<f32>();
    (BAND_BYTES / per_block).clamp(1, blocks)
}

/// Runs of output values a tile of at most 96 positions can hold: one per output row it touches,
/// rows being at least one value wide.
const MAX_RUNS: usize = 6 * LANES;

/// The tile of positions `o0..end` (on the phase pitch `wq`) as runs of output values, each
/// within one output row (or, without padding columns, `wq == wo`, across rows: contiguous in the
/// output too): `(first position, output index within a filter's plane, length)`.
fn tile_runs(
    o0: usize,
    end: usize,
    wq: usize,
    wo: usize,
    runs: &mut [(usize, usize, usize); MAX_RUNS],
) -> &[(usize, usize, usize)] {
    let mut n_runs = 0;
    let (mut o, mut y, mut col) = (o0, o0 / wq, o0 % wq);
    while o < end {
        if col >= wo {
            (o, y, col) = (o + wq - col, y + 1, 0);
            continue;
        }
        let run = if wq == wo { end - o } else { (end - o).min(wo - col) };
        runs[n_runs] = (o - o0, y * wo + col, run);
        n_runs += 1;
        (o, col) = (o + run, col + run);
    }
    &runs[..n_runs]
}

/// Where the micro-tiles of one convolution read its input.
enum Source {
    /// The phase-split, zero-padded copy (`PhaseLayout::split`): every tile reads it.
    Split(Vec<f32>),
    /// The input itself, for stride-1 convolutions without horizontal padding (vertical halves of
    /// decomposed pairs, 1x1 layers): their phase plane differs from the input only by the zero
    /// rows above and below, so tiles whose taps all land inside the image read the input in
    /// place. The blocks at the top and bottom borders read a padded panel each (`borders`, by
    /// block, made once before the tiles run: several filter chunks may read one block).
    InPlace {
        borders: Vec<Option<Vec<f32>>>,
        /// Values per channel a tile reads (`PhaseLayout::reach`).
        reach: usize,
    },
}

impl Source {
    /// How `geo`'s tiles of `positions` positions (`blocks` of them) will read `x`: in place where
    /// it can, unless the border panels would copy as much as the whole padded input.
    fn new(x: &[f32], geo: &Geometry, layout: &PhaseLayout, positions: usize, blocks: usize, workers: usize) -> Source {
        let a = geo.attrs;
        if a.stride == [1, 1] && a.pad.left == 0 && a.pad.right == 0 {
            let reach = layout.reach(positions);
            let border: Vec<usize> = (0..blocks)
                .filter(|&b| in_place_start(geo, b * positions, reach).is_none())
                .collect();
            if border.len() * reach < layout.plane {
                let panel = |&b: &usize| (b, border_panel(x, geo, b * positions, reach));
                let panels: Vec<(usize, Vec<f32>)> = if workers > 1 {
                    border.par_iter().map(panel).collect()
                } else {
                    border.iter().map(panel).collect()
                };
                let mut borders = vec![None; blocks];
                for (b, p) in panels {
                    borders[b] = Some(p);
                }
                return Source::InPlace { borders, reach };
            }
        }
        Source::Split(layout.split(x, geo, blocks * positions, workers))
    }

    /// Where block `block`'s tile reads channel 0 and the distance between channels.
    fn tile(
        &self,
        x: &[f32],
        geo: &Geometry,
        layout: &PhaseLayout,
        block: usize,
        positions: usize,
    ) -> (*const f32, usize) {
        let o0 = block * positions;
        match self {
            // `split` made the copy long enough for every tile's reads.
            Source::Split(xp) => (xp[o0..].as_ptr(), layout.plane),
            Source::InPlace { borders, reach } => match &borders[block] {
                Some(panel) => (panel.as_ptr(), panel.len() / geo.channels),
                None => {
                    let first = in_place_start(geo, o0, *reach).unwrap_or(0);
                    (x[first..].as_ptr(), geo.input_hw.0 * geo.input_hw.1)
                }
            },
        }
    }
}

/// Where a tile from padded position `o0`, reading `reach` values per channel, starts in the
/// input, if every tap of every position reads inside each channel's plane. Without horizontal
/// padding the phase pitch is the input's: padded position `q` is input value `q - top * w`, rows
/// above and below being zeros (a position past the output row reads the next row, as on the
/// padded copy, and is dropped).
fn in_place_start(geo: &Geometry, o0: usize, reach: usize) -> Option<usize> {
    let (h, w) = geo.input_hw;
    o0.checked_sub(geo.attrs.pad.top * w)
        .filter(|&first| first + reach <= h * w)
}

/// The padded positions `o0..o0 + reach` of every channel of `x`: those on input rows copied, the
/// rest zeros.
fn border_panel(x: &[f32], geo: &Geometry, o0: usize, reach: usize) -> Vec<f32> {
    let (h, w) = geo.input_hw;
    let top = geo.attrs.pad.top;
    let mut panel = vec![0f32; geo.channels * reach];
    let lo = (top * w).clamp(o0, o0 + reach);
    let hi = ((top + h) * w).clamp(o0, o0 + reach);
    if lo < hi {
        for (c, dst) in panel.chunks_mut(reach).enumerate() {
            let channel = &x[c * h * w..(c + 1) * h * w];
            dst[lo - o0..hi - o0].copy_from_slice(&channel[lo - top * w..hi - top * w]);
        }
    }
    panel
}

/// Where a tap reads the phase-split input. The input is split into phase planes of `hq x wq` per
/// channel (see `phase_split`): padded cell `(y * sh + i * dh, x * sw + j * dw)` of tap `(i, j)` is
/// cell `(y + i * dh / sh, x + j * dw / sw)` of phase `(i * dh % sh, j * dw % sw)`, so every tap is
/// one offset from output position `y * wq + x`. Only the phases some tap reads are made.
pub(super) struct PhaseLayout {
    /// Row pitch of a phase plane.
    pub wq: usize,
    /// Values per channel (all its phases).
    pub plane: usize,
    /// One offset per tap, in the kernel's `(i, j)` order.
    pub offsets: Vec<usize>,
    /// The phases made, in their order within a channel.
    phases: Vec<[usize; 2]>,
}

impl PhaseLayout {
    /// Values per channel a tile of `positions` positions reads from its first position on.
    fn reach(&self, positions: usize) -> usize {
        positions + self.offsets.iter().max().copied().unwrap_or(0)
    }
}

impl PhaseLayout {
    pub(super) fn new(geo: &Geometry) -> Self {
        let a = geo.attrs;
        let (h, w) = geo.input_hw;
        let [kh, kw] = a.kernel;
        let [sh, sw] = a.stride;
        let (hp, wp) = (h + a.pad.top + a.pad.bottom, w + a.pad.left + a.pad.right);
        let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let taps: Vec<(usize, usize)> = (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i * a.dilate[0], j * a.dilate[1])))
            .collect();
        let mut phases: Vec<[usize; 2]> = taps.iter().map(|&(di, dj)| [di % sh, dj % sw]).collect();
        phases.sort_unstable();
        phases.dedup();
        let offsets = taps
            .iter()
            .map(|&(di, dj)| {
                let phase = phases.partition_point(|&p| p < [di % sh, dj % sw]);
                phase * hq * wq + (di / sh) * wq + dj / sw
            })
            .collect();
        PhaseLayout {
            wq,
            plane: phases.len() * hq * wq,
            offsets,
            phases,
        }
    }

    /// `geo`'s input split into phases, long enough for kernels that read positions
    /// `0..positions` of every channel at every tap offset.
    pub(super) fn split(&self, x: &[f32], geo: &Geometry, positions: usize, workers: usize) -> Vec<f32> {
        let a = geo.attrs;
        let reach = (geo.channels - 1) * self.plane + self.reach(positions);
        let len = reach.max(geo.channels * self.plane);
        phase_split(
            x,
            geo.channels,
            geo.input_hw,
            a.pad,
            a.stride,
            &self.phases,
            len,
            workers,
        )
    }
}

/// Positions `0..span` of the phase pitch that hold every output of `geo`.
fn span(geo: &Geometry) -> usize {
    let a = geo.attrs;
    let (wp, sw) = (geo.input_hw.1 + a.pad.left + a.pad.right, a.stride[1]);
    let (ho, wo) = geo.output_hw;
    (ho - 1) * wp.div_ceil(sw) + wo
}

/// The tile shape for `geo`, as (blocks of 4 filters, vectors of 16 positions): 4 x 96, 8 x 48 or
/// 12 x 32. The 8 x 48 tile loads half as many input vectors per FMA as the 4 x 96 one
/// (broadcasting twice as many weights): the better trade once a tile's channel panel outgrows L1,
/// which holds from 64 channels on (measured on VGG-16's layers and their decomposed halves: 5-20%
/// faster there). Among the allowed shapes the one that computes the fewest padded positions x
/// filters wins, the first listed on a tie: 12 x 32 wins on small images (7x7: 64 positions
/// computed instead of 96).
fn tile_shape(geo: &Geometry) -> (usize, usize) {
    let shapes: &[(usize, usize)] = if geo.channels < NARROW_FROM_CHANNELS {
        &[(1, 6), (2, 3), (3, 2)]
    } else {
        &[(2, 3), (3, 2)]
    };
    shapes
        .iter()
        .copied()
        .min_by_key(|&(b, v)| computed(geo, b * FILTERS, v * LANES))
        .unwrap_or((2, 3))
}

/// Filter x position products computed for `geo` with tiles of `filters` x `positions`.
fn computed(geo: &Geometry, filters: usize, positions: usize) -> usize {
    let span = span(geo);
    geo.filters.div_ceil(filters) * filters * span.div_ceil(positions) * positions
}

/// Filter x position products this kernel computes for `geo`, padding included.
pub(super) fn computed_products(geo: &Geometry) -> usize {
    let (blocks, vectors) = tile_shape(geo);
    computed(geo, blocks * FILTERS, vectors * LANES)
}

/// The input a micro-tile reads: `channels` planes `plane` apart from `x`, one offset per tap.
#[derive(Clone, Copy)]
struct Panel<'a> {
    x: *const f32,
    plane: usize,
    channels: usize,
    offsets: &'a [usize],
}

/// `4 * B` filters x `16 * V` positions (`4 * B * V` = 24 accumulators), summed over `cg` channels
/// and every tap; filter block `b` reads its weights from `w[b]`. Results (after a ReLU with
/// `relu`) go to `tile` as `4 * B` rows of `16 * V` values.
///
/// # Safety
/// AVX-512F must be available; `x.add(c * plane + offset + k)` must be readable for every channel
/// `c < channels`, tap offset and `k < 16 * V`; every `w[b]` must hold `channels * offsets.len() * 4`
/// values.
#[target_feature(enable = "avx512f")]
unsafe fn tile_kernel<const B: usize, const V: usize>(
    input: &Panel,
    w: [*const f32; B],
    bias: &[f32; MAX_TILE_FILTERS],
    relu: bool,
    tile: &mut [f32; ACCUMULATORS * LANES],
) {
    let mut acc: [[[__m512; V]; FILTERS]; B] = [[[_mm512_set1_ps(0.0); V]; FILTERS]; B];
    for (b, block) in acc.iter_mut().enumerate() {
        for (f, row) in block.iter_mut().enumerate() {
            *row = [_mm512_set1_ps(bias[b * FILTERS + f]); V];
        }
    }
    let Panel {
        x,
        plane,
        channels,
        offsets,
    } = *input;
    let mut step = 0;
    for c in 0..channels {
        // SAFETY (whole loop): in bounds by the function's contract.
        let xc = unsafe { x.add(c * plane) };
        for &off in offsets {
            let p = unsafe { xc.add(off) };
            let xs: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(p.add(v * LANES)) });
            for (block, wb) in acc.iter_mut().zip(w) {
                for (f, row) in block.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(unsafe { *wb.add(step + f) });
                    for (a, xv) in row.iter_mut().zip(&xs) {
                        *a = _mm512_fmadd_ps(*xv, b, *a);
                    }
                }
            }
            step += FILTERS;
        }
    }
    // Indexed stores: an iterator over `acc` here makes LLVM keep it in memory through the loop.
    #[allow(clippy::needless_range_loop)]
    for b in 0..B {
        for f in 0..FILTERS {
            for v in 0..V {
                let at = ((b * FILTERS + f) * V + v) * LANES;
                // max(x, 0) is 0 for NaN too, as f32::max.
                let value = if relu {
                    _mm512_max_ps(acc[b][f][v], _mm512_setzero_ps())
                } else {
                    acc[b][f][v]
                };
                // SAFETY: `at + LANES <= 4 * B * V * LANES = ACCUMULATORS * LANES`.
                unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(at), value) };
            }
        }
    }
}
