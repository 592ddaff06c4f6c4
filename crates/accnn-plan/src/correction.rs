//! Data-free correction of a decomposed layer: through its bias, the response to its input's mean
//! that the truncation took away; on a network's main path, also the gain it lost.
//!
//! A layer `y = W x + b` replaced by `Ŵ x + b` errs by `(W − Ŵ) x`, whose mean over the data is
//! `(W − Ŵ) E[x]`: for the post-ReLU inputs of most layers a systematic shift of every output
//! channel, which the next ReLU turns into lost or spurious activations. Adding
//! `(W − Ŵ) E[x]` to the bias removes the shift (Nagel et al., arXiv 1906.04721). `E[x]` comes from
//! [`accnn_graph::moments`] (no data): each layer's input is taken at its estimated mean level, the
//! same for every channel (the estimate of the level is far better than of the per-channel means:
//! on the converged Fashion-MNIST fixtures, per-channel estimates correct ResNet-14 at 3x to 62%
//! top-1, the level to 73%), and a tap of a padded convolution counts only the share of outputs
//! that read it inside the image.
//!
//! A truncated layer also responds more weakly: its output's spread shrinks with the energy it
//! lost. Where every path to the output passes through the layer (a chain, as in VGG), the next
//! layers see a weaker signal and lose their share of it again, so the loss compounds: on the
//! converged VGG fixture at 3x the last ReLU's standard deviation is 0.64 of the original's. There
//! the pair's second half is scaled by the layer's *gain*, `√(Σ s² / Σ ŝ²)` over the per-(filter,
//! channel) tap sums `s` of the original and `ŝ` of the pair (the response energy to smooth
//! inputs, each channel one value within a window; never below 1 nor above the gain restoring the
//! pair's whole energy), and its bias moved so that the mean response stays corrected. Inside a residual block or a branch the skip or the other branches carry the
//! signal past the layer, nothing compounds (ResNet-14 at 3x: 0.93), and scaling the branch only
//! scales its error: such layers keep their gain (restoring it there cost ResNet-14 at 4x 21
//! points of top-1). So do pointwise and depthwise layers: restored on PaddleOCR's recogniser, a
//! chain of them, it lowered the per-step agreement at 2x from 81% to 75%.

use accnn_graph::Model;
use accnn_graph::ir::{ConvAttrs, Op};
use accnn_graph::moments::{ChannelMoments, propagate};

use crate::analysis::{Analysis, Layer};
use crate::per_layer::{LayerId, LayerSet, PerLayer};

/// Each layer's estimated input mean level, what the bias correction multiplies the lost weight
/// by, and whether the layer is on the network's main path (its lost gain is restored).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BiasCorrection {
    levels: PerLayer<f64>,
    main_path: LayerSet,
}

/// What the correction does to one layer ([`BiasCorrection::layer`], or made by hand for
/// [`crate::Factorisation::split`]): the input level its bias is corrected at, and whether its
/// gain is restored too.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerCorrection {
    pub level: f64,
    pub restore_gain: bool,
}

impl BiasCorrection {
    /// The input levels of `analysis`'s layers in `model` (the analysed model, BatchNorm folded or
    /// not), the data input taken as normalised (each channel mean 0, variance 1). Layers whose
    /// input no moment rule reaches (after an operator without one) have no level and are not
    /// corrected. A convolution every path from the data input to the outputs passes through is on
    /// the main path.
    pub fn estimate(model: &Model, analysis: &Analysis) -> Self {
        let channels = analysis.data_shape.get(1).copied().unwrap_or(1);
        let moments = propagate(model, &analysis.shapes, &ChannelMoments::uniform(channels, 0.0, 1.0));
        let mut levels = PerLayer::new();
        let mut main_path = LayerSet::new();
        let data = model.data_input().ok();
        for layer in &analysis.layers {
            // Full spatial convolutions only (`kh·kw > 1`, ungrouped): pointwise and depthwise
            // layers' shrinkage did not compound the same way (see the module's notes).
            let spatial = matches!(
                model.graph.nodes.get(layer.node).map(|n| &n.op),
                Some(Op::Convolution(c)) if c.kernel[0] * c.kernel[1] > 1 && c.num_group.max(1) == 1
            );
            if spatial && data.is_some_and(|d| model.graph.separates(d, layer.node)) {
                main_path.insert(layer.id);
            }
            let input = model.graph.nodes.get(layer.node).and_then(|n| n.inputs.first());
            if let Some(m) = input.and_then(|e| moments.get(e.node)).and_then(Option::as_ref) {
                let level = m.overall_mean();
                if level.is_finite() {
                    levels.insert(layer.id, level);
                }
            }
        }
        BiasCorrection { levels, main_path }
    }

    /// The estimated mean level of `layer`'s input, if one was found.
    pub fn level(&self, layer: LayerId) -> Option<f64> {
        self.levels.get(layer).copied()
    }

    /// The same correction with no gain restored: the bias alone.
    pub fn without_gain(mut self) -> Self {
        self.main_path = LayerSet::new();
        self
    }

    /// How `layer` is corrected: `None` without a level.
    pub fn layer(&self, layer: LayerId) -> Option<LayerCorrection> {
        Some(LayerCorrection {
            level: self.level(layer)?,
            restore_gain: self.main_path.contains(layer),
        })
    }

    /// How many layers have a level.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

/// The share of a convolution's outputs that read each kernel tap inside the (unpadded) input, as
/// the separable `(rows, cols)` weights of [`accnn_decompose::weighted_tap_sums`]; `([1], [1])` for
/// an FC layer.
pub(crate) fn tap_coverage(layer: &Layer, op: &Op) -> (Vec<f64>, Vec<f64>) {
    let Op::Convolution(c) = op else {
        return (vec![1.0], vec![1.0]);
    };
    let (input, output) = (&layer.input_shape, &layer.output_shape);
    if input.len() != 4 || output.len() != 4 {
        return (vec![1.0; c.kernel[0]], vec![1.0; c.kernel[1]]);
    }
    (
        axis_coverage(c, 0, input[2], output[2]),
        axis_coverage(c, 1, input[3], output[3]),
    )
}

/// For each tap along `axis` (0 height, 1 width), the share of the `out` output positions whose
/// window reads it inside the `size` input.
fn axis_coverage(c: &ConvAttrs, axis: usize, size: usize, out: usize) -> Vec<f64> {
    let pad = if axis == 0 { c.pad.top } else { c.pad.left } as i64;
    let (stride, dilate) = (c.stride[axis] as i64, c.dilate[axis] as i64);
    (0..c.kernel[axis] as i64)
        .map(|i| {
            let inside = (0..out as i64)
                .filter(|&y| (0..size as i64).contains(&(y * stride - pad + i * dilate)))
                .count();
            inside as f64 / out.max(1) as f64
        })
        .collect()
}

/// `bias + level * (original − approx)` for each output: `original` and `approx` the per-filter
/// coverage-weighted tap sums of the layer's weight and of its pair
/// ([`accnn_decompose::weighted_tap_sums`]), whose difference is the response to a unit level the
/// truncation lost.
pub(crate) fn corrected_bias(bias: &[f32], original: &[f64], approx: &[f64], level: f64) -> Vec<f32> {
    bias.iter()
        .zip(original.iter().zip(approx))
        .map(|(&b, (o, a))| (b as f64 + level * (o - a)) as f32)
        .collect()
}

/// The factor restoring a pair's gain, `√(Σ s² / Σ ŝ²)` over the per-(filter, channel) tap sums
/// of the original (`original`) and of the pair (`approx`), [`accnn_decompose::channel_tap_sums`],
/// kept within `[1, 1/√kept_energy]`: the pair is never made weaker, nor scaled beyond what restores
/// its whole (Frobenius) energy, the gain white inputs would ask for. Truncation keeps a kernel's
/// smooth part best, so the smooth-input gain stays under that bound in practice (VGG fixture,
/// 3x-4.5x: 1.07-1.40 against 1.12-1.55); the bound only stops a pair that kept almost none of its
/// smooth response from being amplified without limit.
pub(crate) fn restored_gain(original: &[f64], approx: &[f64], kept_energy: f64) -> f64 {
    let energy = |s: &[f64]| s.iter().map(|v| v * v).sum::<f64>();
    let (o, a) = (energy(original), energy(approx));
    let ceiling = if kept_energy > 0.0 && kept_energy <= 1.0 {
        1.0 / kept_energy.sqrt()
    } else {
        1.0
    };
    let gain = if a > 0.0 && o.is_finite() && a.is_finite() {
        (o / a).sqrt()
    } else {
        1.0
    };
    gain.clamp(1.0, ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_counts_the_taps_that_read_padding() {
        // A 3x3 convolution, padding 1, stride 1, on 4 positions: the first tap row is read inside
        // the input by 3 of the 4 output rows.
        let c = ConvAttrs::same([3, 3], 1);
        assert_eq!(axis_coverage(&c, 0, 4, 4), vec![0.75, 1.0, 0.75]);
        // Stride 2 on 5 positions (outputs 0, 2, 4 read rows -1..1, 1..3, 3..5).
        let s = ConvAttrs {
            stride: [2, 2],
            ..ConvAttrs::same([3, 3], 1)
        };
        assert_eq!(axis_coverage(&s, 1, 5, 3), vec![2.0 / 3.0, 1.0, 2.0 / 3.0]);
    }

    #[test]
    fn the_correction_is_the_lost_response_to_the_level() {
        // Two filters of 1 channel x 2 taps; the second tap is read half the time.
        let w = [1.0, 2.0, -1.0, 0.5];
        let a = [0.5, 1.0, -1.0, 0.0];
        let sums = |k: &[f32]| accnn_decompose::weighted_tap_sums(k, 2, &[1.0], &[1.0, 0.5]);
        let b = corrected_bias(&[0.1, -0.2], &sums(&w), &sums(&a), 2.0);
        // Filter 0: 2 * (0.5 * 1 + 1.0 * 0.5) = 2; filter 1: 2 * (0 + 0.5 * 0.5) = 0.5.
        assert!((b[0] - 2.1).abs() < 1e-6 && (b[1] - 0.3).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn the_gain_restores_the_smooth_input_energy() {
        // Sums (3, 4) against (1.5, 2): half the response, a gain of 2.
        assert!((restored_gain(&[3.0, 4.0], &[1.5, 2.0], 0.2) - 2.0).abs() < 1e-12);
        assert_eq!(restored_gain(&[3.0, 4.0], &[0.0, 0.0], 0.2), 1.0);
        // Bounded by the gain that restores the kept (Frobenius) energy, and never below 1.
        assert!((restored_gain(&[3.0, 4.0], &[0.003, 0.004], 0.25) - 2.0).abs() < 1e-12);
        assert_eq!(restored_gain(&[3.0, 4.0], &[6.0, 8.0], 0.5), 1.0);
    }
}
