//! Synthetic document images for the OCR models: what their inputs look like, with no dataset to
//! download. A pattern or noise leaves a text detector's map empty (outputs ~1e-10, where relative
//! errors mean nothing); dark strokes in glyph-sized boxes on a light page make it fire.

/// The per-channel mean and deviation a model's preprocessing divides by.
pub type Normalisation = ([f32; 3], [f32; 3]);

/// Rows of dark glyph-sized blocks on a white page, the same for every image of `shape`
/// (`N, C, H, W`), normalised: the fixed input of the conformance check.
pub fn regular_page(shape: &[usize], (mean, std): Normalisation) -> Vec<f32> {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let line = (h / 8).clamp(8, 40);
    let glyph = (line * 3 / 8).max(3);
    let mut out = Vec::with_capacity(shape.iter().product());
    for _ in 0..shape[0] {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let inked = y % line >= line / 4
                        && y % line < line / 4 + glyph
                        && x % (glyph + glyph / 2 + 1) < glyph
                        && x >= w / 16
                        && x < w - w / 16;
                    let v = if inked { 0.0 } else { 1.0 };
                    out.push((v - mean[ch % 3]) / std[ch % 3]);
                }
            }
        }
    }
    out
}

/// A small deterministic generator (xorshift64*), so that pages are the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// `shape[0]` different pages of text-like strokes (`N, C, H, W`), normalised. Inputs 64 pixels
/// high or less hold one text line filling most of the height, as a recogniser or an orientation
/// classifier receives; taller ones a page of lines. Line pitch, glyph size and spacing, word gaps,
/// ink and paper tone vary per page; a quarter of the pages are upside down (the classifier's
/// other class) and every pixel carries a little noise.
pub fn varied_pages(shape: &[usize], seed: u64, (mean, std): Normalisation) -> Vec<f32> {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(shape.iter().product());
    for _ in 0..n {
        let paper = rng.uniform(0.75, 1.0);
        let ink = rng.uniform(0.0, 0.35);
        let mut page = vec![paper; h * w];
        let (pitch, first) = if h <= 64 {
            (h, 0)
        } else {
            let pitch = rng.int((h / 14).max(12), (h / 5).max(14));
            (pitch, rng.int(0, pitch / 2))
        };
        let mut top = first;
        while top + pitch / 2 < h {
            let glyph_h = ((pitch as f32 * rng.uniform(0.4, 0.7)) as usize).max(4);
            let y0 = top + rng.int(0, pitch.saturating_sub(glyph_h).max(1) - 1);
            let mut x = rng.int(0, w / 8);
            let end = w - rng.int(0, w / 3);
            while x < end {
                let glyph_w = ((glyph_h as f32 * rng.uniform(0.45, 0.9)) as usize).max(3);
                let stroke = (glyph_h / 7).max(1);
                for _ in 0..rng.int(2, 4) {
                    let vertical = rng.next().is_multiple_of(2);
                    let (gy0, gy1, gx0, gx1) = if vertical {
                        let gx = x + rng.int(0, glyph_w - stroke);
                        (y0, y0 + glyph_h, gx, gx + stroke)
                    } else {
                        let gy = y0 + rng.int(0, glyph_h - stroke);
                        (gy, gy + stroke, x, x + glyph_w)
                    };
                    for yy in gy0..gy1.min(h) {
                        for xx in gx0..gx1.min(w) {
                            page[yy * w + xx] = ink;
                        }
                    }
                }
                x += glyph_w + ((glyph_h as f32 * rng.uniform(0.1, 0.35)) as usize).max(1);
                if rng.next().is_multiple_of(6) {
                    x += glyph_w;
                }
            }
            top += pitch;
        }
        if rng.next().is_multiple_of(4) {
            page.reverse();
        }
        for ch in 0..c {
            for &v in &page {
                let v = v + rng.uniform(-0.02, 0.02);
                out.push((v - mean[ch % 3]) / std[ch % 3]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_differ_hold_ink_and_paper_and_repeat_with_their_seed() {
        let none = ([0.0; 3], [1.0; 3]);
        for shape in [[3usize, 3, 48, 192], [2, 3, 320, 320]] {
            let a = varied_pages(&shape, 1, none);
            assert_eq!(a.len(), shape.iter().product::<usize>());
            assert_eq!(a, varied_pages(&shape, 1, none));
            assert_ne!(a, varied_pages(&shape, 2, none));
            let per = shape[1] * shape[2] * shape[3];
            let (p0, p1) = (&a[..per], &a[per..2 * per]);
            assert_ne!(p0, p1, "{shape:?}: pages differ");
            for p in [p0, p1] {
                let dark = p.iter().filter(|v| **v < 0.4).count() as f64 / per as f64;
                assert!(dark > 0.02 && dark < 0.6, "{shape:?}: inked fraction {dark}");
            }
        }
    }
}
