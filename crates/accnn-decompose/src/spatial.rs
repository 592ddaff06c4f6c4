//! Spatial (vertical x horizontal) decomposition of convolution kernels.

use crate::DecomposeError;
use crate::matrix::{Precision, ThinSvd};

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

/// The SVDs of a convolution kernel's reshaped groups, ready to give factors at any rank.
pub struct ConvSvd {
    shape: KernelShape,
    groups: Vec<ThinSvd>,
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
        if weight.len() != shape.len() {
            return Err(DecomposeError::ShapeMismatch {
                expected: shape.len(),
                got: weight.len(),
            });
        }
        if groups == 0 || !shape.filters.is_multiple_of(groups) || shape.is_empty() {
            return Err(DecomposeError::Invalid(format!(
                "{} filters do not split into {groups} groups",
                shape.filters
            )));
        }
        if weight.iter().any(|v| !v.is_finite()) {
            return Err(DecomposeError::NonFinite);
        }
        let KernelShape {
            channels,
            height,
            width,
            ..
        } = shape;
        let filters_g = shape.filters / groups;
        let svds = (0..groups)
            .map(|g| {
                // Row (c, i), column (n, j) of group g.
                let at = |row: usize, col: usize| {
                    let (c, i) = (row / height, row % height);
                    let (n, j) = (g * filters_g + col / width, col % width);
                    weight[((n * channels + c) * height + i) * width + j]
                };
                ThinSvd::compute(channels * height, filters_g * width, at, precision)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConvSvd { shape, groups: svds })
    }

    pub fn shape(&self) -> KernelShape {
        self.shape
    }

    /// The precision actually used ([`Precision::F32`] or [`Precision::F64`]).
    pub fn precision(&self) -> Precision {
        self.groups[0].precision()
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Largest useful rank per group: `min(channels * height, filters / groups * width)`.
    pub fn max_rank(&self) -> usize {
        self.groups[0].rank()
    }

    /// Singular values of each group's reshaped kernel, non-increasing.
    pub fn singular_values(&self) -> Vec<&[f64]> {
        self.groups.iter().map(|s| s.singular_values.as_slice()).collect()
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
        let KernelShape {
            filters,
            channels,
            height,
            width,
        } = self.shape;
        let groups = self.groups.len();
        let filters_g = filters / groups;
        let rank = rank_per_group * groups;
        let mut vertical = vec![0f32; rank * channels * height];
        let mut horizontal = vec![0f32; filters * rank_per_group * width];
        for (g, svd) in self.groups.iter().enumerate() {
            for kl in 0..rank_per_group {
                let root = svd.singular_values[kl].sqrt();
                let k = g * rank_per_group + kl;
                for row in 0..channels * height {
                    vertical[k * channels * height + row] = (svd.u(row, kl) * root) as f32;
                }
                for col in 0..filters_g * width {
                    let (n, j) = (g * filters_g + col / width, col % width);
                    horizontal[(n * rank_per_group + kl) * width + j] = (svd.v(col, kl) * root) as f32;
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
