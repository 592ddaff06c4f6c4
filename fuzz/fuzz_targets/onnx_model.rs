//! The ONNX reader on arbitrary bytes, then shape inference and MAC counting, then the writer:
//! errors or results, never a panic, a hang or an allocation the input does not justify. External
//! data is looked up beside a path that does not exist, so no file outside the input is read.
#![no_main]

use std::path::Path;

use accnn_graph::onnx::{declared_input_shape, decode_onnx, encode_onnx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/nonexistent-accnn-fuzz/fuzz.onnx");
    let Ok(read) = decode_onnx(data, path, None) else {
        return;
    };
    if let Some(dims) = declared_input_shape(&read.source) {
        let shape: Vec<usize> = std::iter::once(1).chain(dims).collect();
        let _ = accnn_plan::Analysis::new(&read.model, &shape);
    }
    if let Ok(written) = encode_onnx(&read.source, &read.model, None) {
        // What accnn writes, it reads back.
        let _ = decode_onnx(&written.model, path, None).expect("accnn's own ONNX reads back");
    }
});
