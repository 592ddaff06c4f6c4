//! The MXNet symbol JSON reader, then shape inference and MAC counting (`accnn_plan::Analysis`) over the
//! committed DAG fixture's weights: arbitrary text must give an error or an analysis, never a panic
//! or a hang.
#![no_main]

use std::path::Path;

use accnn_graph::Model;
use accnn_graph::mxnet::{parse_params, parse_symbol, symbol_json};
use libfuzzer_sys::fuzz_target;

const PARAMS: &[u8] = include_bytes!("../../fixtures/mxnet/dag-0001.params");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(graph) = parse_symbol(text, Path::new("fuzz-symbol.json")) else {
        return;
    };
    // What was read writes out and reads back to the same graph.
    let written = symbol_json(&graph);
    let again = parse_symbol(&written, Path::new("fuzz-symbol.json")).expect("accnn's own symbol reads back");
    assert_eq!(symbol_json(&again), written);
    let set = parse_params(PARAMS, Path::new("dag-0001.params")).expect("fixture");
    let model = Model {
        graph,
        args: set.args,
        aux: set.aux,
    };
    for shape in [[1, 3, 11, 9], [2, 1, 1, 1], [1, 3, 64, 64]] {
        let _ = accnn_plan::Analysis::new(&model, &shape);
    }
});
