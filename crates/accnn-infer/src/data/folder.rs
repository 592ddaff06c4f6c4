//! Folders of JPEG/PNG images, one subfolder per class, as ImageNet validation sets are laid out.

use std::ops::Range;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::{ImageSource, err, normalise_into};
use crate::InferError;

/// How images become network inputs. For image folders: resize the shorter side, centre-crop, scale to
/// `[0, 1]`, normalise per channel, add a black border. IDX files take one mean, one std and the
/// border; `.npz` arrays are used as they are.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageOptions {
    /// Resize so that the shorter side has this many pixels (aspect ratio kept, bilinear) before
    /// cropping; `None` keeps the decoded size.
    pub resize: Option<usize>,
    /// Centre crop `[height, width]`; `None` crops to the model's input size less the border.
    pub crop: Option<[usize; 2]>,
    /// Per-channel mean of `pixel / 255`, one value for every channel or one per channel.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, like `mean`; every value positive.
    pub std: Vec<f32>,
    /// Pixels of black border added on every side after cropping.
    pub pad: usize,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            resize: None,
            crop: None,
            mean: vec![0.0],
            std: vec![1.0],
            pad: 0,
        }
    }
}

/// A labelled image folder: `ROOT/CLASS/…/IMAGE.{jpg,jpeg,png}`. Classes are the subfolders of `ROOT`
/// in byte order of their names, numbered from 0 (torchvision's `ImageFolder` convention); images are
/// found recursively and taken in path order. Images are decoded when a batch is asked for.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    shape: [usize; 3],
    crop: [usize; 2],
    mean: Vec<f32>,
    std: Vec<f32>,
    options: ImageOptions,
}

/// Whether `path` looks like an image folder: a directory with a subfolder and no IDX files.
pub fn is_image_folder(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    let mut has_subfolder = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("-idx1-ubyte") || name.contains("-idx3-ubyte") {
            return false;
        }
        has_subfolder |= !name.starts_with('.') && entry.path().is_dir();
    }
    has_subfolder
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "jpg" | "jpeg" | "png"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, InferError> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|it| it.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(dir, e.to_string()))?;
    entries.retain(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
    entries.sort();
    Ok(entries)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InferError> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// `values` widened to one per channel.
fn per_channel(root: &Path, what: &str, values: &[f32], channels: usize) -> Result<Vec<f32>, InferError> {
    match values.len() {
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values.to_vec()),
        n => Err(err(
            root,
            format!("{n} {what} values for a model with {channels} input channels (give 1 or {channels})"),
        )),
    }
}

impl ImageFolder {
    /// Lists the images under `root` for a model taking `[C, H, W]` inputs (`C` is 1 for greyscale or
    /// 3 for RGB). With `limit`, keeps that many images evenly spread over the sorted list, so that every
    /// class stays represented.
    pub fn open(
        root: &Path,
        options: ImageOptions,
        input: [usize; 3],
        limit: Option<usize>,
    ) -> Result<Self, InferError> {
        let [c, h, w] = input;
        if c != 1 && c != 3 {
            return Err(err(
                root,
                format!("image folders feed models with 1 (greyscale) or 3 (RGB) input channels, not {c}"),
            ));
        }
        let mean = per_channel(root, "--mean", &options.mean, c)?;
        let std = per_channel(root, "--std", &options.std, c)?;
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(err(root, "every --std value must be positive"));
        }
        let crop = match options.crop {
            Some(crop) => crop,
            None => [h.saturating_sub(2 * options.pad), w.saturating_sub(2 * options.pad)],
        };
        if crop[0] + 2 * options.pad != h || crop[1] + 2 * options.pad != w {
            return Err(err(
                root,
                format!(
                    "a {}x{} crop with a border of {} gives {}x{} images, the model takes {h}x{w}",
                    crop[0],
                    crop[1],
                    options.pad,
                    crop[0] + 2 * options.pad,
                    crop[1] + 2 * options.pad
                ),
            ));
        }
        if options.resize == Some(0) {
            return Err(err(root, "--resize must be positive"));
        }
        let mut classes = Vec::new();
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for class_dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let label = classes.len() as u32;
            let before = files.len();
            collect_images(&class_dir, &mut files)?;
            labels.resize(files.len(), label);
            if files.len() > before {
                classes.push(
                    class_dir
                        .file_name()
                        .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                );
            }
        }
        if files.is_empty() {
            return Err(err(
                root,
                "no .jpg, .jpeg or .png images in class subfolders (expected ROOT/CLASS/IMAGE)",
            ));
        }
        if let Some(limit) = limit.filter(|&l| l < files.len()) {
            let total = files.len();
            let keep: Vec<usize> = (0..limit).map(|i| i * total / limit).collect();
            files = keep.iter().map(|&i| files[i].clone()).collect();
            labels = keep.iter().map(|&i| labels[i]).collect();
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            files,
            labels,
            shape: input,
            crop,
            mean,
            std,
            options,
        })
    }

    /// Class names, in label order (classes without images are skipped).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The image files, in label order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The folder this was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One image, decoded and preprocessed, `C * H * W` values.
    pub fn image(&self, index: usize) -> Result<Vec<f32>, InferError> {
        let [c, h, w] = self.shape;
        let mut out = vec![0f32; c * h * w];
        self.image_into(index, &mut out)?;
        Ok(out)
    }

    /// [`ImageFolder::image`] written into `out`.
    fn image_into(&self, index: usize, out: &mut [f32]) -> Result<(), InferError> {
        let path = &self.files[index];
        let decoded = image::io::Reader::open(path)
            .map_err(|e| err(path, e.to_string()))?
            .with_guessed_format()
            .map_err(|e| err(path, e.to_string()))?
            .decode()
            .map_err(|e| err(path, format!("cannot decode: {e}")))?;
        let c = self.shape[0];
        // Greyscale models read luma; RGB models read RGB (a greyscale file is replicated).
        let (width, height, mut pixels) = if c == 1 {
            let img = decoded.to_luma8();
            (img.width(), img.height(), img.into_raw())
        } else {
            let img = decoded.to_rgb8();
            (img.width(), img.height(), img.into_raw())
        };
        let (mut width, mut height) = (width as usize, height as usize);
        if let Some(side) = self.options.resize {
            let (new_w, new_h) = if width <= height {
                (side, (height * side + width / 2) / width.max(1))
            } else {
                ((width * side + height / 2) / height.max(1), side)
            };
            pixels = resize(pixels, c, [width, height], [new_w.max(1), new_h.max(1)]);
            (width, height) = (new_w.max(1), new_h.max(1));
        }
        let [crop_h, crop_w] = self.crop;
        if width < crop_w || height < crop_h {
            return Err(err(
                path,
                format!(
                    "{width}x{height} pixels{}, smaller than the {crop_w}x{crop_h} crop (use --resize)",
                    if self.options.resize.is_some() {
                        " after resizing"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let origin = [(height - crop_h) / 2, (width - crop_w) / 2];
        normalise_into(
            out,
            &pixels,
            width,
            origin,
            self.crop,
            &self.mean,
            &self.std,
            self.options.pad,
        );
        Ok(())
    }
}

/// Bilinear (triangle-filter, antialiased when shrinking) resize of interleaved 8-bit pixels.
fn resize(pixels: Vec<u8>, channels: usize, [w, h]: [usize; 2], [new_w, new_h]: [usize; 2]) -> Vec<u8> {
    if (w, h) == (new_w, new_h) {
        return pixels;
    }
    let (w, h, new_w, new_h) = (w as u32, h as u32, new_w as u32, new_h as u32);
    if channels == 1 {
        let img = image::GrayImage::from_raw(w, h, pixels).expect("buffer of the decoded size");
        image::imageops::resize(&img, new_w, new_h, FilterType::Triangle).into_raw()
    } else {
        let img = image::RgbImage::from_raw(w, h, pixels).expect("buffer of the decoded size");
        image::imageops::resize(&img, new_w, new_h, FilterType::Triangle).into_raw()
    }
}

impl ImageSource for ImageFolder {
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn images(&self, range: Range<usize>) -> Result<Vec<f32>, InferError> {
        let per: usize = self.shape.iter().product();
        let mut out = vec![0f32; range.len() * per];
        out.par_chunks_mut(per)
            .zip(range.into_par_iter())
            .try_for_each(|(dst, i)| self.image_into(i, dst))?;
        Ok(out)
    }
}
