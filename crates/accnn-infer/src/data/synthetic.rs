//! Seeded synthetic inputs: white noise, and images whose spatial spectrum falls off as `1/f` like
//! natural images' do (a stand-in calibration set when no data is at hand).
//!
//! Weight-only (data-free) decomposition assumes every layer's input is white noise, which no
//! real input is: pixels are strongly correlated with their neighbours, and so are the features
//! a network computes from them. Images with a natural-image spectrum, pushed through the network
//! itself, give every layer inputs with realistic spatial correlations, from which the data-aware
//! fit (response energies and least-squares refits) works as it does on real images.
//!
//! ```
//! use accnn_infer::data::synthetic::natural_noise;
//! let d = natural_noise(4, [3, 16, 16], 7);
//! assert_eq!(d.shape, [4, 3, 16, 16]);
//! // Every channel of every image has mean 0 and standard deviation 1.
//! let first: &[f32] = &d.images[..256];
//! let mean = first.iter().sum::<f32>() / 256.0;
//! assert!(mean.abs() < 1e-4);
//! ```

use super::Dataset;

/// A small deterministic generator (xorshift64*): the same numbers on every machine, with no
/// random-number crate.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        // A zero state would stay zero.
        SeededRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `n` standard-normal values from `seed`.
pub fn standard_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// One `h x w` field with a `1/f` amplitude spectrum: white noise at every octave (cells of 1, 2,
/// 4, … pixels), each bilinearly interpolated and summed with equal variance, which is what equal
/// power per octave (a `1/f²` power spectrum in 2-D) means.
fn octave_field(rng: &mut SeededRng, h: usize, w: usize) -> Vec<f64> {
    let mut field = vec![0.0; h * w];
    let mut cell = 1usize;
    loop {
        let (gh, gw) = (h.div_ceil(cell) + 1, w.div_ceil(cell) + 1);
        let grid: Vec<f64> = (0..gh * gw).map(|_| rng.normal()).collect();
        // A random phase, so that octaves' grid lines do not line up.
        let (oy, ox) = (rng.uniform(), rng.uniform());
        for y in 0..h {
            let gy = (y as f64 / cell as f64 + oy).min((gh - 1) as f64 - 1e-9);
            let (y0, fy) = (gy.floor() as usize, gy.fract());
            for x in 0..w {
                let gx = (x as f64 / cell as f64 + ox).min((gw - 1) as f64 - 1e-9);
                let (x0, fx) = (gx.floor() as usize, gx.fract());
                let at = |r: usize, c: usize| grid[r * gw + c];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1) * fx;
                let bottom = at(y0 + 1, x0) * (1.0 - fx) + at(y0 + 1, x0 + 1) * fx;
                field[y * w + x] += top * (1.0 - fy) + bottom * fy;
            }
        }
        if cell >= h.max(w) {
            return field;
        }
        cell *= 2;
    }
}

/// `count` images of shape `[c, h, w]` with natural-image (`1/f`) spatial statistics: a shared
/// luminance field plus a weaker field of each channel's own (colour channels are correlated),
/// each channel then standardised to mean 0 and standard deviation 1, the range of inputs
/// normalised by a dataset's mean and standard deviation. Labels are 0.
pub fn natural_noise(count: usize, [c, h, w]: [usize; 3], seed: u64) -> Dataset {
    let mut rng = SeededRng::new(seed);
    let plane = h * w;
    let mut images = Vec::with_capacity(count * c * plane);
    for _ in 0..count {
        let luminance = octave_field(&mut rng, h, w);
        for _ in 0..c {
            let own = if c > 1 {
                octave_field(&mut rng, h, w)
            } else {
                vec![0.0; plane]
            };
            let channel: Vec<f64> = luminance.iter().zip(&own).map(|(l, o)| l + 0.5 * o).collect();
            let mean = channel.iter().sum::<f64>() / plane as f64;
            let var = channel.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / plane as f64;
            let scale = if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 };
            images.extend(channel.iter().map(|v| ((v - mean) * scale) as f32));
        }
    }
    Dataset {
        shape: [count, c, h, w],
        images,
        labels: vec![0; count],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean product of horizontally adjacent pixels: the lag-1 autocorrelation of standardised
    /// images.
    fn neighbour_correlation(d: &Dataset) -> f64 {
        let [n, c, h, w] = d.shape;
        let mut sum = 0.0;
        for plane in d.images.chunks(h * w).take(n * c) {
            for y in 0..h {
                for x in 0..w - 1 {
                    sum += (plane[y * w + x] * plane[y * w + x + 1]) as f64;
                }
            }
        }
        sum / (n * c * h * (w - 1)) as f64
    }

    #[test]
    fn natural_noise_is_standardised_and_spatially_correlated_unlike_white_noise() {
        let d = natural_noise(16, [3, 32, 32], 1);
        for plane in d.images.chunks(32 * 32) {
            let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / 1024.0;
            let var = plane.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 1024.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "{mean} {var}");
        }
        // Natural images: neighbours correlate strongly (about 0.9); white noise: not at all.
        let natural = neighbour_correlation(&d);
        let white = Dataset {
            shape: [16, 3, 32, 32],
            images: standard_normal(16 * 3 * 1024, 1),
            labels: vec![0; 16],
        };
        assert!(natural > 0.6, "{natural}");
        assert!(neighbour_correlation(&white).abs() < 0.05);
        // Seeded: the same images again, other images from another seed.
        assert_eq!(natural_noise(16, [3, 32, 32], 1).images, d.images);
        assert_ne!(natural_noise(16, [3, 32, 32], 2).images, d.images);
    }

    #[test]
    fn standard_normal_has_unit_moments() {
        let v = standard_normal(100_000, 3);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "{mean} {var}");
    }
}
