//! Dataset readers and accuracy on the committed Fashion-MNIST subset.

use std::io::Write;

use accnn_graph::mxnet::load_checkpoint;
use accnn_infer::data::{Preprocess, load_idx, load_npz};
use accnn_infer::eval::{agreement, predict, score};
use accnn_infer::{Engine, EngineOptions};
use accnn_reference::{Array, evaluate};

const FIXTURE_PRE: Preprocess = Preprocess {
    mean: 0.286,
    std: 0.353,
    pad: 2,
};

fn root(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

#[test]
fn idx_files_plain_and_gzipped_with_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 20) as u8).collect();
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), idx(&[2, 2, 3], &pixels)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx(&[2], &[7, 3])).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte.gz"), gz.finish().unwrap()).unwrap();
    let pre = Preprocess {
        mean: 0.5,
        std: 0.25,
        pad: 1,
    };
    let data = load_idx(dir.path(), "train", pre, None).unwrap();
    assert_eq!(data.shape, [2, 1, 4, 5]);
    assert_eq!(data.labels, vec![7, 3]);
    // Pixel (image 1, y 1, x 2) = byte 11 * 20 = 220, at padded (2, 3).
    let v = data.images[(4 + 2) * 5 + 3];
    assert!((v - ((220.0 / 255.0 - 0.5) / 0.25)).abs() < 1e-6);
    assert!((data.images[0] - (-0.5 / 0.25)).abs() < 1e-6, "the border is black");
    assert_eq!(load_idx(dir.path(), "train", pre, Some(1)).unwrap().len(), 1);
    // Truncated data and a label count mismatch are errors naming the file.
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx(&[2, 2, 3], &pixels[..5])).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), idx(&[2], &[1, 2])).unwrap();
    let err = load_idx(dir.path(), "t10k", pre, None).unwrap_err().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte: holds 5 data bytes"), "{err}");
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx(&[2, 2, 3], &pixels)).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), idx(&[3], &[1, 2, 3])).unwrap();
    assert!(
        load_idx(dir.path(), "t10k", pre, None)
            .unwrap_err()
            .to_string()
            .contains("3 labels for 2 images")
    );
    assert!(
        load_idx(dir.path(), "nope", pre, None)
            .unwrap_err()
            .to_string()
            .contains("no nope-images-idx3-ubyte")
    );
}

#[test]
fn npz_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.npz");
    let x = candle_core::Tensor::arange(0f32, 24.0, &candle_core::Device::Cpu)
        .unwrap()
        .reshape((2, 1, 3, 4))
        .unwrap();
    let y = candle_core::Tensor::new(&[4i64, 9], &candle_core::Device::Cpu).unwrap();
    candle_core::Tensor::write_npz(&[("x", &x), ("y", &y)], &path).unwrap();
    let data = load_npz(&path, None).unwrap();
    assert_eq!(data.shape, [2, 1, 3, 4]);
    assert_eq!(data.labels, vec![4, 9]);
    assert_eq!(data.images[23], 23.0);
    candle_core::Tensor::write_npz(&[("x", &x)], &path).unwrap();
    assert!(load_npz(&path, None).unwrap_err().to_string().contains("no array 'y'"));
}

/// `numpy.savez_compressed` writes deflated members: the same arrays read the same.
#[test]
fn compressed_npz_reads_like_a_stored_one() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let stored = dir.path().join("d.npz");
    let x = candle_core::Tensor::arange(0f32, 48.0, &candle_core::Device::Cpu)
        .unwrap()
        .reshape((4, 1, 3, 4))
        .unwrap();
    let y = candle_core::Tensor::new(&[4i64, 9, 1, 0], &candle_core::Device::Cpu).unwrap();
    candle_core::Tensor::write_npz(&[("x", &x), ("y", &y)], &stored).unwrap();
    let compressed = dir.path().join("c.npz");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&stored).unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&compressed).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).unwrap();
        writer.start_file(member.name().unwrap().to_string(), options).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
    let mut check = zip::ZipArchive::new(std::fs::File::open(&compressed).unwrap()).unwrap();
    assert_eq!(
        check.by_index(0).unwrap().compression(),
        zip::CompressionMethod::Deflated
    );
    let (a, b) = (load_npz(&stored, None).unwrap(), load_npz(&compressed, None).unwrap());
    assert_eq!((a.shape, &a.images, &a.labels), (b.shape, &b.images, &b.labels));
}

#[test]
fn fixture_accuracy_on_the_committed_subset_matches_the_reference_interpreter() {
    let data = load_idx(&root("fixtures/fashion-mnist-1k"), "t10k", FIXTURE_PRE, Some(120)).unwrap();
    let model = load_checkpoint(&root("fixtures/vgg16-mini").to_string_lossy(), 1).unwrap();
    let engine = Engine::new(&model, EngineOptions::default()).unwrap();
    let predictions = predict(&engine, &data, 50, |_| {}).unwrap();
    // The independent f64 interpreter, image by image.
    let mut reference = Vec::new();
    for i in 0..data.len() {
        let (x, _) = data.slice(i..i + 1);
        let out = evaluate(
            &model,
            &Array::new(vec![1, 1, 32, 32], x.iter().map(|&v| v as f64).collect()),
        )
        .unwrap();
        let p = &out[0].data;
        let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap() as u32;
        reference.push(vec![best]);
    }
    assert!(agreement(&predictions, &reference) > 0.99);
    let ours = score(&predictions, &data.labels);
    let theirs = score(&reference, &data.labels);
    assert!((ours.top1 - theirs.top1).abs() <= 1.0 / 120.0, "{ours:?} vs {theirs:?}");
    assert_eq!(ours.count, 120);
    assert!(ours.top5.unwrap() >= ours.top1);
}

#[test]
fn the_committed_fixture_is_trained() {
    // fixtures/README.md: at least 90% top-1 on Fashion-MNIST; the committed subset must show it.
    let data = load_idx(&root("fixtures/fashion-mnist-1k"), "t10k", FIXTURE_PRE, None).unwrap();
    assert_eq!(data.len(), 1000);
    let model = load_checkpoint(&root("fixtures/vgg16-mini").to_string_lossy(), 1).unwrap();
    let engine = Engine::new(&model, EngineOptions::default()).unwrap();
    let scores = score(&predict(&engine, &data, 250, |_| {}).unwrap(), &data.labels);
    assert!(scores.top1 >= 0.90, "{scores:?}");
}
