//! Which output positions are sampled, and the input patches a layer reads there.

use accnn_graph::ir::ConvAttrs;

/// Output positions sampled for one layer: the same for a given image in every pass.
pub(crate) struct Sampler {
    seed: u64,
    count: usize,
    height: usize,
    width: usize,
}

impl Sampler {
    /// `count` positions per image of an `height x width` output grid of layer number `layer`
    /// (every position when the grid has no more than `count`).
    pub fn new(layer: usize, count: usize, height: usize, width: usize) -> Self {
        Sampler {
            seed: (layer as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            count,
            height,
            width,
        }
    }

    pub fn positions(&self, image: usize) -> Vec<(usize, usize)> {
        let cells = self.height * self.width;
        if cells <= self.count {
            return (0..cells).map(|i| (i / self.width, i % self.width)).collect();
        }
        let mut state = self.seed ^ (image as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (0..self.count)
            .map(|_| {
                state ^= state >> 30;
                state = state.wrapping_mul(0x94d0_49bb_1331_11eb);
                state ^= state >> 27;
                let i = (state % cells as u64) as usize;
                (i / self.width, i % self.width)
            })
            .collect()
    }
}

/// The `(c, i)`-ordered vertical patch (`C·kh` values) that horizontal tap `tap` of output
/// `(row, col)` reads from one `C x H x W` input image, zero where it falls in the padding.
pub(crate) fn vertical_patches(
    image: &[f32],
    [channels, h, w]: [usize; 3],
    c: &ConvAttrs,
    row: usize,
    col: usize,
    tap: usize,
) -> Vec<f64> {
    let kh = c.kernel[0];
    let x = (col * c.stride[1] + tap * c.dilate[1]) as isize - c.pad.left as isize;
    let mut out = vec![0f64; channels * kh];
    if x < 0 || x >= w as isize {
        return out;
    }
    for i in 0..kh {
        let y = (row * c.stride[0] + i * c.dilate[0]) as isize - c.pad.top as isize;
        if y < 0 || y >= h as isize {
            continue;
        }
        for ch in 0..channels {
            out[ch * kh + i] = image[(ch * h + y as usize) * w + x as usize] as f64;
        }
    }
    out
}
