//! Labelled image sets: MNIST/Fashion-MNIST IDX files, `.npz` arrays, and folders of JPEG/PNG images
//! sorted into one subfolder per class.
//!
//! IDX files and `.npz` archives are read whole ([`Dataset`]); an image folder is listed up front and
//! decoded batch by batch ([`ImageFolder`]), so an ImageNet-sized validation set never sits in memory.
//! Both are an [`ImageSource`], which is what [`crate::eval::predict`] reads.

mod folder;
pub mod synthetic;

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::InferError;

pub use folder::{ImageFolder, ImageOptions, is_image_folder};

/// Labelled images, read batch by batch.
pub trait ImageSource: Sync {
    /// `[C, H, W]` of every image.
    fn image_shape(&self) -> [usize; 3];
    /// One label per image.
    fn labels(&self) -> &[u32];
    /// The preprocessed images of `range`, `(range.len(), C, H, W)` in row-major order.
    fn images(&self, range: Range<usize>) -> Result<Vec<f32>, InferError>;
    /// How many images there are.
    fn count(&self) -> usize {
        self.labels().len()
    }
    /// Every image in memory (for small sets: calibration samples).
    fn to_dataset(&self) -> Result<Dataset, InferError> {
        let [c, h, w] = self.image_shape();
        Ok(Dataset {
            shape: [self.count(), c, h, w],
            images: self.images(0..self.count())?,
            labels: self.labels().to_vec(),
        })
    }
}

/// Preprocessed images `(N, C, H, W)` with integer labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The images and labels of `range`.
    pub fn slice(&self, range: Range<usize>) -> (Vec<f32>, &[u32]) {
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        (
            self.images[range.start * per..range.end * per].to_vec(),
            &self.labels[range],
        )
    }
}

impl ImageSource for Dataset {
    fn image_shape(&self) -> [usize; 3] {
        [self.shape[1], self.shape[2], self.shape[3]]
    }

    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn images(&self, range: Range<usize>) -> Result<Vec<f32>, InferError> {
        Ok(self.slice(range).0)
    }

    fn to_dataset(&self) -> Result<Dataset, InferError> {
        Ok(self.clone())
    }
}

/// How raw 8-bit pixels become network inputs: `((p / 255) - mean) / std`, with `pad` pixels of
/// black border added on every side (28x28 Fashion-MNIST with `pad: 2` gives 32x32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    pub mean: f32,
    pub std: f32,
    pub pad: usize,
}

/// Writes one network input, `(C, crop_h + 2·pad, crop_w + 2·pad)`, into `out`: the `crop` window
/// at `origin` (top, left) of the interleaved 8-bit `pixels` (`width` pixels a row, `C = mean.len()`
/// channels), as `(p / 255 - mean) / std` per channel, inside a black border of `pad` pixels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalise_into(
    out: &mut [f32],
    pixels: &[u8],
    width: usize,
    [top, left]: [usize; 2],
    [crop_h, crop_w]: [usize; 2],
    mean: &[f32],
    std: &[f32],
    pad: usize,
) {
    let c = mean.len();
    let row_len = crop_w + 2 * pad;
    for (ch, plane) in out.chunks_mut((crop_h + 2 * pad) * row_len).enumerate() {
        let (mean, std) = (mean[ch], std[ch]);
        plane.fill((0.0 - mean) / std);
        for y in 0..crop_h {
            let src = (top + y) * width + left;
            let dst = &mut plane[(y + pad) * row_len + pad..(y + pad) * row_len + pad + crop_w];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = (pixels[(src + x) * c + ch] as f32 / 255.0 - mean) / std;
            }
        }
    }
}

pub(crate) fn err(path: &Path, message: impl Into<String>) -> InferError {
    InferError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, InferError> {
    let raw = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| err(path, format!("bad gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, InferError> {
    [stem.to_string(), format!("{stem}.gz")]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| err(dir, format!("no {stem}[.gz] in this directory")))
}

/// One IDX file: its dimensions and its bytes (`u8` data only, magic `0x00000801` or `0x00000803`).
fn read_idx(path: &Path, expected_dims: usize) -> Result<(Vec<usize>, Vec<u8>), InferError> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != expected_dims {
        return Err(err(
            path,
            format!("not an IDX file of {expected_dims}-D unsigned bytes"),
        ));
    }
    let header = 4 + 4 * expected_dims;
    if bytes.len() < header {
        return Err(err(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..expected_dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(err(
            path,
            format!(
                "holds {} data bytes, its dimensions {dims:?} need {n}",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Reads `{split}-images-idx3-ubyte[.gz]` and `{split}-labels-idx1-ubyte[.gz]` from `dir` (`split` is
/// `train` or `t10k`), keeping at most `limit` images.
pub fn load_idx(dir: &Path, split: &str, pre: Preprocess, limit: Option<usize>) -> Result<Dataset, InferError> {
    let images_path = find(dir, &format!("{split}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{split}-labels-idx1-ubyte"))?;
    let (dims, pixels) = read_idx(&images_path, 3)?;
    let (ldims, labels) = read_idx(&labels_path, 1)?;
    if dims[0] != ldims[0] {
        return Err(err(&labels_path, format!("{} labels for {} images", ldims[0], dims[0])));
    }
    let n = limit.map_or(dims[0], |l| l.min(dims[0]));
    let (h, w) = (dims[1], dims[2]);
    let (hp, wp) = (h + 2 * pre.pad, w + 2 * pre.pad);
    let mut images = vec![0f32; n * hp * wp];
    for (i, out) in images.chunks_mut(hp * wp).enumerate() {
        let pixels = &pixels[i * h * w..(i + 1) * h * w];
        normalise_into(out, pixels, w, [0, 0], [h, w], &[pre.mean], &[pre.std], pre.pad);
    }
    Ok(Dataset {
        shape: [n, 1, hp, wp],
        images,
        labels: labels[..n].iter().map(|&l| l as u32).collect(),
    })
}

/// Reads a `.npz` (by its extension) or a directory of IDX files (`split` and `pre` apply to IDX only).
pub fn load_images(path: &Path, split: &str, pre: Preprocess, limit: Option<usize>) -> Result<Dataset, InferError> {
    if path.extension().is_some_and(|e| e == "npz") {
        return load_npz(path, limit);
    }
    if !path.is_dir() {
        return Err(InferError::Data {
            path: path.to_path_buf(),
            message: "expected a directory of IDX files or a .npz file".into(),
        });
    }
    load_idx(path, split, pre, limit)
}

/// Reads a `.npz` holding `x` (float32 `N, C, H, W`, already preprocessed) and `y` (integer labels).
/// Both `numpy.savez` and `numpy.savez_compressed` archives are read.
pub fn load_npz(path: &Path, limit: Option<usize>) -> Result<Dataset, InferError> {
    let arrays = candle_core::Tensor::read_npz(path).map_err(|e| err(path, e.to_string()))?;
    let get = |name: &str| {
        arrays
            .iter()
            .find(|(n, _)| n == name || n == &format!("{name}.npy"))
            .map(|(_, t)| t)
            .ok_or_else(|| {
                err(
                    path,
                    format!("no array '{name}' (expected x: float32 N,C,H,W and y: integer labels)"),
                )
            })
    };
    let (x, y) = (get("x")?, get("y")?);
    let dims: [usize; 4] = x
        .dims()
        .try_into()
        .map_err(|_| err(path, format!("x has shape {:?}, expected N,C,H,W", x.dims())))?;
    if y.dims() != [dims[0]] {
        return Err(err(path, format!("y has shape {:?} for {} images", y.dims(), dims[0])));
    }
    let n = limit.map_or(dims[0], |l| l.min(dims[0]));
    let x = x
        .narrow(0, 0, n)
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>());
    let y = y
        .narrow(0, 0, n)
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>());
    let (images, labels) = (
        x.map_err(|e| err(path, e.to_string()))?,
        y.map_err(|e| err(path, e.to_string()))?,
    );
    if labels.iter().any(|&l| l < 0.0 || l.fract() != 0.0) {
        return Err(err(path, "y must hold non-negative integer labels"));
    }
    Ok(Dataset {
        shape: [n, dims[1], dims[2], dims[3]],
        images,
        labels: labels.into_iter().map(|l| l as u32).collect(),
    })
}

/// Opens labelled images for a model whose input is `data_shape` (`[N, C, H, W]`): an image folder
/// (see [`is_image_folder`]), a `.npz`, or a directory of IDX files (`split`: `t10k` or `train`),
/// keeping at most `limit` images. Images of another size than the model's are an error.
pub fn open_images(
    path: &Path,
    split: &str,
    options: &ImageOptions,
    data_shape: &[usize],
    limit: Option<usize>,
) -> Result<Box<dyn ImageSource>, InferError> {
    let input = image_input(data_shape)?;
    if is_image_folder(path) {
        return Ok(Box::new(ImageFolder::open(path, options.clone(), input, limit)?));
    }
    if options.resize.is_some() || options.crop.is_some() {
        return Err(err(path, "--resize and --crop apply to image folders only"));
    }
    let (&[mean], &[std]) = (options.mean.as_slice(), options.std.as_slice()) else {
        return Err(err(path, "IDX and .npz data take one --mean and one --std value"));
    };
    if !(std.is_finite() && std > 0.0) {
        return Err(err(path, "every --std value must be positive"));
    }
    let pre = Preprocess {
        mean,
        std,
        pad: options.pad,
    };
    let data = load_images(path, split, pre, limit)?;
    if data.image_shape() != input {
        return Err(err(
            path,
            format!(
                "images are {:?} but the model takes {input:?} (check --pad, or --data-shape)",
                data.image_shape()
            ),
        ));
    }
    Ok(Box::new(data))
}

/// `[C, H, W]` of a model's `[N, C, H, W]` input shape: what image data feeds.
pub fn image_input(data_shape: &[usize]) -> Result<[usize; 3], InferError> {
    match *data_shape {
        [_, c, h, w] => Ok([c, h, w]),
        _ => Err(InferError::Plan(format!(
            "the model takes {data_shape:?}; image data feeds N,C,H,W inputs"
        ))),
    }
}

/// Reads a crop size written `SIZE` or `HxW` (positive integers), as `--crop` takes it.
pub fn parse_crop(text: &str) -> Result<[usize; 2], String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("'{text}' is not SIZE or HxW with positive integers"))
    };
    match text.split_once(['x', 'X']) {
        Some((h, w)) => Ok([parse(h)?, parse(w)?]),
        None => {
            let s = parse(text)?;
            Ok([s, s])
        }
    }
}
