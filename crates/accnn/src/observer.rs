//! Progress and per-layer reports while the pipeline runs.

use accnn_graph::FoldedBatchNorm;
use accnn_plan::{Layer, SkippedLayer};

/// Something that happened in [`crate::accelerate_with`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A weight of the model holds NaN or infinite values.
    Warning(&'a str),
    /// The model is read, with the BatchNorms folded into the convolutions before them (possibly
    /// none). Sent once per run, before any work on the model.
    Folded(&'a [FoldedBatchNorm]),
    /// Layers left whole because their shapes depend on operators accnn does not support.
    Skipped(&'a [SkippedLayer]),
    /// The calibration pass over the original network is done.
    Calibrated { images: usize, seconds: f64 },
    /// The weight SVD of `layer` is done: `done` of `total` are finished (layers are factorised
    /// concurrently, the costliest first, so they finish in no fixed order).
    Factorising {
        layer: &'a Layer,
        done: usize,
        total: usize,
    },
    /// Every factorisation is done.
    Factorised,
    /// Calibrated reconstruction (`--calibrate`) has replaced `layer` and refitted its second
    /// half: `done` of `total` are finished, in network order.
    Refitted {
        layer: &'a Layer,
        done: usize,
        total: usize,
    },
    /// The new model exists (not yet measured or written).
    Rewritten,
}

/// Receives [`Event`]s; any `FnMut(Event)` closure is one.
pub trait Observer {
    fn on(&mut self, event: Event<'_>);
}

/// An observer that ignores every event.
pub struct Silent;

impl Observer for Silent {
    fn on(&mut self, _: Event<'_>) {}
}

impl<F: FnMut(Event<'_>)> Observer for F {
    fn on(&mut self, event: Event<'_>) {
        self(event)
    }
}
