//! Accelerate an ONNX model 2x, fitting the factors to calibration images.
//!
//! ```text
//! cargo run --release -p accnn --example accelerate_onnx -- MODEL.onnx IMAGES NEW.onnx
//! ```
//!
//! `IMAGES` is anything `accnn eval` reads (an IDX directory, a `.npz`, a folder of class folders of
//! JPEG/PNG images), taken as pixels / 255 with no normalisation. Without arguments the example
//! writes a small seeded VGG-style ONNX model and calibrates it on synthetic images.

use std::error::Error;

use accnn::{Calibration, CalibrationImages, Dataset, ImageOptions, ModelInput, RankSource, Request};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, images, out) = match args.as_slice() {
        [model, images, out] => {
            let images = CalibrationImages::Files {
                path: images.into(),
                split: "train".into(),
                limit: 512,
                image: ImageOptions::default(),
            };
            (model.clone(), images, out.clone())
        }
        _ => demo()?,
    };

    let request = Request::new(ModelInput::file(model), RankSource::ratio(2.0))
        .with_calibration(Calibration::new(images))
        .with_output(out);
    let fast = accnn::accelerate(request)?;

    println!("{}", fast.report);
    for fit in &fast.fits {
        let (before, after) = (100.0 * fit.error_before, 100.0 * fit.error_after);
        println!(
            "{}: K = {}, response error {before:.2}% -> {after:.2}% after the refit",
            fit.name, fit.width
        );
    }
    for path in &fast.written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// A seeded model in a temporary folder and 256 synthetic images for it.
fn demo() -> Result<(String, CalibrationImages, String), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("accnn-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = dir.join("vgg_chain.onnx");
    std::fs::write(&model, accnn_graph::onnx::zoo::vgg_chain(7, 13))?;
    let n = 256;
    let images = (0..n * 3 * 16 * 16)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let data = Dataset {
        shape: [n, 3, 16, 16],
        images,
        labels: vec![0; n],
    };
    let out = dir.join("vgg_chain_x2.onnx");
    Ok((
        model.display().to_string(),
        CalibrationImages::Dataset(data),
        out.display().to_string(),
    ))
}
