//! config.json (layer ranks) on arbitrary text: an error or a config that writes and reads back the
//! same, never a panic.
#![no_main]

use std::path::Path;

use accnn_rank::RankConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz-config.json");
    if let Ok(config) = RankConfig::parse(text, path) {
        let again = RankConfig::parse(&config.to_json(), path).expect("accnn's own config reads back");
        assert_eq!(again, config);
    }
});
