//! `accnn::accelerate` end to end: files in, files out, checked against the f64 reference.

use std::path::Path;

use accnn::{
    Calibration, CalibrationImages, Dataset, Error, Event, Fit, ModelInput, Output, RankConfig, RankSource, Request,
};
use accnn_graph::onnx::{read_onnx, zoo};
use accnn_reference::{Array, evaluate};

fn write_model(dir: &Path) -> String {
    let path = dir.join("m.onnx");
    std::fs::write(&path, zoo::residual_block(3, 13)).unwrap();
    path.display().to_string()
}

fn input(seed: usize) -> Array {
    let n = 2 * 8 * 12 * 12;
    let data = (0..n)
        .map(|i| (((i + seed) * 7919 % 2003) as f64 / 1001.0) - 1.0)
        .collect();
    Array::new(vec![2, 8, 12, 12], data)
}

fn relative_error(a: &Array, b: &Array) -> f64 {
    let diff: f64 = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).powi(2)).sum();
    (diff / b.data.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

fn outputs(path: &str) -> Array {
    let model = read_onnx(Path::new(path), None).unwrap().model;
    evaluate(&model, &input(1)).unwrap().remove(0)
}

#[test]
fn full_rank_config_reproduces_the_original_file() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_model(dir.path());
    // Every layer at its largest width, from the analysis accelerate itself reports.
    let probe = accnn::accelerate(Request::new(ModelInput::file(&original), RankSource::ratio(1.0))).unwrap();
    let mut config = RankConfig::default();
    for l in &probe.analysis.layers {
        let entry = (l.name.clone(), l.max_width());
        match l.kind {
            accnn::LayerKind::Convolution => config.conv_params.push(entry),
            accnn::LayerKind::FullyConnected => config.fc_params.push(entry),
        }
    }
    assert!(config.conv_params.len() >= 3, "{config:?}");
    let out = dir.path().join("full.onnx").display().to_string();
    let ranks = RankSource::Config { config, path: None };
    let fast = accnn::accelerate(Request::new(ModelInput::file(&original), ranks).with_output(&out)).unwrap();
    assert_eq!(fast.plan.layers.len(), fast.analysis.layers.len());
    assert_eq!(fast.written, vec![Path::new(&out).to_path_buf()]);
    let err = relative_error(&outputs(&out), &outputs(&original));
    assert!(err < 1e-5, "relative error {err}");
    // The run's own output check says the same, on synthetic inputs.
    let f = fast.fidelity.expect("the engine runs the model");
    assert!(f.synthetic && f.inputs == 8, "{f:?}");
    assert!(f.relative_error < 1e-4 && f.top1_agreement == 1.0, "{f:?}");
}

#[test]
fn a_ratio_is_met_and_its_config_written_and_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_model(dir.path());
    let out = dir.path().join("x2.onnx").display().to_string();
    let config_path = dir.path().join("x2.json");
    let mut request = Request::new(ModelInput::file(&original), RankSource::ratio(2.0));
    request.output = Some(Output {
        model: out.clone(),
        format: None,
        config: Some(config_path.clone()),
    });
    let mut factorised = 0;
    let fast = accnn::accelerate_with(request, &mut |e: Event<'_>| {
        if let Event::Factorising { .. } = e {
            factorised += 1;
        }
    })
    .unwrap();
    assert!(fast.report.speedup() >= 2.0, "{}", fast.report);
    // A truncation changes the outputs, and the check sees it.
    let f = fast.fidelity.clone().expect("the engine runs the model");
    assert!(f.relative_error > 1e-3 && f.relative_error < 2.0, "{f:?}");
    assert!(factorised >= fast.plan.layers.len() && factorised > 0);
    assert_eq!(fast.written.len(), 2);
    // The written ranks give the same model again.
    let config = RankConfig::read(&config_path).unwrap();
    assert_eq!(config, fast.config());
    let again = accnn::accelerate(Request::new(
        ModelInput::file(&original),
        RankSource::Config {
            config,
            path: Some(config_path),
        },
    ))
    .unwrap();
    assert_eq!(again.report.macs(), fast.report.macs());
    // The written file holds the new model: fewer MACs, close outputs.
    let rewritten = read_onnx(Path::new(&out), None).unwrap().model;
    let shapes = accnn_graph::shape::infer_shapes(&rewritten, &[1, 8, 12, 12]).unwrap();
    let macs: u64 = accnn_graph::cost::layer_costs(&rewritten, &shapes)
        .iter()
        .map(|c| c.macs)
        .sum();
    assert_eq!(macs, fast.report.macs().1);
}

#[test]
fn outputs_that_would_overwrite_the_input_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_model(dir.path());
    let before = std::fs::read(&original).unwrap();
    let request = Request::new(ModelInput::file(&original), RankSource::ratio(2.0)).with_output(&original);
    let mut events = 0;
    match accnn::accelerate_with(request, &mut |_: Event<'_>| events += 1) {
        Err(Error::Plan(accnn::PlanError::WouldOverwrite { input, .. })) => {
            assert_eq!(input, Path::new(&original))
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("overwrote the input"),
    }
    assert_eq!(events, 0, "work started before the output was checked");
    assert_eq!(std::fs::read(&original).unwrap(), before);
    // A bad ratio is named as a ratio, with its value.
    let request = Request::new(ModelInput::file(&original), RankSource::ratio(0.5));
    match accnn::accelerate(request) {
        Err(Error::Plan(accnn::PlanError::InvalidRatio { ratio })) => assert_eq!(ratio, 0.5),
        other => panic!("{:?}", other.err().map(|e| e.to_string())),
    }
}

#[test]
fn calibration_refits_every_decomposed_layer() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_model(dir.path());
    let n = 64;
    let data = Dataset {
        shape: [n, 8, 12, 12],
        images: (0..n * 8 * 144)
            .map(|i| ((i * 104_729 % 997) as f32 / 498.0) - 1.0)
            .collect(),
        labels: vec![0; n],
    };
    let request = Request {
        fit: Fit::Calibration(Calibration::new(CalibrationImages::Dataset(data))),
        ..Request::new(ModelInput::file(&original), RankSource::ratio(2.0))
    };
    let fast = accnn::accelerate(request).unwrap();
    assert_eq!(fast.calibration.as_ref().map(|c| c.images), Some(n));
    let f = fast.fidelity.as_ref().expect("the engine runs the model");
    assert!(!f.synthetic && f.inputs == 8, "{f:?}");
    assert_eq!(fast.fits.len(), fast.plan.layers.len());
    for f in &fast.fits {
        assert!(f.error_after <= f.error_before + 1e-12, "{f:?}");
    }
}

#[test]
fn onnx_bytes_in_give_the_bytes_of_the_file_written_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_model(dir.path());
    let out = dir.path().join("x2.onnx").display().to_string();
    let request = Request::new(ModelInput::file(&original), RankSource::ratio(2.0)).with_output(&out);
    let from_file = accnn::accelerate(request).unwrap();
    let bytes = std::fs::read(&original).unwrap();
    let from_bytes = accnn::accelerate(Request::new(
        ModelInput::OnnxBytes {
            name: "in memory".into(),
            bytes,
        },
        RankSource::ratio(2.0),
    ))
    .unwrap();
    assert_eq!(from_bytes.config(), from_file.config());
    // Nothing was written, and the encoded model is the file the other run wrote.
    assert!(from_bytes.written.is_empty());
    let encoded = from_bytes.onnx_bytes().unwrap();
    assert_eq!(encoded, std::fs::read(&out).unwrap());
    // A model built in memory has no ONNX original to be written on: it is written as a new one,
    // which reads back as the same network.
    let model = read_onnx(Path::new(&original), None).unwrap().model;
    let in_memory = accnn::accelerate(
        Request::new(
            ModelInput::Memory {
                name: "built".into(),
                model,
            },
            RankSource::ratio(2.0),
        )
        .with_data_shape(&[8, 12, 12]),
    )
    .unwrap();
    let bytes = in_memory.onnx_bytes().unwrap();
    let reread = accnn_graph::onnx::decode_onnx(&bytes, Path::new("built.onnx"), None).unwrap();
    let x = Array::new(
        vec![1, 8, 12, 12],
        (0..8 * 144).map(|i| ((i * 37) % 17) as f64 / 8.0 - 1.0).collect(),
    );
    let (want, got) = (
        evaluate(&in_memory.model, &x).unwrap(),
        evaluate(&reread.model, &x).unwrap(),
    );
    assert_eq!(want[0].shape, got[0].shape);
    assert!(want[0].data.iter().zip(&got[0].data).all(|(a, b)| (a - b).abs() < 1e-9));
    // Bad bytes are named by the name given.
    let bad = accnn::accelerate(Request::new(
        ModelInput::OnnxBytes {
            name: "upload.onnx".into(),
            bytes: b"not a model".to_vec(),
        },
        RankSource::ratio(2.0),
    ));
    let message = chain(bad.err().expect("refused"));
    assert!(message.contains("upload.onnx"), "{message}");
}

/// An error with its causes, `outer: inner`.
fn chain(e: Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}
