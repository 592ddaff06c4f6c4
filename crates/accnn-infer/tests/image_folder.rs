//! Folders of JPEG/PNG images: decoding, resizing, cropping and normalisation against hand computation,
//! and the committed Fashion-MNIST subset written out as PNGs reading back as the IDX files do.

use std::path::Path;

use accnn_infer::data::{ImageFolder, ImageOptions, ImageSource, Preprocess, is_image_folder, load_idx};

fn root(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn save_gray(path: &Path, w: u32, h: u32, pixels: Vec<u8>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(w, h, pixels).unwrap().save(path).unwrap();
}

#[test]
fn idx_images_written_as_png_read_back_identically() {
    let pre = Preprocess {
        mean: 0.286,
        std: 0.353,
        pad: 2,
    };
    let idx = load_idx(&root("fixtures/fashion-mnist-1k"), "t10k", pre, Some(60)).unwrap();
    let raw = load_idx(
        &root("fixtures/fashion-mnist-1k"),
        "t10k",
        Preprocess {
            mean: 0.0,
            std: 1.0 / 255.0,
            pad: 0,
        },
        Some(60),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..idx.len() {
        let pixels = raw.slice(i..i + 1).0.iter().map(|&v| v.round() as u8).collect();
        // Class folders named by label; `0`..`9` sort as the labels do.
        save_gray(
            &dir.path().join(format!("{}/{i:03}.png", idx.labels[i])),
            28,
            28,
            pixels,
        );
    }
    assert!(is_image_folder(dir.path()));
    assert!(!is_image_folder(&root("fixtures/fashion-mnist-1k")));
    let options = ImageOptions {
        mean: vec![0.286],
        std: vec![0.353],
        pad: 2,
        ..ImageOptions::default()
    };
    let folder = ImageFolder::open(dir.path(), options, [1, 32, 32], None).unwrap();
    assert_eq!(folder.count(), 60);
    assert_eq!(folder.image_shape(), [1, 32, 32]);
    let images = folder.images(0..folder.count()).unwrap();
    for (k, file) in folder.files().iter().enumerate() {
        let i: usize = file.file_stem().unwrap().to_string_lossy().parse().unwrap();
        assert_eq!(folder.labels()[k], idx.labels[i], "{file:?}");
        assert_eq!(
            &images[k * 1024..(k + 1) * 1024],
            idx.slice(i..i + 1).0.as_slice(),
            "{file:?}"
        );
    }
}

#[test]
fn resize_crop_and_per_channel_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    // A 6x4 greyscale ramp: pixel (y, x) = 10 * (6 * y + x).
    let ramp: Vec<u8> = (0..24).map(|i| 10 * i as u8).collect();
    save_gray(&dir.path().join("a/ramp.png"), 6, 4, ramp);
    let options = ImageOptions {
        crop: Some([2, 2]),
        mean: vec![0.5],
        std: vec![0.25],
        pad: 1,
        ..ImageOptions::default()
    };
    let folder = ImageFolder::open(dir.path(), options.clone(), [1, 4, 4], None).unwrap();
    let x = folder.image(0).unwrap();
    // The centre 2x2 of a 4-row, 6-column image: rows 1..3, columns 2..4, inside a one-pixel border.
    let norm = |p: f32| (p / 255.0 - 0.5) / 0.25;
    let expected: Vec<f32> = (0..16)
        .map(|i| {
            let (y, x) = (i / 4, i % 4);
            if (1..3).contains(&y) && (1..3).contains(&x) {
                norm(10.0 * (6 * y + x + 1) as f32)
            } else {
                norm(0.0)
            }
        })
        .collect();
    assert_eq!(x, expected);

    // RGB: a constant colour stays that colour through a bilinear shrink, normalised per channel.
    let rgb = dir.path().join("b/flat.png");
    std::fs::create_dir_all(rgb.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(40, 20, image::Rgb([10, 128, 250]))
        .save(&rgb)
        .unwrap();
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();
    let options = ImageOptions {
        resize: Some(8),
        crop: Some([8, 12]),
        mean: vec![0.1, 0.2, 0.3],
        std: vec![0.5, 0.25, 2.0],
        pad: 0,
    };
    let folder = ImageFolder::open(dir.path(), options, [3, 8, 12], None).unwrap();
    let x = folder.image(0).unwrap();
    assert_eq!(x.len(), 3 * 8 * 12);
    for (c, (v, (m, s))) in [10.0f32, 128.0, 250.0]
        .iter()
        .zip([(0.1f32, 0.5f32), (0.2, 0.25), (0.3, 2.0)])
        .enumerate()
    {
        let want = (v / 255.0 - m) / s;
        assert!(
            x[c * 96..(c + 1) * 96].iter().all(|&got| (got - want).abs() < 1e-6),
            "channel {c}"
        );
    }
}

#[test]
fn jpeg_decodes_and_limit_keeps_every_class() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["cat", "dog", "eel"] {
        for i in 0..4 {
            let path = dir.path().join(format!("{class}/{i}.JPG"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let shade = 60 * i as u8;
            image::RgbImage::from_pixel(16, 16, image::Rgb([shade, shade, shade]))
                .save_with_format(&path, image::ImageFormat::Jpeg)
                .unwrap();
        }
    }
    std::fs::write(dir.path().join("cat/notes.txt"), "not an image").unwrap();
    let options = ImageOptions::default();
    let folder = ImageFolder::open(dir.path(), options.clone(), [1, 16, 16], None).unwrap();
    assert_eq!(folder.classes(), ["cat", "dog", "eel"]);
    assert_eq!(folder.count(), 12);
    let x = folder.images(0..12).unwrap();
    for k in 0..12 {
        let want = (60 * (k % 4)) as f32 / 255.0;
        assert!(
            x[k * 256..(k + 1) * 256]
                .iter()
                .all(|&v| (v - want).abs() < 3.0 / 255.0),
            "image {k}"
        );
    }
    let few = ImageFolder::open(dir.path(), options, [1, 16, 16], Some(3)).unwrap();
    assert_eq!(few.labels(), [0, 1, 2]);
}

#[test]
fn bad_folders_and_images_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    save_gray(&dir.path().join("a/small.png"), 4, 4, vec![0; 16]);
    std::fs::write(dir.path().join("a/broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    let err = |options: ImageOptions, input: [usize; 3], index: usize| match ImageFolder::open(
        dir.path(),
        options,
        input,
        None,
    ) {
        Ok(folder) => folder.image(index).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    let e = err(ImageOptions::default(), [1, 4, 4], 0);
    assert!(e.contains("broken.png: cannot decode"), "{e}");
    let e = err(ImageOptions::default(), [1, 8, 8], 1);
    assert!(
        e.contains("small.png: 4x4 pixels, smaller than the 8x8 crop (use --resize)"),
        "{e}"
    );
    let resized = ImageOptions {
        resize: Some(8),
        ..ImageOptions::default()
    };
    assert_eq!(
        ImageFolder::open(dir.path(), resized, [1, 8, 8], None)
            .unwrap()
            .image(1)
            .unwrap()
            .len(),
        64
    );
    let means = ImageOptions {
        mean: vec![0.1, 0.2],
        ..ImageOptions::default()
    };
    assert!(err(means, [3, 4, 4], 0).contains("2 --mean values for a model with 3 input channels"));
    assert!(err(ImageOptions::default(), [4, 4, 4], 0).contains("not 4"));
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir(empty.path().join("nothing")).unwrap();
    let e = ImageFolder::open(empty.path(), ImageOptions::default(), [1, 4, 4], None).unwrap_err();
    assert!(e.to_string().contains("no .jpg, .jpeg or .png images"), "{e}");
}
