//! The ONNX operators that enlarge feature maps: `ConvTranspose`, `Resize` and `Upsample`. Sizes
//! that depend on the input (`output_shape`, `SAME_*` padding, `axes`) are resolved here with the
//! input shape known at import; a node whose input shape is unknown, or that uses a mode accnn does
//! not run (crop-and-resize, aspect-ratio-keeping sizes), stays opaque.

use super::convert::{input, padding};
use super::{Converted, Importer};
use crate::error::GraphError;
use crate::ir::{
    ConvTransposeAttrs, CoordinateTransform, NearestRounding, Op, Padding2d, ResizeAttrs, ResizeMode, ResizeTarget,
};
use crate::onnx::attrs::NodeAttrs;
use crate::onnx::proto::NodeProto;

type Conversion = Result<Option<Converted>, GraphError>;

impl Importer {
    pub(super) fn conv_transpose(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let (Some(x), Some(w)) = (input(n, 0), input(n, 1)) else {
            return Ok(None);
        };
        let Some(s) = self
            .float_const(&w)
            .map(|t| t.shape().to_vec())
            .filter(|s| s.len() == 4)
        else {
            return Ok(None);
        };
        let bias = input(n, 2);
        if bias.as_ref().is_some_and(|b| self.float_const(b).is_none()) {
            return Ok(None);
        }
        let group = usize::try_from(a.int("group").unwrap_or(1))
            .ok()
            .filter(|&g| g > 0 && s[0] % g == 0)
            .ok_or_else(|| a.err(format!("group must be positive and divide the {} input channels", s[0])))?;
        let mut attrs = ConvTransposeAttrs {
            kernel: a.pair("kernel_shape", [s[2], s[3]])?,
            stride: a.pair("strides", [1, 1])?,
            dilate: a.pair("dilations", [1, 1])?,
            pad: padding(a)?,
            output_padding: a.offsets("output_padding")?,
            num_filter: s[1] * group,
            num_group: group,
            no_bias: bias.is_none(),
        };
        if [attrs.kernel, attrs.stride, attrs.dilate]
            .iter()
            .flatten()
            .any(|&v| v == 0)
        {
            return Err(a.err("kernel, strides and dilations must be positive"));
        }
        let Some(xe) = self.value(&x) else { return Ok(None) };
        // An explicit output size, or SAME padding, fixes the padding for the input at hand.
        let auto = a.string("auto_pad");
        let same = matches!(auto.as_deref(), Some("SAME_UPPER" | "SAME_LOWER"));
        let target = a.ints("output_shape").map(|t| {
            let hw = &t[t.len().saturating_sub(2)..];
            hw.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<Vec<_>>>()
        });
        if target.is_some() || same {
            let Some(&[_, _, h, wd]) = self.shapes.known(xe) else {
                return Ok(None);
            };
            let sizes = match target {
                Some(Some(t)) if t.len() == 2 => [t[0], t[1]],
                Some(_) => return Err(a.err("output_shape must hold the output height and width")),
                None => [h * attrs.stride[0], wd * attrs.stride[1]],
            };
            let upper = auto.as_deref() == Some("SAME_UPPER");
            let mut pads = [(0, 0); 2];
            for (k, len) in [h, wd].into_iter().enumerate() {
                match attrs.padding_for(k, len, sizes[k], !upper) {
                    Some(p) => pads[k] = p,
                    // A size beyond the full output: the extra rows hold the bias, like output_padding.
                    None => match attrs.full_length(k, len) {
                        Some(full) => attrs.output_padding[k] += sizes[k] - full,
                        None => return Ok(None),
                    },
                }
            }
            attrs.pad = Padding2d {
                top: pads[0].0,
                bottom: pads[0].1,
                left: pads[1].0,
                right: pads[1].1,
            };
        }
        let mut inputs = vec![xe, self.value(&w).expect("checked float constant")];
        if let Some(b) = bias {
            inputs.push(self.value(&b).expect("checked float constant"));
        }
        Ok(Some(Converted::new(Op::ConvTranspose(attrs), inputs)))
    }

    /// `Resize` (opset 10: scales only, the `Upsample` rules; 11+: roi, scales, sizes).
    pub(super) fn resize(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let Some(x) = input(n, 0).and_then(|x| self.value(&x)) else {
            return Ok(None);
        };
        let Some(rank) = self.shapes.known(x).map(<[usize]>::len) else {
            return Ok(None);
        };
        let (scales, sizes) = if self.opset < 11 {
            (input(n, 1), None)
        } else {
            (input(n, 2), input(n, 3))
        };
        let scales = match scales {
            Some(name) => match self.float_const(&name) {
                Some(t) if !t.is_empty() => Some(t.data().to_vec()),
                Some(_) => None,
                None => return Ok(None),
            },
            None => None,
        };
        let sizes = match sizes {
            Some(name) => match self.ints_const(&name) {
                Some(v) if !v.is_empty() => Some(v.clone()),
                Some(_) => None,
                None => return Ok(None),
            },
            None => None,
        };
        // Axes named by `axes` (opset 18) take the given factors; the others keep their length.
        let axes: Vec<usize> = match a.ints("axes") {
            Some(v) => match v
                .iter()
                .map(|&k| crate::ops::resolve_axis(k, rank))
                .collect::<Option<Vec<_>>>()
            {
                Some(axes) => axes,
                None => return Err(a.err(format!("axes {v:?} out of range for rank {rank}"))),
            },
            None => (0..rank).collect(),
        };
        let Some(input_shape) = self.shapes.known(x).map(<[usize]>::to_vec) else {
            return Ok(None);
        };
        let target = match (scales, sizes) {
            (Some(s), None) if s.len() == axes.len() => {
                let mut all = vec![1.0; rank];
                axes.iter().zip(s).for_each(|(&k, v)| all[k] = v);
                ResizeTarget::Scales(all)
            }
            (None, Some(s)) if s.len() == axes.len() => {
                if a.string("keep_aspect_ratio_policy").is_some_and(|p| p != "stretch") {
                    return Ok(None);
                }
                let mut all = input_shape.clone();
                for (&k, v) in axes.iter().zip(s) {
                    all[k] = usize::try_from(v).map_err(|_| a.err(format!("negative size {v}")))?;
                }
                ResizeTarget::Sizes(all)
            }
            _ => return Err(a.err("Resize needs exactly one of scales and sizes, one value per resized axis")),
        };
        let legacy = self.opset < 11;
        let mode = match a.string("mode").as_deref().unwrap_or("nearest") {
            "nearest" if legacy => legacy_nearest(&target),
            "nearest" => match a.string("nearest_mode").as_deref().unwrap_or("round_prefer_floor") {
                "round_prefer_floor" => Some(ResizeMode::Nearest(NearestRounding::RoundPreferFloor)),
                "round_prefer_ceil" => Some(ResizeMode::Nearest(NearestRounding::RoundPreferCeil)),
                "floor" => Some(ResizeMode::Nearest(NearestRounding::Floor)),
                "ceil" => Some(ResizeMode::Nearest(NearestRounding::Ceil)),
                other => return Err(a.err(format!("unknown nearest_mode '{other}'"))),
            },
            "linear" => Some(ResizeMode::Linear),
            "cubic" => Some(ResizeMode::Cubic {
                a: a.float("cubic_coeff_a").unwrap_or(-0.75),
                exclude_outside: a.int("exclude_outside").unwrap_or(0) != 0,
            }),
            other => return Err(a.err(format!("unknown mode '{other}'"))),
        };
        let coordinates = if legacy {
            Some(CoordinateTransform::Asymmetric)
        } else {
            match a
                .string("coordinate_transformation_mode")
                .as_deref()
                .unwrap_or("half_pixel")
            {
                "half_pixel" => Some(CoordinateTransform::HalfPixel),
                "half_pixel_symmetric" => Some(CoordinateTransform::HalfPixelSymmetric),
                "pytorch_half_pixel" => Some(CoordinateTransform::PytorchHalfPixel),
                "align_corners" => Some(CoordinateTransform::AlignCorners),
                "asymmetric" => Some(CoordinateTransform::Asymmetric),
                "tf_crop_and_resize" => None,
                other => return Err(a.err(format!("unknown coordinate_transformation_mode '{other}'"))),
            }
        };
        let (Some(mode), Some(coordinates)) = (mode, coordinates) else {
            return Ok(None);
        };
        let attrs = ResizeAttrs {
            mode,
            coordinates,
            target,
            antialias: a.int("antialias").unwrap_or(0) != 0,
        };
        if attrs.output_shape(&input_shape).is_none() {
            return Err(a.err(format!("cannot resize shape {input_shape:?} to {:?}", attrs.target)));
        }
        Ok(Some(Converted::new(Op::Resize(attrs), vec![x])))
    }

    /// `Upsample` (opsets 7 to 9, deprecated since 10): scales as an attribute, then an input.
    pub(super) fn upsample(&mut self, n: &NodeProto, a: &NodeAttrs) -> Conversion {
        let Some(x) = input(n, 0).and_then(|x| self.value(&x)) else {
            return Ok(None);
        };
        let scales = if self.opset < 9 {
            a.floats("scales")
        } else {
            input(n, 1)
                .and_then(|s| self.float_const(&s))
                .map(|t| t.data().to_vec())
        };
        let Some(scales) = scales else { return Ok(None) };
        if scales.iter().any(|s| s.is_nan() || *s < 1.0) {
            return Err(a.err(format!("Upsample scales {scales:?} must be at least 1")));
        }
        let target = ResizeTarget::Scales(scales);
        let mode = match a.string("mode").as_deref().unwrap_or("nearest") {
            "nearest" => legacy_nearest(&target),
            "linear" | "bilinear" => Some(ResizeMode::Linear),
            other => return Err(a.err(format!("unknown Upsample mode '{other}'"))),
        };
        let Some(mode) = mode else { return Ok(None) };
        let attrs = ResizeAttrs {
            mode,
            coordinates: CoordinateTransform::Asymmetric,
            target,
            antialias: false,
        };
        Ok(Some(Converted::new(Op::Resize(attrs), vec![x])))
    }
}

/// Nearest resampling as `Upsample` and opset-10 `Resize` define it: the floor of `x / scale`
/// when enlarging (their defining case); other factors are kept opaque.
fn legacy_nearest(target: &ResizeTarget) -> Option<ResizeMode> {
    match target {
        ResizeTarget::Scales(s) if s.iter().all(|&v| v >= 1.0) => Some(ResizeMode::Nearest(NearestRounding::Floor)),
        _ => None,
    }
}
