//! Augmentation of preprocessed images: a random resized crop (Szegedy et al.'s, as torchvision's
//! `RandomResizedCrop` with scale 0.35–1 and aspect 3/4–4/3) and a horizontal flip.

use accnn_infer::data::synthetic::SeededRng;

/// Crops a random window of 35–100% of each image's area and aspect 3/4–4/3, resizes it back
/// bilinearly, and flips half of them; `images` is `(N, C, H, W)` with `[C, H, W] = shape`.
pub fn augment(images: &mut [f32], [c, h, w]: [usize; 3], rng: &mut SeededRng) {
    let per = c * h * w;
    let mut window = vec![0f32; per];
    for image in images.chunks_mut(per) {
        let crop = crop_window(h, w, rng);
        let flip = rng.uniform() < 0.5;
        for k in 0..c {
            resample(
                &image[k * h * w..][..h * w],
                &mut window[k * h * w..][..h * w],
                [h, w],
                crop,
                flip,
            );
        }
        image.copy_from_slice(&window);
    }
}

/// `out` (`h x w`) = the `crop` window `(top, left, height, width)` of `plane` resized bilinearly
/// to `h x w`, mirrored left to right when `flip`.
fn resample(plane: &[f32], out: &mut [f32], [h, w]: [usize; 2], crop: (usize, usize, usize, usize), flip: bool) {
    let (top, left, ch, cw) = crop;
    for y in 0..h {
        let sy = top as f64 + (y as f64 + 0.5) * ch as f64 / h as f64 - 0.5;
        let (y0, fy) = split(sy, top, ch);
        let y1 = (y0 + 1).min(top + ch - 1);
        for x in 0..w {
            let xd = if flip { w - 1 - x } else { x };
            let sx = left as f64 + (xd as f64 + 0.5) * cw as f64 / w as f64 - 0.5;
            let (x0, fx) = split(sx, left, cw);
            let x1 = (x0 + 1).min(left + cw - 1);
            let upper = plane[y0 * w + x0] as f64 * (1.0 - fx) + plane[y0 * w + x1] as f64 * fx;
            let lower = plane[y1 * w + x0] as f64 * (1.0 - fx) + plane[y1 * w + x1] as f64 * fx;
            out[y * w + x] = (upper * (1.0 - fy) + lower * fy) as f32;
        }
    }
}

/// The cell at or before coordinate `s`, clamped into the window `start..start + len`, and the
/// weight of the cell after it.
fn split(s: f64, start: usize, len: usize) -> (usize, f64) {
    let s = s.clamp(start as f64, (start + len - 1) as f64);
    let i = (s.floor() as usize).min(start + len - 1);
    (i, s - i as f64)
}

/// `(top, left, height, width)` of a random crop of an `h x w` image.
fn crop_window(h: usize, w: usize, rng: &mut SeededRng) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    for _ in 0..10 {
        let target = area * (0.35 + 0.65 * rng.uniform());
        let aspect = ((3f64 / 4.0).ln() + rng.uniform() * ((4f64 / 3.0).ln() - (3f64 / 4.0).ln())).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if (1..=w).contains(&cw) && (1..=h).contains(&ch) {
            let top = (rng.uniform() * (h - ch + 1) as f64) as usize;
            let left = (rng.uniform() * (w - cw + 1) as f64) as usize;
            return (top.min(h - ch), left.min(w - cw), ch, cw);
        }
    }
    (0, 0, h, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_window_is_the_identity_a_flip_mirrors_and_a_half_window_is_magnified() {
        let (h, w) = (4, 6);
        let image: Vec<f32> = (0..h * w).map(|v| v as f32).collect();
        let mut out = vec![0f32; h * w];
        resample(&image, &mut out, [h, w], (0, 0, h, w), false);
        assert_eq!(out, image);
        resample(&image, &mut out, [h, w], (0, 0, h, w), true);
        for y in 0..h {
            for x in 0..w {
                assert_eq!(out[y * w + x], image[y * w + w - 1 - x]);
            }
        }
        // Rows 2..4 of a ramp along y (value 6·y + x) magnified 2x: y' = 2 + (y + 0.5) / 2 - 0.5,
        // clamped to the window's rows.
        resample(&image, &mut out, [h, w], (2, 0, 2, w), false);
        for y in 0..h {
            let sy = (2.0 + (y as f64 + 0.5) / 2.0 - 0.5).clamp(2.0, 3.0);
            for x in 0..w {
                assert!((out[y * w + x] as f64 - (6.0 * sy + x as f64)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn windows_stay_inside_and_augmenting_keeps_a_constant_image() {
        let mut rng = SeededRng::new(7);
        for _ in 0..500 {
            let (top, left, ch, cw) = crop_window(28, 20, &mut rng);
            assert!(ch >= 1 && cw >= 1 && top + ch <= 28 && left + cw <= 20);
            let area = (ch * cw) as f64 / (28.0 * 20.0);
            assert!(area > 0.3 && area <= 1.0, "{area}");
        }
        let mut images = vec![0.25f32; 2 * 3 * 28 * 20];
        augment(&mut images, [3, 28, 20], &mut rng);
        assert!(images.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }
}
