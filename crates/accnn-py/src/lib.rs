//! The native half of the `accnn` Python package (`accnn._accnn`): the library's pipeline, engine and
//! command behind a few functions that take and return plain Python data. The Python half
//! (`python/accnn/__init__.py`) gives them their signatures, defaults and result types.
//!
//! Every function releases the GIL while it works; errors are `accnn.AccnnError` with the one-line
//! message the `accnn` command prints.

mod accelerate;
mod convert;
mod engine;
mod progress;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

#[global_allocator]
static ALLOCATOR: accnn_cli::Allocator = accnn_cli::Allocator {};

create_exception!(
    accnn,
    AccnnError,
    PyException,
    "A model, data or option accnn cannot work with; the message is the `accnn` command's."
);

/// Runs the `accnn` command with `argv` (the program name first) and returns its exit status: the
/// Python package's `accnn` entry point.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| accnn_cli::run_from(argv))
}

#[pymodule]
fn _accnn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("AccnnError", m.py().get_type::<AccnnError>())?;
    // What the package sets in the environment before any work (candle starts its workers lazily).
    m.add(
        "CANDLE_SPIN",
        (accnn_infer::CANDLE_SPIN_VAR, accnn_infer::CANDLE_SPIN_LIMIT),
    )?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(accelerate::accelerate, m)?)?;
    m.add_function(wrap_pyfunction!(engine::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(engine::run, m)?)?;
    m.add_function(wrap_pyfunction!(engine::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(engine::benchmark, m)?)?;
    Ok(())
}
