//! ONNX reading and writing: untouched models come back byte for byte; bad files are refused.

use std::path::Path;

use accnn_graph::onnx::{self, GraphBuilder, decode_onnx, encode_onnx, zoo};
use accnn_graph::shape::infer_shapes;
use accnn_graph::{Op, Tensor};

fn models() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("resnet18".to_string(), zoo::resnet18(7, 1000))];
    for opset in [9, 11, 13, 17, 21] {
        out.push((format!("vgg_chain@{opset}"), zoo::vgg_chain(1, opset)));
        out.push((format!("residual_block@{opset}"), zoo::residual_block(2, opset)));
        out.push((format!("concat_branch@{opset}"), zoo::concat_branch(3, opset)));
    }
    for opset in [11, 13, 17] {
        out.push((format!("exported_shapes@{opset}"), zoo::exported_shapes(4, opset)));
        out.push((format!("detection_head@{opset}"), zoo::detection_head(6, opset)));
    }
    for opset in [9, 11, 13, 17] {
        out.push((format!("split_block@{opset}"), zoo::split_block(8, opset)));
    }
    out
}

#[test]
fn unchanged_models_are_written_back_byte_for_byte() {
    for (name, bytes) in models() {
        let read = decode_onnx(&bytes, Path::new("m.onnx"), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !read.model.graph.nodes.iter().any(|n| matches!(n.op, Op::Opaque { .. })),
            "{name}: every op is interpreted"
        );
        let written = encode_onnx(&read.source, &read.model, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(written.model == bytes, "{name}: rewritten bytes differ");
    }
}

#[test]
fn resnet18_reads_with_its_shapes() {
    let bytes = zoo::resnet18(7, 1000);
    let read = decode_onnx(&bytes, Path::new("r.onnx"), None).expect("reads");
    let shapes = infer_shapes(&read.model, &[2, 3, 224, 224]).expect("shapes");
    let head = read.model.graph.heads[0];
    assert_eq!(shapes.outputs[head.node][head.output], vec![2, 1000]);
    let convs = read
        .model
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Convolution(_)))
        .count();
    assert_eq!(convs, 20, "17 3x3/7x7 convolutions and 3 shortcuts");
    assert_eq!(
        onnx::declared_input_shape(&read.source),
        Some(vec![3, 224, 224]),
        "symbolic batch, fixed image size"
    );
}

#[test]
fn unknown_ops_pass_through_and_are_named_when_they_block_a_layer() {
    // An unknown op after the last layer passes through untouched.
    let mut b = GraphBuilder::new(13);
    b.input("x", &[1, 4]);
    b.initializer("w", Tensor::new(vec![3, 4], vec![0.25; 12]).expect("shape"));
    b.node("Gemm", &["x", "w"], &["y"], vec![onnx::attr_int("transB", 1)]);
    b.node("Hardmax", &["y"], &["z"], vec![]);
    b.output("z", &[Some(1), Some(3)]);
    let bytes = b.finish();
    let read = decode_onnx(&bytes, Path::new("u.onnx"), None).expect("reads");
    assert!(infer_shapes(&read.model, &[1, 4]).is_ok());
    let written = encode_onnx(&read.source, &read.model, None).expect("writes");
    assert!(written.model == bytes);

    // Before a layer, the layer's shape is unknown and every unsupported node upstream is named.
    let mut b = GraphBuilder::new(13);
    b.input("x", &[1, 4]);
    b.node("Hardmax", &["x"], &["h"], vec![]);
    b.node("LpNormalization", &["x"], &["e"], vec![]);
    b.node("Add", &["h", "e"], &["s"], vec![]);
    b.initializer("w", Tensor::new(vec![3, 4], vec![0.25; 12]).expect("shape"));
    b.node("Gemm", &["s", "w"], &["y"], vec![onnx::attr_int("transB", 1)]);
    b.output("y", &[Some(1), Some(3)]);
    let read = decode_onnx(&b.finish(), Path::new("u.onnx"), None).expect("reads");
    let shapes = infer_shapes(&read.model, &[1, 4]).expect("unknown ops do not stop shape inference");
    let graph = &read.model.graph;
    let gemm = graph
        .nodes
        .iter()
        .position(|n| matches!(n.op, accnn_graph::Op::FullyConnected(_)))
        .unwrap();
    assert!(!shapes.is_known(gemm));
    let blockers: Vec<&str> = shapes
        .blockers(graph, gemm)
        .iter()
        .map(|&b| graph.nodes[b].name.as_str())
        .collect();
    assert_eq!(blockers, ["Hardmax_h", "LpNormalization_e"]);
    assert!(accnn_graph::cost::layer_costs(&read.model, &shapes).is_empty());
}

/// `x (batch, 3, 8, 8)` -> Hardmax (not interpreted) -> 3x3 convolution, with the Hardmax output's
/// shape recorded in `value_info` when `recorded` is given.
fn opaque_then_conv(recorded: Option<&[Option<usize>]>) -> Vec<u8> {
    let mut b = GraphBuilder::new(13);
    b.input_symbolic_batch("x", &[1, 3, 8, 8]);
    b.node("Hardmax", &["x"], &["h"], vec![onnx::attr_int("axis", 1)]);
    b.initializer("w", Tensor::new(vec![8, 3, 3, 3], vec![0.1; 216]).expect("shape"));
    b.node(
        "Conv",
        &["h", "w"],
        &["y"],
        vec![onnx::attr_ints("pads", &[1, 1, 1, 1])],
    );
    b.output("y", &[None, Some(8), Some(8), Some(8)]);
    if let Some(dims) = recorded {
        b.value_info("h", dims);
    }
    b.finish()
}

#[test]
fn an_unknown_op_takes_the_shape_its_file_records() {
    let conv_shape = |bytes: &[u8], data: &[usize]| {
        let read = decode_onnx(bytes, Path::new("v.onnx"), Some(data)).expect("reads");
        let shapes = infer_shapes(&read.model, data).expect("shapes");
        let conv = read
            .model
            .graph
            .nodes
            .iter()
            .position(|n| matches!(n.op, Op::Convolution(_)))
            .expect("a convolution");
        let macs = accnn_graph::cost::layer_costs(&read.model, &shapes).len();
        (shapes.is_known(conv).then(|| shapes.of(conv).to_vec()), macs)
    };
    // Not recorded: the convolution's input shape is unknown, and it is not a layer to decompose.
    assert_eq!(conv_shape(&opaque_then_conv(None), &[1, 3, 8, 8]), (None, 0));
    // Recorded with the symbolic batch: known at any batch size.
    let recorded = opaque_then_conv(Some(&[None, Some(3), Some(8), Some(8)]));
    assert_eq!(conv_shape(&recorded, &[1, 3, 8, 8]), (Some(vec![1, 8, 8, 8]), 1));
    assert_eq!(conv_shape(&recorded, &[5, 3, 8, 8]), (Some(vec![5, 8, 8, 8]), 1));
    // Recorded at batch 1 while the input's batch is symbolic: a fixed 1 is taken as it is, so it
    // holds at batch 1 only; a shape recorded with a symbolic non-batch dimension is no shape.
    let fixed = opaque_then_conv(Some(&[Some(1), Some(3), Some(8), Some(8)]));
    assert_eq!(conv_shape(&fixed, &[1, 3, 8, 8]).0, Some(vec![1, 8, 8, 8]));
    let symbolic_height = opaque_then_conv(Some(&[None, Some(3), None, Some(8)]));
    assert_eq!(conv_shape(&symbolic_height, &[1, 3, 8, 8]), (None, 0));
    // The file's shapes hold for its own input size only: at another, the shape is unknown again.
    let read = decode_onnx(&recorded, Path::new("v.onnx"), None).expect("reads");
    let shapes = infer_shapes(&read.model, &[1, 3, 16, 16]).expect("shapes");
    assert!(read.model.graph.heads.iter().all(|h| !shapes.is_known(h.node)));
    // Written back untouched.
    let written = encode_onnx(&read.source, &read.model, None).expect("writes");
    assert!(written.model == recorded);
}

#[test]
fn bad_files_are_refused_with_the_file_named() {
    let err = decode_onnx(b"this is not protobuf at all", Path::new("junk.onnx"), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("junk.onnx"), "{err}");
    let mut b = GraphBuilder::new(8);
    b.input("x", &[1, 4]);
    b.node("Relu", &["x"], &["y"], vec![]);
    b.output("y", &[Some(1), Some(3)]);
    let err = decode_onnx(&b.finish(), Path::new("old.onnx"), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("old.onnx") && err.contains("opset 8"), "{err}");
    // An initializer whose data does not fill its shape.
    let mut model = zoo::vgg_chain(1, 13);
    let mut proto = <onnx::proto::ModelProto as prost::Message>::decode(&model[..]).expect("decodes");
    let t = &mut proto.graph.as_mut().expect("graph").initializer[0];
    t.dims[0] += 1;
    model = prost::Message::encode_to_vec(&proto);
    let err = decode_onnx(&model, Path::new("bad.onnx"), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("bad.onnx") && err.contains("features.0.weight"), "{err}");
}

#[test]
fn external_data_is_read_and_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = zoo::vgg_chain(1, 13);
    let inline = decode_onnx(&bytes, Path::new("m.onnx"), None).expect("reads");
    let written = encode_onnx(&inline.source, &inline.model, Some("m.onnx.data")).expect("writes");
    let data = written.data.expect("an external data file");
    assert!(written.model.len() < bytes.len() / 2, "the weights left the model");
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, &written.model).expect("write");
    std::fs::write(dir.path().join("m.onnx.data"), &data).expect("write");
    let external = onnx::read_onnx(&path, None).expect("reads with external data");
    assert_eq!(external.model, inline.model);
    assert!(external.source.had_external_data());

    // A location outside the model's folder, or a range past the file's end, is refused.
    let proto = <onnx::proto::ModelProto as prost::Message>::decode(&written.model[..]).expect("decodes");
    for (key, value, expected) in [
        ("location", "../m.onnx.data", "plain relative path"),
        ("length", "99999999", "lies outside"),
    ] {
        let mut bad = proto.clone();
        let t = bad
            .graph
            .as_mut()
            .expect("graph")
            .initializer
            .iter_mut()
            .find(|t| !t.external_data.is_empty())
            .expect("an external tensor");
        t.external_data.iter_mut().find(|e| e.key == key).expect("entry").value = value.into();
        let bad_path = dir.path().join("bad.onnx");
        std::fs::write(&bad_path, prost::Message::encode_to_vec(&bad)).expect("write");
        let err = onnx::read_onnx(&bad_path, None).err().expect("refused").to_string();
        assert!(err.contains("bad.onnx") && err.contains(expected), "{err}");
    }
}

/// Inputs on which the fuzzer (`fuzz/`) once found a panic: each is now refused with an error.
#[test]
fn fuzz_regressions_are_refused_with_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/onnx_model");
    let expected = [(
        "conv-stride-zero.onnx",
        "node '/features.1/Conv': attribute strides = [1, 0] is not two positive integers",
    )];
    for (file, message) in expected {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).expect("regression input");
        let err = decode_onnx(&bytes, &path, None).err().expect("refused").to_string();
        assert!(err.contains(message), "{file}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        expected.len(),
        "every regression input is listed"
    );
}

/// Every tensor name is defined once (ONNX's single static assignment): by a graph input, an
/// initializer or one node output.
fn assert_ssa(bytes: &[u8]) {
    use prost::Message;
    let proto = onnx::proto::ModelProto::decode(bytes).unwrap();
    let graph = proto.graph.unwrap();
    let mut seen = std::collections::HashSet::new();
    let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let names = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !inits.contains(n))
        .chain(inits.iter().copied())
        .chain(graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)));
    for name in names {
        assert!(seen.insert(name.to_string()), "'{name}' is defined twice");
    }
}

/// Weights held by Constant nodes (paddle2onnx writes them so) are written back once: as the
/// Constant node when unchanged, as an initializer when accnn changed them, never as both.
#[test]
fn constant_node_weights_are_defined_once() {
    let mut b = GraphBuilder::new(13);
    b.input("x", &[1, 4, 6, 6]);
    let w = Tensor::new(
        vec![8, 4, 3, 3],
        (0..288).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect(),
    )
    .unwrap();
    b.node("Constant", &[], &["w"], vec![onnx::attr_tensor("value", &w)]);
    b.node(
        "Conv",
        &["x", "w"],
        &["y"],
        vec![onnx::attr_ints("pads", &[1, 1, 1, 1])],
    );
    b.output("y", &[Some(1), Some(8), Some(6), Some(6)]);
    let bytes = b.finish();
    assert_ssa(&bytes);
    let read = decode_onnx(&bytes, Path::new("c.onnx"), None).expect("reads");
    assert_eq!(
        read.model.args.get("w").map(|t| t.shape()),
        Some(&[8usize, 4, 3, 3][..])
    );
    let written = encode_onnx(&read.source, &read.model, None).expect("writes");
    assert!(written.model == bytes, "an unchanged model is written back as it was");
    // The weight changed (as folding or refitting changes it): one initializer, no Constant node.
    let mut changed = read.model.clone();
    changed.args.get_mut("w").unwrap().data_mut()[0] = 5.0;
    let written = encode_onnx(&read.source, &changed, None).expect("writes");
    assert_ssa(&written.model);
    let again = decode_onnx(&written.model, Path::new("c2.onnx"), None).expect("reads back");
    assert_eq!(again.model.args["w"].data()[0], 5.0);
}

/// A MatMul whose output is the graph's output (no bias Add after it) reads as a dense layer; this
/// crashed the importer once (the graph output counted as a reader at an invalid index).
#[test]
fn matmul_as_the_last_node_reads() {
    let mut b = GraphBuilder::new(13);
    b.input("x", &[2, 4]);
    b.initializer("w", Tensor::new(vec![4, 3], vec![0.5; 12]).expect("shape"));
    b.node("MatMul", &["x", "w"], &["y"], vec![]);
    b.output("y", &[Some(2), Some(3)]);
    let read = decode_onnx(&b.finish(), Path::new("m.onnx"), None).expect("reads");
    assert!(
        read.model
            .graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::FullyConnected(_)))
    );
}

#[test]
fn computed_weights_and_shape_subgraphs_fold_at_import() {
    use prost::Message;
    for opset in [11, 13, 17] {
        let bytes = zoo::exported_shapes(4, opset);
        let read = decode_onnx(&bytes, Path::new("e.onnx"), None).expect("reads");
        let model = &read.model;
        // Folded at batch 1, the model still runs at batch 3: the batch is copied, not baked in.
        let shapes = infer_shapes(model, &[3, 3, 16, 16]).expect("shapes");
        let head = model.graph.heads[0];
        assert_eq!(shapes.outputs[head.node][head.output], vec![3, 5], "opset {opset}");
        let reshape = model.graph.nodes.iter().find_map(|n| match &n.op {
            Op::Reshape { shape } => Some(shape.clone()),
            _ => None,
        });
        assert_eq!(
            reshape,
            Some(vec![0, 8, -1]),
            "opset {opset}: Shape → … → Concat folded"
        );
        // The convolution's weight is the HWIO initializer transposed to OIHW.
        let proto = onnx::proto::ModelProto::decode(&bytes[..]).expect("valid protobuf");
        let stored = proto
            .graph
            .as_ref()
            .and_then(|g| g.initializer.iter().find(|t| t.name == "conv.kernel_hwio"))
            .expect("the initializer");
        let hwio: Vec<f32> = if stored.raw_data.is_empty() {
            stored.float_data.clone()
        } else {
            stored
                .raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let conv = model
            .graph
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Convolution(_)))
            .expect("a convolution");
        let weight = model
            .param(&model.graph.nodes[conv.inputs[1].node].name)
            .expect("a stored weight");
        assert_eq!(weight.shape(), &[8, 3, 3, 3]);
        for o in 0..8 {
            for i in 0..3 {
                for h in 0..3 {
                    for w in 0..3 {
                        assert_eq!(
                            weight.data()[((o * 3 + i) * 3 + h) * 3 + w],
                            hwio[((h * 3 + w) * 3 + i) * 8 + o]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn upsampling_heads_read_with_their_shapes_at_any_batch() {
    for opset in [11, 13, 17] {
        let bytes = zoo::detection_head(6, opset);
        let read = decode_onnx(&bytes, Path::new("d.onnx"), None).expect("reads");
        let ops: Vec<&Op> = read.model.graph.nodes.iter().map(|n| &n.op).collect();
        assert_eq!(
            ops.iter().filter(|o| matches!(o, Op::Resize(_))).count(),
            2,
            "opset {opset}"
        );
        assert!(ops.iter().any(|o| matches!(o, Op::ConvTranspose(_))));
        // 12 → 24 (nearest x2) → 48 (stride-2 transposed 2x2) → 24 (linear x0.5), at batch 3.
        let shapes = infer_shapes(&read.model, &[3, 4, 12, 12]).expect("shapes");
        let head = read.model.graph.heads[0];
        assert_eq!(
            shapes.outputs[head.node][head.output],
            vec![3, 4, 24, 24],
            "opset {opset}"
        );
    }
}

/// torch shares equal weights through `Identity` nodes. When the layer reading the original is
/// decomposed, the original leaves the model; the written file must still define the shared
/// copy (here as its value), not an initializer stripped of its data.
#[test]
fn weights_shared_through_identity_survive_decomposing_their_owner() {
    let mut b = GraphBuilder::new(13);
    b.input("x", &[1, 4]);
    b.initializer(
        "w1",
        Tensor::new(vec![4, 3], (0..12).map(|v| v as f32 / 7.0).collect()).expect("shape"),
    );
    b.initializer(
        "w2",
        Tensor::new(vec![3, 2], (0..6).map(|v| 1.0 - v as f32 / 5.0).collect()).expect("shape"),
    );
    b.initializer("bias", Tensor::new(vec![3], vec![0.5, -0.25, 0.125]).expect("shape"));
    b.node("Identity", &["bias"], &["bias_copy"], vec![]);
    b.node("MatMul", &["x", "w1"], &["m1"], vec![]);
    b.node("Add", &["m1", "bias"], &["h"], vec![]);
    b.node("MatMul", &["h", "w2"], &["m2"], vec![]);
    b.node("Slice", &["bias_copy", "starts", "ends"], &["bias2"], vec![]);
    b.int_initializer("starts", &[1], &[0]);
    b.int_initializer("ends", &[1], &[2]);
    b.node("Add", &["m2", "bias2"], &["y"], vec![]);
    b.output("y", &[Some(1), Some(2)]);
    let read = decode_onnx(&b.finish(), Path::new("s.onnx"), None).expect("reads");
    let model = read.model.clone();
    let first = model
        .graph
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::FullyConnected(_)))
        .expect("the first layer");
    // A full-rank split: identity, then the layer's own (outputs, inputs) weight.
    let w = model
        .param(&model.graph.nodes[model.graph.nodes[first].inputs[1].node].name)
        .expect("weight")
        .clone();
    let eye = Tensor::new(
        vec![4, 4],
        (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect(),
    )
    .expect("4x4");
    let split = accnn_graph::rewrite::LayerSplit::new(first, eye, w);
    let rewritten = accnn_graph::rewrite::apply_splits(model, vec![split]).expect("splits");
    let written = encode_onnx(&read.source, &rewritten, None).expect("writes");
    let proto = <onnx::proto::ModelProto as prost::Message>::decode(&written.model[..]).expect("protobuf");
    let graph = proto.graph.expect("a graph");
    for t in &graph.initializer {
        let values = t.dims.iter().product::<i64>() as usize;
        let bytes = if t.data_type == 1 { 4 * values } else { 8 * values };
        assert!(
            t.raw_data.len() == bytes || t.float_data.len() == values || t.int64_data.len() == values,
            "initializer '{}' lost its data",
            t.name
        );
    }
    let defined: std::collections::HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)))
        .chain(graph.input.iter().map(|i| i.name.as_str()))
        .collect();
    for n in &graph.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            assert!(
                defined.contains(i.as_str()),
                "'{i}' read by {} is defined nowhere",
                n.name
            );
        }
    }
}

/// A Split becomes one Slice per output (written back once: see the byte-for-byte test); the
/// rearranging operators read with their shapes at any batch.
#[test]
fn split_blocks_read_and_rewrite_with_their_shapes() {
    for opset in [9, 11, 13, 17] {
        let bytes = zoo::split_block(8, opset);
        let read = decode_onnx(&bytes, Path::new("s.onnx"), None).expect("reads");
        let ops: Vec<&Op> = read.model.graph.nodes.iter().map(|n| &n.op).collect();
        assert_eq!(
            ops.iter().filter(|o| matches!(o, Op::Slice(_))).count(),
            2,
            "opset {opset}"
        );
        for wanted in ["Pad", "SpaceDepth", "Tile", "LogSoftmax"] {
            assert!(
                ops.iter().any(|o| format!("{o:?}").starts_with(wanted)),
                "opset {opset}: no {wanted}"
            );
        }
        let shapes = infer_shapes(&read.model, &[3, 8, 8, 8]).expect("shapes");
        let head = read.model.graph.heads[0];
        assert_eq!(
            shapes.outputs[head.node][head.output],
            vec![3, 4, 16, 32],
            "opset {opset}"
        );
    }
}
