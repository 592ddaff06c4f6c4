//! MXNet checkpoint reading and writing, checked against bytes and JSON written by hand here.

use std::path::Path;

use accnn_graph::ir::{Activation, PoolConvention};
use accnn_graph::mxnet::{
    ParamSet, encode_params, load_checkpoint, parse_params, parse_symbol, save_checkpoint, symbol_json,
};
use accnn_graph::shape::infer_shapes;
use accnn_graph::{DType, GraphError, Op, Tensor};

const P: &str = "test.params";

/// A params file holding the given pre-encoded arrays under the given names.
fn list(arrays: &[Vec<u8>], names: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x112u64.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((arrays.len() as u64).to_le_bytes());
    for a in arrays {
        b.extend(a);
    }
    b.extend((names.len() as u64).to_le_bytes());
    for n in names {
        b.extend((n.len() as u64).to_le_bytes());
        b.extend(n.as_bytes());
    }
    b
}

fn context_and_type(b: &mut Vec<u8>, flag: i32) {
    b.extend(1i32.to_le_bytes());
    b.extend(0i32.to_le_bytes());
    b.extend(flag.to_le_bytes());
}

fn v2_array(magic: u32, dims: &[i64], flag: i32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(magic.to_le_bytes());
    b.extend(0i32.to_le_bytes());
    b.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend(d.to_le_bytes());
    }
    context_and_type(&mut b, flag);
    b.extend(data);
    b
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn reads_every_array_layout_and_dtype() {
    let values = [1.5f32, -2.0, 0.25, 8.0, -0.5, 3.0];
    // Legacy: u32 ndim, u32 dims, no magic.
    let mut legacy = Vec::new();
    legacy.extend(2u32.to_le_bytes());
    legacy.extend(2u32.to_le_bytes());
    legacy.extend(3u32.to_le_bytes());
    context_and_type(&mut legacy, 0);
    legacy.extend(f32_bytes(&values));
    // V1: magic, u32 ndim, i64 dims.
    let mut v1 = Vec::new();
    v1.extend(0xF993_FAC8u32.to_le_bytes());
    v1.extend(1u32.to_le_bytes());
    v1.extend(6i64.to_le_bytes());
    context_and_type(&mut v1, 0);
    v1.extend(f32_bytes(&values));
    let f64_data: Vec<u8> = values.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect();
    let f16_data: Vec<u8> = values
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let v2 = v2_array(0xF993_FAC9, &[3, 2], 1, &f64_data);
    let v3 = v2_array(0xF993_FACA, &[6], 2, &f16_data);
    let bytes = list(&[legacy, v1, v2, v3], &["arg:a", "arg:b", "aux:c", "d"]);
    let set = parse_params(&bytes, Path::new(P)).unwrap();
    assert_eq!(set.args["a"].shape(), &[2, 3]);
    assert_eq!(set.args["b"].shape(), &[6]);
    assert_eq!(set.aux["c"].shape(), &[3, 2]);
    assert_eq!(set.args["d"].shape(), &[6]);
    for t in [&set.args["a"], &set.args["b"], &set.aux["c"], &set.args["d"]] {
        assert_eq!(t.data(), &values);
    }
    assert_eq!(set.aux["c"].stored_as(), DType::Float64);
    assert_eq!(set.args["d"].stored_as(), DType::Float16);
}

#[test]
fn v3_scalar_and_none_arrays() {
    let mut none = Vec::new();
    none.extend(0xF993_FACAu32.to_le_bytes());
    none.extend(0i32.to_le_bytes());
    none.extend((-1i32).to_le_bytes());
    let scalar = v2_array(0xF993_FACA, &[], 0, &f32_bytes(&[7.0]));
    let set = parse_params(&list(&[none, scalar], &["arg:none", "arg:s"]), Path::new(P)).unwrap();
    assert!(!set.args.contains_key("none"));
    assert_eq!(set.args["s"].shape(), &[] as &[usize]);
    assert_eq!(set.args["s"].data(), &[7.0]);
}

fn err(bytes: &[u8]) -> String {
    parse_params(bytes, Path::new(P)).unwrap_err().to_string()
}

#[test]
fn refuses_sparse_integer_and_corrupt_arrays() {
    let mut sparse = Vec::new();
    sparse.extend(0xF993_FAC9u32.to_le_bytes());
    sparse.extend(1i32.to_le_bytes());
    assert!(err(&list(&[sparse], &["arg:x"])).contains("row_sparse"));
    let int = v2_array(0xF993_FAC9, &[1], 4, &[0, 0, 0, 0]);
    assert!(err(&list(&[int], &["arg:x"])).contains("integer dtype"));
    let bad_flag = v2_array(0xF993_FAC9, &[1], 99, &[0, 0, 0, 0]);
    assert!(err(&list(&[bad_flag], &["arg:x"])).contains("unknown dtype flag 99"));
    let negative = v2_array(0xF993_FAC9, &[-3], 0, &[]);
    assert!(err(&list(&[negative], &["arg:x"])).contains("negative dimension"));
    // Dims whose product overflows, and dims larger than the file.
    let overflow = v2_array(0xF993_FAC9, &[1 << 40, 1 << 40], 0, &[]);
    assert!(err(&list(&[overflow], &["arg:x"])).contains("overflows"));
    let huge = v2_array(0xF993_FAC9, &[1 << 30], 0, &[]);
    assert!(err(&list(&[huge], &["arg:x"])).contains("truncated"));
    let ok = v2_array(0xF993_FAC9, &[1], 0, &f32_bytes(&[1.0]));
    assert!(err(&list(std::slice::from_ref(&ok), &["arg:x", "arg:y"])).contains("1 arrays but 2 names"));
    let mut wrong_magic = list(std::slice::from_ref(&ok), &["arg:x"]);
    wrong_magic[0] = 0x13;
    assert!(err(&wrong_magic).contains("not an MXNet params file"));
    let mut huge_count = list(&[ok], &["arg:x"]);
    huge_count[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&huge_count).contains("more than the file can hold"));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let mut set = ParamSet::default();
    set.args
        .insert("w".into(), Tensor::new(vec![2, 3], vec![1.0; 6]).unwrap());
    set.aux.insert("m".into(), Tensor::new(vec![3], vec![2.0; 3]).unwrap());
    let bytes = encode_params(&set.args, &set.aux);
    for cut in 0..bytes.len() {
        assert!(
            parse_params(&bytes[..cut], Path::new(P)).is_err(),
            "a file cut at byte {cut} was accepted"
        );
    }
    assert_eq!(parse_params(&bytes, Path::new(P)).unwrap(), set);
}

const SYMBOL_2016: &str = r#"{
  "nodes": [
    {"op": "null", "param": {}, "name": "data", "inputs": [], "backward_source_id": -1},
    {"op": "null", "param": {}, "name": "conv1_weight", "inputs": [], "backward_source_id": -1, "attr": {"lr_mult": "1.0"}},
    {"op": "null", "param": {}, "name": "conv1_bias", "inputs": [], "backward_source_id": -1},
    {"op": "Convolution",
     "param": {"cudnn_tune": "off", "dilate": "(1,1)", "kernel": "(3,3)", "no_bias": "False", "num_filter": "4",
               "num_group": "1", "pad": "(1,1)", "stride": "(2,2)", "workspace": "512"},
     "name": "conv1", "inputs": [[0, 0], [1, 0], [2, 0]], "backward_source_id": -1},
    {"op": "Activation", "param": {"act_type": "relu"}, "name": "relu1", "inputs": [[3, 0]], "backward_source_id": -1},
    {"op": "Pooling", "param": {"kernel": "(3,3)", "pad": "(0,0)", "pool_type": "max", "stride": "(2,2)",
     "pooling_convention": "full"}, "name": "pool1", "inputs": [[4, 0]], "backward_source_id": -1},
    {"op": "Flatten", "param": {}, "name": "flatten", "inputs": [[5, 0]], "backward_source_id": -1},
    {"op": "null", "param": {}, "name": "fc_weight", "inputs": [], "backward_source_id": -1},
    {"op": "FullyConnected", "param": {"no_bias": "True", "num_hidden": "3"}, "name": "fc",
     "inputs": [[6, 0], [7, 0]], "backward_source_id": -1},
    {"op": "null", "param": {}, "name": "softmax_label", "inputs": [], "backward_source_id": -1},
    {"op": "SoftmaxOutput", "param": {"grad_scale": "1"}, "name": "softmax", "inputs": [[8, 0], [9, 0]],
     "backward_source_id": -1}
  ],
  "arg_nodes": [0, 1, 2, 7, 9],
  "heads": [[10, 0]]
}"#;

fn params_2016() -> ParamSet {
    let mut set = ParamSet::default();
    set.args.insert("conv1_weight".into(), Tensor::zeros(vec![4, 3, 3, 3]));
    set.args.insert("conv1_bias".into(), Tensor::zeros(vec![4]));
    set.args.insert("fc_weight".into(), Tensor::zeros(vec![3, 4 * 4 * 4]));
    set
}

#[test]
fn reads_2016_symbols_and_infers_shapes_with_pooling_conventions() {
    let graph = parse_symbol(SYMBOL_2016, Path::new("old-symbol.json")).unwrap();
    assert_eq!(graph.nodes.len(), 11);
    assert_eq!(graph.nodes[1].attrs["__lr_mult__"], "1.0");
    assert!(matches!(graph.nodes[4].op, Op::Activation(Activation::Relu)));
    let Op::Pooling(p) = &graph.nodes[5].op else {
        panic!("pool1 is not pooling")
    };
    assert_eq!(p.convention, PoolConvention::Full);
    let set = params_2016();
    let model = accnn_graph::Model {
        graph,
        args: set.args,
        aux: set.aux,
    };
    // 17x17 input: conv stride 2, pad 1 -> 9x9; 3x3/2 pooling, "full" -> ceil(6/2)+1 = 4.
    let shapes = infer_shapes(&model, &[2, 3, 17, 17]).unwrap();
    assert_eq!(shapes.of(3), &[2, 4, 9, 9]);
    assert_eq!(shapes.of(5), &[2, 4, 4, 4]);
    assert_eq!(shapes.of(8), &[2, 3]);
    // 16x16: conv -> 8x8, full pooling -> ceil(5/2)+1 = 4, where valid gives floor(5/2)+1 = 3 and
    // the FC weight no longer fits.
    assert_eq!(infer_shapes(&model, &[1, 3, 16, 16]).unwrap().of(5), &[1, 4, 4, 4]);
    let mut valid = model.clone();
    let Op::Pooling(p) = &mut valid.graph.nodes[5].op else {
        unreachable!()
    };
    p.convention = PoolConvention::Valid;
    let err = infer_shapes(&valid, &[1, 3, 16, 16]).unwrap_err().to_string();
    assert!(
        err.contains("node 'fc': weight 'fc_weight' has shape [3, 64] in the params file, but the layer needs [3, 36]"),
        "{err}"
    );
    let costs = accnn_graph::cost::layer_costs(&model, &shapes);
    assert_eq!(costs[0].macs, 4 * 9 * 9 * 3 * 9);
    assert_eq!(costs[1].macs, 64 * 3);
}

#[test]
fn symbols_round_trip_through_the_1x_dialect() {
    let graph = parse_symbol(SYMBOL_2016, Path::new("old-symbol.json")).unwrap();
    let text = symbol_json(&graph);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["nodes"][3]["inputs"][0], serde_json::json!([0, 0, 0]));
    assert_eq!(value["node_row_ptr"].as_array().unwrap().len(), 12);
    assert_eq!(value["nodes"][3]["attrs"]["workspace"], "512");
    let again = parse_symbol(&text, Path::new("new-symbol.json")).unwrap();
    assert_eq!(again, graph);
}

#[test]
fn checkpoint_save_then_load_is_identity() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("m").to_string_lossy().into_owned();
    let graph = parse_symbol(SYMBOL_2016, Path::new("old-symbol.json")).unwrap();
    let mut set = params_2016();
    set.args.get_mut("fc_weight").unwrap().data_mut()[5] = 3.25;
    let model = accnn_graph::Model {
        graph,
        args: set.args,
        aux: set.aux,
    };
    let paths = save_checkpoint(&model, &prefix, 7).unwrap();
    assert!(paths.params.ends_with("m-0007.params"));
    assert_eq!(load_checkpoint(&prefix, 7).unwrap(), model);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "temporary files left behind: {leftovers:?}");
}

fn symbol_error(text: &str) -> String {
    match parse_symbol(text, Path::new("bad-symbol.json")) {
        Err(GraphError::Format { message, .. }) => message,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn bad_symbols_get_errors_naming_the_node() {
    let unknown = SYMBOL_2016.replace("\"Flatten\"", "\"SpatialTransformer\"");
    assert!(symbol_error(&unknown).contains("node 'flatten': unsupported operator 'SpatialTransformer'"));
    let cycle = SYMBOL_2016.replace("\"inputs\": [[4, 0]]", "\"inputs\": [[6, 0]]");
    assert!(symbol_error(&cycle).contains("node 'pool1'"));
    let dangling = SYMBOL_2016.replace("[[10, 0]]", "[[42, 0]]");
    assert!(symbol_error(&dangling).contains("missing node #42"));
    let bad_kernel = SYMBOL_2016.replace(
        "\"kernel\": \"(3,3)\", \"no_bias\"",
        "\"kernel\": \"(3,3,3)\", \"no_bias\"",
    );
    assert!(symbol_error(&bad_kernel).contains("2-D windows only"));
    assert!(symbol_error("{\"x\": 1}").contains("no \"nodes\""));
    assert!(symbol_error("not json").contains("invalid JSON"));
}

#[test]
fn shorthand_activations_are_written_as_activation_with_their_type() {
    let text = SYMBOL_2016.replace(
        r#""op": "Activation", "param": {"act_type": "relu"}"#,
        r#""op": "sigmoid", "param": {}"#,
    );
    assert_ne!(text, SYMBOL_2016);
    let graph = parse_symbol(&text, Path::new("s.json")).unwrap();
    let written = symbol_json(&graph);
    let node = serde_json::from_str::<serde_json::Value>(&written).unwrap()["nodes"][4].clone();
    assert_eq!(node["op"], "Activation");
    assert_eq!(node["attrs"]["act_type"], "sigmoid");
    let again = parse_symbol(&written, Path::new("s.json")).unwrap();
    let ops = |g: &accnn_graph::Graph| g.nodes.iter().map(|n| n.op.clone()).collect::<Vec<_>>();
    assert_eq!(ops(&again), ops(&graph));
    assert_eq!(symbol_json(&again), written);
}

/// Symbols on which the fuzzer (`fuzz/`) once found a panic: each now reads and writes back.
#[test]
fn fuzz_regressions_write_back_what_they_read() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/mxnet_symbol");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let graph = parse_symbol(&text, &path).unwrap();
        let again = parse_symbol(&symbol_json(&graph), &path).unwrap();
        assert_eq!(symbol_json(&again), symbol_json(&graph), "{path:?}");
        count += 1;
    }
    assert!(count >= 1);
}

#[test]
fn params_written_in_pieces_are_the_encoded_bytes() {
    use accnn_graph::io::WriteTo;
    let set = params_2016();
    let file = accnn_graph::mxnet::ParamsFile {
        args: &set.args,
        aux: &set.aux,
    };
    let mut streamed = Vec::new();
    file.write_to(&mut streamed).unwrap();
    assert_eq!(streamed, encode_params(&set.args, &set.aux));
    assert_eq!(file.encoded_len(), streamed.len());
    assert_eq!(parse_params(&streamed, Path::new(P)).unwrap(), set);
}
