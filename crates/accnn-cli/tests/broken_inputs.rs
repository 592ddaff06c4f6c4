//! Broken and hostile inputs through the `accnn` binary: each gets the exact error expected (naming
//! the file, layer or flag), a non-zero exit, no panic, and no file written or changed.
//!
//! The model is the committed DAG fixture (`fixtures/mxnet/dag`, input 3x11x9), copied into a fresh
//! folder per case and damaged there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use accnn_graph::Tensor;
use accnn_graph::mxnet::{encode_params, parse_params};

const SHAPE: &str = "3,11,9";
/// `accnn -m m --ratio 1.5 --save-model out` on checkpoint `m`.
const DECOMPOSE: [&str; 8] = [
    "-m",
    "m",
    "--data-shape",
    SHAPE,
    "--ratio",
    "1.5",
    "--save-model",
    "out",
];

fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/mxnet")
        .join(file)
}

mod common;
use common::{accnn, snapshot};

/// A folder holding checkpoint `m` (epoch 1): the fixture's symbol and `params`.
fn checkpoint(symbol: &str, params: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m-symbol.json"), symbol).unwrap();
    std::fs::write(dir.path().join("m-0001.params"), params).unwrap();
    dir
}

fn fixture_symbol() -> String {
    std::fs::read_to_string(fixture("dag-symbol.json")).unwrap()
}

fn fixture_params() -> Vec<u8> {
    std::fs::read(fixture("dag-0001.params")).unwrap()
}

/// Runs `accnn ARGS` in `dir` and checks that it fails with `expected` as the last line of stderr,
/// without a panic and without touching any file there.
fn fails_with(dir: &Path, args: &[&str], expected: &str) {
    let before = snapshot(dir);
    let out = accnn(args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().last(), Some(expected), "{args:?}");
    assert_eq!(snapshot(dir), before, "{args:?} wrote or changed files");
}

/// `accnn -m m --ratio 1.5 --save-model out` on checkpoint `m` in `dir`.
fn decompose_fails_with(dir: &Path, expected: &str) {
    fails_with(dir, &DECOMPOSE, expected);
}

/// The fixture's params with the first array's header patched at `offset` (bytes from the start of
/// that array: 0 magic, 4 storage type, 8 ndim, 12 the first dimension, then context and dtype).
fn patched_params(args: BTreeMap<String, Tensor>, patch: impl FnOnce(&mut Vec<u8>, usize)) -> Vec<u8> {
    let mut bytes = encode_params(&args, &BTreeMap::new());
    patch(&mut bytes, 24);
    bytes
}

fn fixture_args() -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let set = parse_params(&fixture_params(), Path::new("dag-0001.params")).unwrap();
    (set.args, set.aux)
}

#[test]
fn params_truncated_at_every_offset_are_refused() {
    let bytes = fixture_params();
    for cut in 0..bytes.len() {
        let err = parse_params(&bytes[..cut], Path::new("m-0001.params"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m-0001.params: "), "cut at {cut}: {err}");
    }
    // Through the binary at a few offsets: header, inside an array header, inside data, in the names.
    for cut in [0, 12, 30, 600, bytes.len() - 3] {
        let dir = checkpoint(&fixture_symbol(), &bytes[..cut]);
        let out = accnn(&DECOMPOSE, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr.starts_with("error: cannot read model 'm'") && stderr.contains("m-0001.params: "),
            "cut at {cut}: {stderr}"
        );
        assert_eq!(snapshot(dir.path()).len(), 2, "cut at {cut}");
    }
}

#[test]
fn corrupt_params_headers() {
    let symbol = fixture_symbol();
    let (args, aux) = fixture_args();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                let mut b = fixture_params();
                b[0] ^= 0xFF;
                b
            },
            "error: cannot read model 'm': m-0001.params: not an MXNet params file (magic 0x1ed, expected 0x112) (at byte 8)",
        ),
        (
            patched_params(args.clone(), |b, at| {
                b[at..at + 4].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes())
            }),
            "error: cannot read model 'm': m-0001.params: array #0: unknown header 0xdeadbeef (at byte 28)",
        ),
        (
            patched_params(args.clone(), |b, at| {
                b[at + 12..at + 20].copy_from_slice(&(-8i64).to_le_bytes())
            }),
            "error: cannot read model 'm': m-0001.params: negative dimension -8 (at byte 44)",
        ),
        (
            patched_params(args.clone(), |b, at| {
                b[at + 12..at + 20].copy_from_slice(&(1i64 << 62).to_le_bytes())
            }),
            "error: cannot read model 'm': m-0001.params: array #0 of shape [4611686018427387904] is too large (at byte 56)",
        ),
        (
            // 4 GiB of data declared in a 15 kB file: refused before any allocation.
            patched_params(args.clone(), |b, at| {
                b[at + 12..at + 20].copy_from_slice(&(1i64 << 30).to_le_bytes())
            }),
            "error: cannot read model 'm': m-0001.params: truncated: array data needs 4294967296 bytes, 14790 left (at byte 56)",
        ),
        (
            patched_params(args.clone(), |b, at| {
                // ndim 2 with dims 2^40 x 2^40: the element count overflows.
                b[at + 8..at + 12].copy_from_slice(&2u32.to_le_bytes());
                b[at + 12..at + 20].copy_from_slice(&(1i64 << 40).to_le_bytes());
                b.splice(at + 20..at + 20, (1i64 << 40).to_le_bytes());
            }),
            "error: cannot read model 'm': m-0001.params: shape [1099511627776, 1099511627776] overflows the address space (at byte 64)",
        ),
        (
            patched_params(args.clone(), |b, at| {
                b[at + 28..at + 32].copy_from_slice(&99i32.to_le_bytes())
            }),
            "error: cannot read model 'm': m-0001.params: array #0 has unknown dtype flag 99 (at byte 56)",
        ),
        (
            {
                let mut b = fixture_params();
                // The name count, just before the names: claim one name fewer.
                let names_len: usize = args.keys().chain(aux.keys()).map(|k| 8 + "arg:".len() + k.len()).sum();
                let names = b.len() - names_len - 8;
                let n = u64::from_le_bytes(b[names..names + 8].try_into().unwrap());
                b[names..names + 8].copy_from_slice(&(n - 1).to_le_bytes());
                b
            },
            "error: cannot read model 'm': m-0001.params: 17 arrays but 16 names (at byte 14668)",
        ),
    ];
    for (params, expected) in cases {
        decompose_fails_with(checkpoint(&symbol, &params).path(), expected);
    }
}

#[test]
fn weights_that_do_not_fit_the_symbol() {
    let symbol = fixture_symbol();
    let (args, aux) = fixture_args();
    let with = |name: &str, value: Option<Tensor>| {
        let mut args = args.clone();
        match value {
            Some(t) => args.insert(name.to_string(), t),
            None => args.remove(name),
        };
        encode_params(&args, &aux)
    };
    let cases = [
        (
            with("c5_weight", None),
            "error: model 'm' with input shape [3, 11, 9]: node 'c5': weight 'c5_weight' is not in the params file",
        ),
        (
            with(
                "c5_weight",
                Some(Tensor::new(vec![10, 14, 9, 1], vec![0.5; 1260]).unwrap()),
            ),
            "error: model 'm' with input shape [3, 11, 9]: node 'c5': weight 'c5_weight' has shape [10, 14, 9, 1] in the params file, but the layer needs [10, 14, 3, 3]",
        ),
        (
            with("c5_weight", Some(Tensor::new(vec![0, 14, 3, 3], vec![]).unwrap())),
            "error: model 'm' with input shape [3, 11, 9]: node 'c5': weight 'c5_weight' has shape [0, 14, 3, 3] in the params file, but the layer needs [10, 14, 3, 3]",
        ),
    ];
    for (params, expected) in cases {
        decompose_fails_with(checkpoint(&symbol, &params).path(), expected);
    }
}

#[test]
fn broken_symbols() {
    let params = fixture_params();
    let json: serde_json::Value = serde_json::from_str(&fixture_symbol()).unwrap();
    let node_index = |name: &str| {
        json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .position(|n| n["name"] == name)
            .unwrap()
    };
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        f(&mut j);
        serde_json::to_string(&j).unwrap()
    };
    let (c2, add) = (node_index("c2"), node_index("add"));
    let cases = [
        (
            // c2 reads the add below it: a cycle.
            edit(&|j| j["nodes"][c2]["inputs"][0] = serde_json::json!([add, 0, 0])),
            "error: cannot read model 'm': m-symbol.json: node 'c2': input refers to node #15 which is not before it (a cycle or a dangling reference)",
        ),
        (
            edit(&|j| j["nodes"][c2]["inputs"][0] = serde_json::json!([999, 0, 0])),
            "error: cannot read model 'm': m-symbol.json: node 'c2': input refers to node #999 which is not before it (a cycle or a dangling reference)",
        ),
        (
            edit(&|j| j["nodes"][c2]["attrs"]["kernel"] = "(5, x)".into()),
            "error: cannot read model 'm': m-symbol.json: node 'c2': attribute 'kernel' = '(5, x)' is not a tuple of integers",
        ),
        (
            "{\"nodes\": [".to_string(),
            "error: cannot read model 'm': m-symbol.json: invalid JSON: EOF while parsing a list at line 1 column 11",
        ),
    ];
    for (symbol, expected) in cases {
        decompose_fails_with(checkpoint(&symbol, &params).path(), expected);
    }
}

#[test]
fn onnx_initializer_of_the_wrong_size() {
    let mut proto =
        <accnn_graph::onnx::proto::ModelProto as prost::Message>::decode(&accnn_graph::onnx::zoo::vgg_chain(1, 13)[..])
            .unwrap();
    let init = &mut proto.graph.as_mut().unwrap().initializer[0];
    let name = init.name.clone();
    init.raw_data.truncate(init.raw_data.len() - 4);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), prost::Message::encode_to_vec(&proto)).unwrap();
    let expected = format!(
        "error: cannot read model 'm.onnx': m.onnx: tensor '{name}': holds 1724 bytes of data, but its shape [16, 3, 3, 3] needs 1728"
    );
    fails_with(
        dir.path(),
        &["-m", "m.onnx", "--ratio", "1.5", "--save-model", "out.onnx"],
        &expected,
    );
}

#[test]
fn non_finite_weights_are_named() {
    let (mut args, aux) = fixture_args();
    let mut c2: Vec<f32> = args["c2_weight"].data().to_vec();
    c2[5] = f32::NAN;
    args.insert(
        "c2_weight".into(),
        Tensor::new(args["c2_weight"].shape().to_vec(), c2).unwrap(),
    );
    let mut fc1: Vec<f32> = args["fc1_weight"].data().to_vec();
    fc1[0] = f32::INFINITY;
    args.insert(
        "fc1_weight".into(),
        Tensor::new(args["fc1_weight"].shape().to_vec(), fc1).unwrap(),
    );
    let dir = checkpoint(&fixture_symbol(), &encode_params(&args, &aux));
    decompose_fails_with(dir.path(), "error: layer 'c2': the weight holds NaN or infinite values");
    let out = accnn(&["inspect", "-m", "m", "--data-shape", SHAPE], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: layer 'c2': weight 'c2_weight' holds NaN (first at element 5 of 960)"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("warning: layer 'fc1': weight 'fc1_weight' holds an infinite value (first at element 0 of 480)"),
        "{stderr}"
    );
}

#[test]
fn bad_rank_configs() {
    let dir = checkpoint(&fixture_symbol(), &fixture_params());
    let d = dir.path();
    let cases = [
        (
            r#"{"conv_params": {"c9": 3}}"#,
            "error: config c.json: conv_params: the model has no convolution or fully-connected layer named 'c9'",
        ),
        (
            r#"{"conv_params": {"c5": 0}}"#,
            "error: c.json: conv_params.c5: rank 0 would remove the layer; omit it to keep it whole",
        ),
        (
            r#"{"conv_params": {"c5": 31}}"#,
            "error: config c.json: layer 'c5': K = 31 is out of range: it must be between 1 and 30",
        ),
        (
            r#"{"fc_params": {"c5": 3}}"#,
            "error: config c.json: fc_params: layer 'c5' is a Convolution layer; list it under conv_params",
        ),
        (
            r#"{"conv_params": {"c5": -2}}"#,
            "error: c.json: conv_params.c5: rank must be a non-negative integer, got -2",
        ),
        (
            "[1, 2]",
            "error: c.json: expected an object with conv_params and fc_params",
        ),
    ];
    for (config, expected) in cases {
        std::fs::write(d.join("c.json"), config).unwrap();
        fails_with(
            d,
            &[
                "-m",
                "m",
                "--data-shape",
                SHAPE,
                "--config",
                "c.json",
                "--save-model",
                "out",
            ],
            expected,
        );
    }
}

#[test]
fn outputs_never_replace_the_input() {
    let dir = checkpoint(&fixture_symbol(), &fixture_params());
    let d = dir.path();
    fails_with(
        d,
        &["-m", "m", "--data-shape", SHAPE, "--ratio", "1.5", "--save-model", "m"],
        "error: --save-model m would overwrite the input file m-symbol.json; choose another name",
    );
    let onto_params = [&DECOMPOSE[..], &["--config-out", "m-0001.params"]].concat();
    fails_with(
        d,
        &onto_params,
        "error: --config-out would overwrite the input file m-0001.params",
    );
}

#[test]
fn a_run_killed_at_any_moment_leaves_no_partial_model() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/vgg16-mini");
    let fixture = fixture.to_string_lossy();
    for delay_ms in [10, 60, 150, 300, 500, 800, 1200, 2000, 4000] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_accnn"))
            .args([
                "-m",
                &fixture,
                "--ratio",
                "2",
                "--save-model",
                "out",
                "--config-out",
                "out.json",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let names: Vec<String> = snapshot(dir.path())
            .keys()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let model = ["out-0001.params", "out-symbol.json"];
        let present = model.iter().filter(|f| names.iter().any(|n| n == *f)).count();
        // Either the whole model is there and loads, or no file by a model's name is; temporary files
        // are hidden (`.NAME.PID.tmp`), so nothing half-written can be taken for a model.
        match present {
            0 => assert!(!status.success(), "finished without writing the model: {names:?}"),
            2 => accnn_graph::mxnet::load_checkpoint(&dir.path().join("out").to_string_lossy(), 1)
                .map(|_| ())
                .unwrap_or_else(|e| panic!("killed after {delay_ms} ms, the written model does not load: {e}")),
            _ => panic!("killed after {delay_ms} ms: half a checkpoint {names:?}"),
        }
        for name in &names {
            assert!(
                model.contains(&name.as_str())
                    || name == "out.json"
                    || (name.starts_with('.') && name.ends_with(".tmp")),
                "unexpected file {name}"
            );
        }
    }
}
