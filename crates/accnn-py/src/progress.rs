//! Progress of long work: a bar on a terminal, lines through Python's `sys.stderr` when asked for
//! elsewhere (a notebook shows those), nothing otherwise.

use std::io::IsTerminal;

use accnn::{Event, Observer};
use indicatif::ProgressBar;
use pyo3::prelude::*;

/// When progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Show {
    /// On a terminal only (`progress=None`).
    Auto,
    /// Always: a bar on a terminal, lines through `sys.stderr` elsewhere (`progress=True`).
    Always,
    /// Never (`progress=False`).
    Never,
}

impl Show {
    pub(crate) fn from_flag(flag: Option<bool>) -> Self {
        match flag {
            None => Show::Auto,
            Some(true) => Show::Always,
            Some(false) => Show::Never,
        }
    }
}

/// Where progress goes.
enum Sink {
    Bar,
    Lines,
    Nowhere,
}

/// The pipeline's observer: the SVD progress, calibration and folding, and the warnings collected
/// for the report (Python raises them as `warnings.warn`).
pub(crate) struct Progress {
    sink: Sink,
    bar: Option<ProgressBar>,
    pub(crate) warnings: Vec<String>,
    /// Layers left whole because of operators accnn does not support, one line each.
    pub(crate) skipped: Vec<String>,
    /// The last decile written as a line, so that lines come at most ten a task.
    last_decile: Option<usize>,
    /// The pipeline's memory, phase by phase (when this observes one).
    memory: Option<accnn_cli::PhaseMemory>,
}

impl Progress {
    pub(crate) fn new(show: Show) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let sink = match (show, terminal) {
            (Show::Never, _) => Sink::Nowhere,
            (_, true) => Sink::Bar,
            (Show::Always, false) => Sink::Lines,
            (Show::Auto, false) => Sink::Nowhere,
        };
        Progress {
            sink,
            bar: None,
            warnings: Vec::new(),
            skipped: Vec::new(),
            last_decile: None,
            memory: None,
        }
    }

    /// Also drives `memory` from the pipeline's events.
    pub(crate) fn with_memory(mut self, memory: accnn_cli::PhaseMemory) -> Self {
        self.memory = Some(memory);
        self
    }

    /// `done` of `total` steps of a task: the bar `make_bar` makes, on a terminal; elsewhere, when
    /// asked for, `line` each time another tenth is done.
    pub(crate) fn advance(&mut self, make_bar: impl FnOnce() -> ProgressBar, done: usize, total: usize, line: &str) {
        match self.sink {
            Sink::Bar => self.bar.get_or_insert_with(make_bar).set_position(done as u64),
            Sink::Lines => {
                let decile = (done * 10) / total.max(1);
                if self.last_decile != Some(decile) {
                    self.last_decile = Some(decile);
                    self.line(line);
                }
            }
            Sink::Nowhere => {}
        }
    }

    /// The task is done: its bar goes.
    /// Layer `name`, `done` of `total`, of a per-layer task (`what`: "SVD", "refit"): the bar
    /// shows its name, a line names task, count and layer.
    fn layer_done(
        &mut self,
        make_bar: impl FnOnce() -> ProgressBar,
        what: &str,
        name: &str,
        done: usize,
        total: usize,
    ) {
        self.advance(make_bar, done, total, &format!("{what} {done}/{total} {name}"));
        if let Some(bar) = &self.bar {
            bar.set_message(name.to_string());
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.last_decile = None;
    }

    /// One line of progress, through Python's `sys.stderr` (where a notebook shows it).
    fn line(&self, text: &str) {
        match self.sink {
            Sink::Lines => Python::attach(|py| {
                let line = format!("{text}\n");
                // Progress is never worth an exception.
                let _ = py
                    .import("sys")
                    .and_then(|sys| sys.getattr("stderr"))
                    .and_then(|err| err.call_method1("write", (line,)));
            }),
            Sink::Bar => eprintln!("{text}"),
            Sink::Nowhere => {}
        }
    }
}

impl Observer for Progress {
    fn on(&mut self, event: Event<'_>) {
        if let Some(memory) = &mut self.memory {
            memory.on(&event);
        }
        match event {
            Event::Warning(w) => self.warnings.push(w.to_string()),
            Event::Skipped(layers) => self.skipped.extend(layers.iter().map(ToString::to_string)),
            Event::Folded(folded) if !folded.is_empty() => self.line(&format!(
                "folded {} BatchNorm layers into the convolutions before them",
                folded.len()
            )),
            Event::Calibrated { images, seconds } => {
                self.line(&format!("calibration: {images} images, statistics in {seconds:.1} s"))
            }
            Event::Factorising { layer, done, total } => {
                self.layer_done(|| accnn_cli::svd_bar(total), "SVD", &layer.name, done, total)
            }
            Event::Factorised => self.finish(),
            Event::Refitted { layer, done, total } => {
                self.layer_done(|| accnn_cli::refit_bar(total), "refit", &layer.name, done, total);
                if done == total {
                    self.finish();
                }
            }
            _ => {}
        }
    }
}
