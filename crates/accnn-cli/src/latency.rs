//! `--cost latency`: ranks chosen under a measured-latency budget on the target device.

use std::path::PathBuf;

pub(crate) use accnn_infer::latency::{latency_plan as plan, model_seconds};

/// Where measured latencies are kept between runs, keyed by device, dtype, batch, threads and shape.
pub(crate) fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("accnn").join("latency.json"))
}
