//! Loading onnxruntime: what a user is told when the library is missing or is not onnxruntime.
//! (Running models in it is checked against accnn's engine by `cargo xtask onnx-check`, which has
//! the library of the onnxruntime wheel.)

use accnn_ort::{OnnxRuntime, OrtError};

#[test]
fn a_missing_library_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libonnxruntime.so.1.20.1");
    let Err(err) = OnnxRuntime::load(Some(&path)) else {
        panic!("a missing file loaded")
    };
    assert!(matches!(&err, OrtError::Load { path: p, .. } if p == &path), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot load onnxruntime from {}: no such file", path.display())
    );
}

#[test]
fn a_file_that_is_not_a_shared_library_is_refused_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libonnxruntime.so");
    std::fs::write(&path, b"not an ELF file").unwrap();
    let Err(err) = OnnxRuntime::load(Some(&path)) else {
        panic!("a text file loaded as onnxruntime")
    };
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot load onnxruntime from {}: ", path.display())),
        "{message}"
    );
}

#[test]
fn without_a_path_the_message_says_where_the_library_comes_from() {
    let message = OrtError::NotFound.to_string();
    for needed in [
        "ORT_DYLIB_PATH",
        "--ort-library",
        "onnxruntime wheel",
        "cargo xtask onnxruntime",
    ] {
        assert!(message.contains(needed), "{needed}: {message}");
    }
    // With the variable unset, that is the error (the variable is the only other source).
    if std::env::var_os(accnn_ort::LIBRARY_VARIABLE).is_none() {
        assert!(matches!(OnnxRuntime::load(None), Err(OrtError::NotFound)));
    }
}
