//! Resampling to a new size by nearest-neighbour or (multi)linear interpolation: ONNX `Resize`
//! (opsets 10 to 19) and `Upsample` (the feature-pyramid and segmentation upsampling of detectors).
//!
//! Each output coordinate is mapped back into the input by the [`CoordinateTransform`]; nearest
//! mode rounds it ([`NearestRounding`]), linear mode mixes the two inputs around it. The axes are
//! independent, so both the reference and the engine resample one axis at a time through the same
//! [`ResizeAttrs::taps`]. Linear and cubic modes follow ONNX's reference: the `width` inputs nearest
//! the source coordinate, edge values past the ends, optionally antialiased.

use crate::error::GraphError;

use super::context::strides;
use super::{Array, EvalContext, ShapeContext};

/// How a nearest-mode source coordinate becomes an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestRounding {
    /// Round half down (ONNX's default).
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// How an output index maps to a coordinate of the input (ONNX `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinateTransform {
    /// `(x + 0.5) / scale - 0.5` (ONNX's default).
    HalfPixel,
    /// Half-pixel, re-centred when the output size was rounded (ONNX opset 19).
    HalfPixelSymmetric,
    /// Half-pixel, but `0` for an output of length 1 (PyTorch's `align_corners=False`).
    PytorchHalfPixel,
    /// `x * (in - 1) / (out - 1)`: the corner pixels of input and output aligned.
    AlignCorners,
    /// `x / scale` (ONNX `Upsample`, TensorFlow's legacy resize).
    Asymmetric,
}

/// How the values around a source coordinate are combined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    Nearest(NearestRounding),
    /// Linear along each resized axis (bilinear on images).
    Linear,
    /// Keys' cubic convolution with parameter `a` (ONNX `cubic_coeff_a`, default -0.75); with
    /// `exclude_outside`, taps outside the input get weight zero and the rest are renormalised.
    Cubic {
        a: f32,
        exclude_outside: bool,
    },
}

/// The output size: a factor per axis (output `floor(in * scale)`) or the lengths themselves.
#[derive(Clone, Debug, PartialEq)]
pub enum ResizeTarget {
    Scales(Vec<f32>),
    Sizes(Vec<usize>),
}

/// Attributes of a resize: one entry of `target` per input axis.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coordinates: CoordinateTransform,
    pub target: ResizeTarget,
    /// When downsampling in linear or cubic mode, widen the filter by `1 / scale` (ONNX
    /// `antialias`, PIL's resampling).
    pub antialias: bool,
}

/// What the outputs of one axis read: output `o` is the sum over `k < width` of
/// `weight[o * width + k] * input[index[o * width + k]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisTaps {
    pub width: usize,
    pub index: Vec<usize>,
    pub weight: Vec<f64>,
}

impl ResizeAttrs {
    /// The output shape for `input`; `None` when the target does not have one entry per axis or
    /// makes an axis empty.
    pub fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let out: Vec<usize> = match &self.target {
            ResizeTarget::Sizes(s) if s.len() == input.len() => s.clone(),
            ResizeTarget::Scales(s) if s.len() == input.len() => input
                .iter()
                .zip(s)
                .map(|(&d, &k)| (k.is_finite() && k > 0.0).then(|| (d as f64 * k as f64).floor() as usize))
                .collect::<Option<_>>()?,
            _ => return None,
        };
        out.iter().all(|&d| d > 0).then_some(out)
    }

    /// The scale of axis `k`: the given factor, or `out / in` when sizes were given.
    fn scale(&self, k: usize, len: usize, out_len: usize) -> f64 {
        match &self.target {
            ResizeTarget::Scales(s) => s[k] as f64,
            ResizeTarget::Sizes(_) => out_len as f64 / len as f64,
        }
    }

    /// The input coordinate output index `x` of axis `k` maps to. The resized length in the
    /// formulas is `in * scale` before rounding, as ONNX defines it.
    fn source(&self, k: usize, x: usize, len: usize, out_len: usize) -> f64 {
        let scale = self.scale(k, len, out_len);
        let resized = len as f64 * scale;
        let x = x as f64;
        match self.coordinates {
            CoordinateTransform::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordinateTransform::HalfPixelSymmetric => {
                let adjustment = out_len as f64 / resized;
                let offset = len as f64 / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
            CoordinateTransform::PytorchHalfPixel if resized > 1.0 => (x + 0.5) / scale - 0.5,
            CoordinateTransform::PytorchHalfPixel => 0.0,
            CoordinateTransform::AlignCorners if resized != 1.0 => x * (len as f64 - 1.0) / (resized - 1.0),
            CoordinateTransform::AlignCorners => 0.0,
            CoordinateTransform::Asymmetric => x / scale,
        }
    }

    /// What each of the `out_len` outputs of axis `k` reads from the `len` inputs. Interpolating
    /// modes read the `width` inputs nearest the source coordinate, those past an edge reading the
    /// edge (ONNX's edge padding).
    pub fn taps(&self, k: usize, len: usize, out_len: usize) -> AxisTaps {
        let last = len.saturating_sub(1) as isize;
        let scale = self.scale(k, len, out_len);
        // Filters stretch by 1 / scale only when antialiasing a downsampling.
        let stretch = if self.antialias { scale.min(1.0) } else { 1.0 };
        let width = match self.mode {
            ResizeMode::Nearest(_) => 1,
            ResizeMode::Linear => (2 - 2 * ((-1.0 / stretch).floor() as isize + 1)) as usize,
            ResizeMode::Cubic { .. } => (2 - 2 * ((-2.0 / stretch).floor() as isize + 1)) as usize,
        };
        let mut taps = AxisTaps {
            width,
            index: Vec::with_capacity(out_len * width),
            weight: Vec::with_capacity(out_len * width),
        };
        for x in 0..out_len {
            let s = self.source(k, x, len, out_len);
            if let ResizeMode::Nearest(rounding) = self.mode {
                let r = match rounding {
                    NearestRounding::RoundPreferFloor if s.fract().abs() == 0.5 => s.floor(),
                    NearestRounding::RoundPreferCeil if s.fract().abs() == 0.5 => s.ceil(),
                    NearestRounding::RoundPreferFloor | NearestRounding::RoundPreferCeil => s.round(),
                    NearestRounding::Floor => s.floor(),
                    NearestRounding::Ceil => s.ceil(),
                };
                taps.index.push((r as isize).clamp(0, last) as usize);
                taps.weight.push(1.0);
                continue;
            }
            // The input left of `s`, and how far `s` lies past it, in (0, 1].
            let (base, ratio) = if s.fract() == 0.0 {
                (s as isize - 1, 1.0)
            } else {
                (s.floor() as isize, s - s.floor())
            };
            let first = base + 1 - (width / 2) as isize;
            let mut weights: Vec<f64> = (0..width)
                .map(|j| {
                    let distance = ((first + j as isize) as f64 - base as f64 - ratio).abs() * stretch;
                    match self.mode {
                        ResizeMode::Cubic { a, .. } => cubic(a as f64, distance),
                        _ => (1.0 - distance).max(0.0),
                    }
                })
                .collect();
            if let ResizeMode::Cubic {
                exclude_outside: true, ..
            } = self.mode
            {
                for (j, w) in weights.iter_mut().enumerate() {
                    if !(0..=last).contains(&(first + j as isize)) {
                        *w = 0.0;
                    }
                }
            }
            let total: f64 = weights.iter().sum();
            for (j, w) in weights.into_iter().enumerate() {
                taps.index.push((first + j as isize).clamp(0, last) as usize);
                taps.weight.push(if total != 0.0 { w / total } else { 0.0 });
            }
        }
        taps
    }

    /// Whether axis `k` is copied unchanged (same length, every output reading its own index).
    pub fn is_identity(&self, k: usize, len: usize, out_len: usize) -> bool {
        if len != out_len {
            return false;
        }
        let t = self.taps(k, len, out_len);
        (0..out_len).all(|o| {
            (0..t.width).all(|j| {
                let (i, w) = (t.index[o * t.width + j], t.weight[o * t.width + j]);
                w == 0.0 || (i == o && w == 1.0)
            })
        })
    }
}

/// Keys' cubic convolution kernel at `|x|` with parameter `a`.
fn cubic(a: f64, x: f64) -> f64 {
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

pub(crate) fn output_shapes(attrs: &ResizeAttrs, cx: &ShapeContext) -> Result<Vec<Vec<usize>>, GraphError> {
    let x = cx.input(0)?;
    let out = attrs
        .output_shape(x)
        .ok_or_else(|| cx.error(format!("cannot resize shape {x:?} to {:?}", attrs.target)))?;
    Ok(vec![out])
}

/// One axis at a time, each output a mix of its taps.
pub(crate) fn reference(attrs: &ResizeAttrs, cx: &EvalContext) -> Result<Array, GraphError> {
    let x = cx.arg(0)?;
    let out_shape = cx.output_shape();
    let mut current = x.clone();
    for (k, &out_len) in out_shape.iter().enumerate() {
        let len = current.shape[k];
        if attrs.is_identity(k, len, out_len) {
            continue;
        }
        let taps = attrs.taps(k, len, out_len);
        let mut shape = current.shape.clone();
        shape[k] = out_len;
        let (outer, inner) = (shape[..k].iter().product::<usize>(), strides(&shape)[k]);
        let mut data = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for t in 0..out_len {
                for i in 0..inner {
                    let mut acc = 0.0;
                    for j in t * taps.width..(t + 1) * taps.width {
                        acc += taps.weight[j] * current.data[(o * len + taps.index[j]) * inner + i];
                    }
                    data.push(acc);
                }
            }
        }
        current = Array::new(shape, data);
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: ResizeMode, coordinates: CoordinateTransform, target: ResizeTarget) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coordinates,
            target,
            antialias: false,
        }
    }

    /// (index, weight) pairs of output `o`, zero weights dropped.
    fn reads(t: &AxisTaps, o: usize) -> Vec<(usize, f64)> {
        (o * t.width..(o + 1) * t.width)
            .map(|j| (t.index[j], t.weight[j]))
            .filter(|&(_, w)| w != 0.0)
            .collect()
    }

    #[test]
    fn nearest_doubling_repeats_each_input() {
        let a = attrs(
            ResizeMode::Nearest(NearestRounding::Floor),
            CoordinateTransform::Asymmetric,
            ResizeTarget::Scales(vec![2.0]),
        );
        assert_eq!(a.taps(0, 3, 6).index, [0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn half_pixel_linear_matches_the_hand_computed_weights() {
        // Output 1 of 4 from 2 inputs: (1 + 0.5) / 2 - 0.5 = 0.25 → 0.75 * x0 + 0.25 * x1.
        let a = attrs(
            ResizeMode::Linear,
            CoordinateTransform::HalfPixel,
            ResizeTarget::Sizes(vec![4]),
        );
        let t = a.taps(0, 2, 4);
        let r = reads(&t, 1);
        assert_eq!((r[0].0, r[1].0), (0, 1));
        assert!((r[0].1 - 0.75).abs() < 1e-12 && (r[1].1 - 0.25).abs() < 1e-12);
        // Output 0 maps to -0.25: both taps read the edge.
        assert!(reads(&t, 0).iter().all(|&(i, _)| i == 0));
    }

    #[test]
    fn align_corners_keeps_the_corners() {
        let a = attrs(
            ResizeMode::Linear,
            CoordinateTransform::AlignCorners,
            ResizeTarget::Sizes(vec![7]),
        );
        let t = a.taps(0, 4, 7);
        assert_eq!(reads(&t, 0), [(0, 1.0)]);
        assert_eq!(reads(&t, 6), [(3, 1.0)]);
        assert_eq!(reads(&t, 2), [(1, 1.0)]);
    }

    #[test]
    fn cubic_weights_sum_to_one_and_interpolate_at_the_samples() {
        let a = attrs(
            ResizeMode::Cubic {
                a: -0.75,
                exclude_outside: false,
            },
            CoordinateTransform::Asymmetric,
            ResizeTarget::Scales(vec![2.0]),
        );
        let t = a.taps(0, 5, 10);
        assert_eq!(t.width, 4);
        for o in 0..10 {
            let sum: f64 = reads(&t, o).iter().map(|&(_, w)| w).sum();
            assert!((sum - 1.0).abs() < 1e-12, "output {o}: {sum}");
        }
        // Even outputs sit on input samples: x = o / 2 exactly.
        assert_eq!(reads(&t, 4), [(2, 1.0)]);
    }

    #[test]
    fn antialiasing_widens_the_filter_when_downsampling() {
        let mut a = attrs(
            ResizeMode::Linear,
            CoordinateTransform::HalfPixel,
            ResizeTarget::Scales(vec![0.5]),
        );
        assert_eq!(a.taps(0, 8, 4).width, 2);
        a.antialias = true;
        assert_eq!(a.taps(0, 8, 4).width, 4);
    }

    #[test]
    fn scales_floor_the_output_length() {
        let a = attrs(
            ResizeMode::Linear,
            CoordinateTransform::HalfPixel,
            ResizeTarget::Scales(vec![1.0, 1.0, 0.6, 1.5]),
        );
        assert_eq!(a.output_shape(&[1, 2, 5, 3]), Some(vec![1, 2, 3, 4]));
        assert_eq!(a.output_shape(&[1, 2, 5]), None);
    }
}
