//! Generates the ONNX protobuf types of accnn-graph: `cargo run --manifest-path tools/onnx-proto-gen/Cargo.toml`.

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/accnn-graph/src/onnx");
    let fds = protox::compile(["onnx.proto"], [&dir]).expect("onnx.proto parses");
    let out = tempdir();
    let mut config = prost_build::Config::new();
    config.out_dir(&out);
    // Weight bytes are shared with the file buffer instead of copied.
    config.bytes([".onnx.TensorProto.raw_data"]);
    config.compile_fds(fds).expect("code generation");
    std::fs::copy(out.join("onnx.rs"), dir.join("proto.rs")).expect("write proto.rs");
    println!("wrote {}", dir.join("proto.rs").display());
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("onnx-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}
