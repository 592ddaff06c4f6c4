//! The MXNet `.params` reader on arbitrary bytes: an error or a parameter set, never a panic, and
//! no allocation larger than the input justifies. What it reads must encode and read back the same.
#![no_main]

use std::path::Path;

use accnn_graph::mxnet::{encode_params, parse_params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.params");
    if let Ok(set) = parse_params(data, path) {
        let bytes = encode_params(&set.args, &set.aux);
        let again = parse_params(&bytes, path).expect("accnn's own encoding reads back");
        // NaN weights are legal input; compare bit patterns.
        let bits = |s: &accnn_graph::mxnet::ParamSet| {
            s.args
                .iter()
                .chain(&s.aux)
                .map(|(k, t)| {
                    (
                        k.clone(),
                        t.shape().to_vec(),
                        t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&set), bits(&again));
    }
});
