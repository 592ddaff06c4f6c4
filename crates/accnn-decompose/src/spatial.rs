//! Spatial (vertical x horizontal) decomposition of convolution kernels.

use crate::DecomposeError;
use crate::dense::DenseSvd;
use crate::matrix::{Precision, ThinSvd};

/// With [`Precision::Auto`], groups whose reshaped kernel has more elements than this take the Gram
/// route in f64 (VGG-16's conv4_2 to conv5_3, 1536 x 1536: faster than an f64 SVD, as exact: f32
/// would do for trained weights, but a network whose outputs cancel (constant-filled test models)
/// turns its 1e-7 into output errors).
const GRAM_MIN_ELEMENTS: usize = 1 << 20;

/// Shape of a convolution kernel `(filters, channels per group, height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelShape {
    pub filters: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl KernelShape {
    pub fn len(&self) -> usize {
        self.filters * self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows and columns of each group's reshaped kernel: `channels * height` by
    /// `filters / groups * width`.
    pub(crate) fn reshaped(&self, groups: usize) -> (usize, usize) {
        (self.channels * self.height, self.filters / groups * self.width)
    }

    /// Where row `(c, i)`, column `(n, j)` of group `g`'s reshaped kernel lies in the row-major
    /// `(filters, channels, height, width)` weight.
    pub(crate) fn reshaped_index(&self, groups: usize, g: usize, row: usize, col: usize) -> usize {
        let (c, i) = (row / self.height, row % self.height);
        let (n, j) = (g * (self.filters / groups) + col / self.width, col % self.width);
        ((n * self.channels + c) * self.height + i) * self.width + j
    }

    /// A finite kernel of this shape whose filters split into `groups`.
    pub(crate) fn check(&self, weight: &[f32], groups: usize) -> Result<(), DecomposeError> {
        if weight.len() != self.len() {
            return Err(DecomposeError::ShapeMismatch {
                expected: self.len(),
                got: weight.len(),
            });
        }
        if groups == 0 || !self.filters.is_multiple_of(groups) || self.is_empty() {
            return Err(DecomposeError::Invalid(format!(
                "{} filters do not split into {groups} groups",
                self.filters
            )));
        }
        if weight.iter().any(|v| !v.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        Ok(())
    }
}

/// The two kernels replacing one convolution, both row-major and with `groups` groups.
///
/// `vertical` has shape `(rank, channels, height, 1)` and `horizontal` `(filters, rank / groups, 1,
/// width)`, where `rank` counts the intermediate channels of all groups together.
#[derive(Clone, Debug, PartialEq)]
pub struct SpatialFactors {
    pub shape: KernelShape,
    pub groups: usize,
    pub rank: usize,
    pub vertical: Vec<f32>,
    pub horizontal: Vec<f32>,
}

impl SpatialFactors {
    pub fn vertical_shape(&self) -> [usize; 4] {
        [self.rank, self.shape.channels, self.shape.height, 1]
    }

    pub fn horizontal_shape(&self) -> [usize; 4] {
        [self.shape.filters, self.rank / self.groups, 1, self.shape.width]
    }

    /// Per filter, [`weighted_tap_sums`] of the kernel the pair computes, from the factors alone
    /// (`O(rank · (channels · height + filters · width))`, where composing the kernel costs
    /// `rank` times its size).
    pub fn weighted_tap_sums(&self, rows: &[f64], cols: &[f64]) -> Vec<f64> {
        self.channel_tap_sums(rows, cols)
            .chunks(self.shape.channels.max(1))
            .map(|c| c.iter().sum())
            .collect()
    }

    /// Per filter and channel, [`channel_tap_sums`] of the kernel the pair computes, from the
    /// factors alone (`O(rank · channels · (height + filters))`).
    pub fn channel_tap_sums(&self, rows: &[f64], cols: &[f64]) -> Vec<f64> {
        let KernelShape {
            filters,
            channels,
            height,
            width,
        } = self.shape;
        let rank_g = self.rank / self.groups;
        let filters_g = filters / self.groups;
        // Each intermediate channel's vertical filter, per input channel, rows weighted.
        let vertical: Vec<f64> = self
            .vertical
            .chunks(height)
            .map(|k| k.iter().zip(rows).map(|(&v, r)| v as f64 * r).sum())
            .collect();
        let mut out = vec![0f64; filters * channels];
        for n in 0..filters {
            let g = n / filters_g;
            let sums = &mut out[n * channels..(n + 1) * channels];
            for kl in 0..rank_g {
                let h = &self.horizontal[(n * rank_g + kl) * width..(n * rank_g + kl + 1) * width];
                let across: f64 = h.iter().zip(cols).map(|(&v, &c)| v as f64 * c).sum();
                let k = g * rank_g + kl;
                for (s, v) in sums.iter_mut().zip(&vertical[k * channels..(k + 1) * channels]) {
                    *s += v * across;
                }
            }
        }
        out
    }

    /// The `(filters, channels, height, width)` kernel the pair computes:
    /// `W[n,c,i,j] = Σ_k vertical[k,c,i] · horizontal[n,k,j]` within each group.
    pub fn compose(&self) -> Vec<f32> {
        let KernelShape {
            filters,
            channels,
            height,
            width,
        } = self.shape;
        let rank_g = self.rank / self.groups;
        let filters_g = filters / self.groups;
        let mut out = vec![0f32; self.shape.len()];
        for n in 0..filters {
            let g = n / filters_g;
            for c in 0..channels {
                for i in 0..height {
                    for j in 0..width {
                        let mut acc = 0f64;
                        for kl in 0..rank_g {
                            let k = g * rank_g + kl;
                            acc += self.vertical[(k * channels + c) * height + i] as f64
                                * self.horizontal[(n * rank_g + kl) * width + j] as f64;
                        }
                        out[((n * channels + c) * height + i) * width + j] = acc as f32;
                    }
                }
            }
        }
        out
    }
}

/// Per filter, the sum of a row-major `(filters, channels, height, width)` kernel over its channels
/// and taps, tap `(i, j)` weighted by `rows[i] * cols[j]` (`height = rows.len()`,
/// `width = cols.len()`; a dense `(outputs, inputs)` weight is `rows = cols = [1]`): the response of
/// each filter to an input that is one constant, each tap seen by the given share of outputs.
///
/// ```
/// // One filter, one channel, 1x2 taps; the second tap counted half.
/// let s = accnn_decompose::weighted_tap_sums(&[1.0, 2.0], 1, &[1.0], &[1.0, 0.5]);
/// assert_eq!(s, vec![2.0]);
/// ```
pub fn weighted_tap_sums(kernel: &[f32], filters: usize, rows: &[f64], cols: &[f64]) -> Vec<f64> {
    let per_filter = kernel.len() / filters.max(1);
    let channels = per_filter / (rows.len() * cols.len()).max(1);
    channel_tap_sums(kernel, filters, rows, cols)
        .chunks(channels.max(1))
        .map(|c| c.iter().sum())
        .collect()
}

/// Per filter and input channel (`(filters, channels)`, row-major), the sum of a row-major
/// `(filters, channels, height, width)` kernel over its taps, weighted as in
/// [`weighted_tap_sums`]: each filter's response to a channel that is one constant. Its squared
/// sum is the kernel's response energy to smooth inputs (each channel one value within a window).
///
/// ```
/// // One filter, two channels of 1x2 taps; the second tap counted half.
/// let s = accnn_decompose::channel_tap_sums(&[1.0, 2.0, -1.0, 4.0], 1, &[1.0], &[1.0, 0.5]);
/// assert_eq!(s, vec![2.0, 1.0]);
/// ```
pub fn channel_tap_sums(kernel: &[f32], filters: usize, rows: &[f64], cols: &[f64]) -> Vec<f64> {
    let taps = (rows.len() * cols.len()).max(1);
    let weights: Vec<f64> = (0..taps).map(|t| rows[t / cols.len()] * cols[t % cols.len()]).collect();
    let per_filter = kernel.len() / filters.max(1);
    kernel[..filters * per_filter]
        .chunks(taps)
        .map(|window| window.iter().zip(&weights).map(|(&w, r)| w as f64 * r).sum())
        .collect()
}

/// The SVDs of a convolution kernel's reshaped groups, ready to give factors at any rank.
pub struct ConvSvd {
    shape: KernelShape,
    groups: Vec<GroupSvd>,
}

/// Entry `(index, k)` of column `k` of `U S^½` or `V S^½`.
type FactorColumn<'a> = Box<dyn Fn(usize, usize) -> f32 + 'a>;

/// One group's reshaped kernel `A` (`(channels * height) x (filters / groups * width)`): its thin
/// SVD, or the Gram route's basis with `A` itself (row-major), which its factors project.
enum GroupSvd {
    Svd(ThinSvd),
    Gram { svd: DenseSvd, reshaped: Vec<f32> },
}

impl GroupSvd {
    fn singular_values(&self) -> &[f64] {
        match self {
            GroupSvd::Svd(s) => &s.singular_values,
            GroupSvd::Gram { svd, .. } => svd.singular_values(),
        }
    }
}

impl ConvSvd {
    /// Factorises a row-major `(filters, channels, height, width)` kernel with `groups` groups
    /// (`channels` is the per-group input channel count, as in the weight's shape).
    pub fn new(
        weight: &[f32],
        shape: KernelShape,
        groups: usize,
        precision: Precision,
    ) -> Result<Self, DecomposeError> {
        shape.check(weight, groups)?;
        let (rows, cols) = shape.reshaped(groups);
        let gram = (precision == Precision::Auto && rows * cols > GRAM_MIN_ELEMENTS).then_some(Precision::F64);
        Self::factorise(weight, shape, groups, precision, gram)
    }

    /// Each group's SVD, by the Gram route in the precision `gram` gives, for a checked kernel.
    fn factorise(
        weight: &[f32],
        shape: KernelShape,
        groups: usize,
        precision: Precision,
        gram: Option<Precision>,
    ) -> Result<Self, DecomposeError> {
        let (rows, cols) = shape.reshaped(groups);
        let svds = (0..groups)
            .map(|g| {
                let at = |row: usize, col: usize| weight[shape.reshaped_index(groups, g, row, col)];
                if let Some(gram_precision) = gram {
                    let reshaped: Vec<f32> = (0..rows * cols).map(|k| at(k / cols, k % cols)).collect();
                    let svd = DenseSvd::gram(&reshaped, rows, cols, gram_precision)?;
                    Ok(GroupSvd::Gram { svd, reshaped })
                } else {
                    ThinSvd::compute(rows, cols, at, precision).map(GroupSvd::Svd)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConvSvd { shape, groups: svds })
    }

    /// [`ConvSvd::new`] by the Gram route in `precision` (f64, or f32) for every group, whatever its
    /// size ([`Precision::Auto`] takes it in f64 for groups over 1 M elements; see [`DenseSvd::gram`]).
    pub fn gram(
        weight: &[f32],
        shape: KernelShape,
        groups: usize,
        precision: Precision,
    ) -> Result<Self, DecomposeError> {
        shape.check(weight, groups)?;
        Self::factorise(weight, shape, groups, precision, Some(precision))
    }

    pub fn shape(&self) -> KernelShape {
        self.shape
    }

    /// The precision actually used ([`Precision::F32`] or [`Precision::F64`]).
    pub fn precision(&self) -> Precision {
        match &self.groups[0] {
            GroupSvd::Svd(s) => s.precision(),
            GroupSvd::Gram { svd, .. } => svd.precision(),
        }
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Largest useful rank per group: `min(channels * height, filters / groups * width)`.
    pub fn max_rank(&self) -> usize {
        self.groups[0].singular_values().len()
    }

    /// Singular values of each group's reshaped kernel, non-increasing.
    pub fn singular_values(&self) -> Vec<&[f64]> {
        self.groups.iter().map(GroupSvd::singular_values).collect()
    }

    /// The factors at `rank_per_group` (the intermediate layer then has `groups * rank_per_group`
    /// channels).
    pub fn factors(&self, rank_per_group: usize) -> Result<SpatialFactors, DecomposeError> {
        let max = self.max_rank();
        if rank_per_group == 0 || rank_per_group > max {
            return Err(DecomposeError::RankOutOfRange {
                rank: rank_per_group,
                max,
            });
        }
        let KernelShape { filters, width, .. } = self.shape;
        let groups = self.groups.len();
        let filters_g = filters / groups;
        let rank = rank_per_group * groups;
        let (rows, cols) = self.shape.reshaped(groups);
        let mut vertical = vec![0f32; rank * rows];
        let mut horizontal = vec![0f32; filters * rank_per_group * width];
        for (g, group) in self.groups.iter().enumerate() {
            // Column kl of U S^½ (rows) and of V S^½ (cols), whichever way the group was factorised.
            let (left, right): (FactorColumn<'_>, FactorColumn<'_>) = match group {
                GroupSvd::Svd(svd) => (
                    Box::new(move |row, kl| (svd.u(row, kl) * svd.singular_values[kl].sqrt()) as f32),
                    Box::new(move |col, kl| (svd.v(col, kl) * svd.singular_values[kl].sqrt()) as f32),
                ),
                GroupSvd::Gram { svd, reshaped } => {
                    // reduce = S^½ Vᵀ (rank x cols), reconstruct = U S^½ (rows x rank).
                    let f = svd.factors(reshaped, rank_per_group)?;
                    let (reduce, reconstruct) = (f.reduce, f.reconstruct);
                    (
                        Box::new(move |row, kl| reconstruct[row * rank_per_group + kl]),
                        Box::new(move |col, kl| reduce[kl * cols + col]),
                    )
                }
            };
            for kl in 0..rank_per_group {
                let k = g * rank_per_group + kl;
                for row in 0..rows {
                    vertical[k * rows + row] = left(row, kl);
                }
                for col in 0..cols {
                    let (n, j) = (g * filters_g + col / width, col % width);
                    horizontal[(n * rank_per_group + kl) * width + j] = right(col, kl);
                }
            }
        }
        Ok(SpatialFactors {
            shape: self.shape,
            groups,
            rank,
            vertical,
            horizontal,
        })
    }
}
