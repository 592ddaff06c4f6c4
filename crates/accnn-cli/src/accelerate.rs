//! The main command and `conv` / `fc`: a request from the flags, the library's pipeline, the report.

use accnn::{Accelerated, Event, Observer, Request, Scope};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use crate::errors::explain;

/// Shows the pipeline's progress: the SVD bar, calibration and folding lines.
struct Progress {
    bar: Option<ProgressBar>,
    calibration_source: String,
    memory: crate::PhaseMemory,
}

impl Observer for Progress {
    fn on(&mut self, event: Event<'_>) {
        self.memory.on(&event);
        // Printing progress must never stop the work (a closed stdout is not an error here).
        match event {
            Event::Warning(w) => eprintln!("warning: {w}"),
            Event::Folded(folded) if !folded.is_empty() => {
                let _ = say!(
                    "folded {} BatchNorm layers into the convolutions before them",
                    folded.len()
                );
            }
            Event::Skipped(layers) => {
                for layer in layers {
                    let _ = say!("left whole: {layer}");
                }
            }
            Event::Calibrated { images, seconds } => {
                let _ = say!(
                    "calibration: {images} {}, statistics in {seconds:.1} s",
                    self.calibration_source
                );
            }
            Event::Factorising { layer, done, total } => {
                let bar = self.bar.get_or_insert_with(|| svd_bar(total));
                bar.set_position(done as u64);
                bar.set_message(layer.name.clone());
            }
            Event::Factorised => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            Event::Refitted { layer, done, total } => {
                let bar = self.bar.get_or_insert_with(|| refit_bar(total));
                bar.set_position(done as u64);
                bar.set_message(layer.name.clone());
                if done == total
                    && let Some(bar) = self.bar.take()
                {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}

/// The bar of the factorisations (`total` layers), as the command and the Python package show it.
pub fn svd_bar(total: usize) -> ProgressBar {
    layer_bar("SVD", total)
}

/// The bar of calibrated reconstruction (`total` layers refitted in network order).
pub fn refit_bar(total: usize) -> ProgressBar {
    layer_bar("refit", total)
}

/// A bar over `total` layers, labelled `what`, the current layer's name as its message.
fn layer_bar(what: &str, total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let template = format!("{{spinner}} {what} {{pos}}/{{len}} {{wide_bar}} {{elapsed}} {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// What was asked for, for the closing lines of the report.
pub(crate) enum Asked {
    /// A ratio over the layers of a scope.
    Ratio(f64, Scope),
    /// The ranks of a config.json.
    Config,
    /// One layer (`conv`, `fc`).
    Layer,
}

/// Runs `request` and prints what it did.
pub(crate) fn run(request: Request, calibration_source: String, asked: Asked) -> Result<()> {
    let mut progress = Progress {
        bar: None,
        calibration_source,
        memory: crate::PhaseMemory::for_request(&request),
    };
    let result = accnn::accelerate_with(request, &mut progress).map_err(explain)?;
    report(&result, asked)
}

fn report(result: &Accelerated, asked: Asked) -> Result<()> {
    crate::calibrate::print_fits(result)?;
    say!("{}", result.report.to_string().trim_end())?;
    if let Asked::Ratio(ratio, scope) = asked {
        let achieved = result.report.scope_speedup(scope);
        let what = match scope {
            Scope::ConvOnly => "convolutions",
            Scope::All => "convolution + FC layers",
        };
        match &result.latency {
            // The ratio divided latency: say what was measured, not the MAC ratio as if it were it.
            Some(l) => say!(
                "requested {ratio:.3}x lower latency: measured {:.3}x (predicted {:.3}x); {achieved:.3}x fewer MACs over {what}",
                l.speedup(),
                l.original / l.predicted
            )?,
            None => say!("requested {ratio:.3}x over {what}: achieved {achieved:.3}x")?,
        }
    }
    if !matches!(asked, Asked::Layer) {
        say!("factorisation and rank selection took {:.1} s", result.plan_seconds)?;
    }
    if let Some(l) = &result.latency {
        say!(
            "latency at batch {} in {}: original {:.2} ms; new model predicted {:.2} ms, measured {:.2} ms ({:+.1}%); measured speed-up {:.3}x",
            l.batch,
            l.measured_in,
            l.original * 1e3,
            l.predicted * 1e3,
            l.measured * 1e3,
            100.0 * (l.measured / l.predicted - 1.0),
            l.speedup()
        )?;
    }
    if let Err(why) = &result.fidelity {
        say!("output check skipped: {why}")?;
    }
    if let Ok(f) = &result.fidelity {
        let what = if f.synthetic {
            "synthetic inputs"
        } else {
            "calibration images"
        };
        say!(
            "output check on {} {what}: relative error {:.2}%, top-1 agreement {:.1}%",
            f.inputs,
            100.0 * f.relative_error,
            100.0 * f.top1_agreement
        )?;
        if f.relative_error > accnn::Fidelity::WARNING {
            let advice = if result.calibration.is_some() {
                "ask for a lower --ratio, or calibrate on more images (--calib-samples)"
            } else {
                "fit the factors to data with --calibrate DATA, or ask for a lower --ratio"
            };
            eprintln!(
                "warning: the model's outputs changed by {:.0}% (relative); to keep them, {advice}",
                100.0 * f.relative_error
            );
        }
    }
    for path in &result.written {
        say!("wrote {}", path.display())?;
    }
    Ok(())
}
