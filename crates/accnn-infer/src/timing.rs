//! Timing two engines against each other on a shared, noisy machine.
//!
//! Runs alternate (A, B, A, B, …) after a warm-up, so that load from elsewhere hits both alike; the
//! speed-up is the ratio of medians measured in the one session.

use std::time::Instant;

use candle_core::Tensor;

use crate::{Engine, InferError};

/// Latencies of one engine, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    pub samples: Vec<f64>,
}

impl Latency {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    fn quantile(&self, q: f64) -> f64 {
        let s = self.sorted();
        if s.is_empty() {
            return f64::NAN;
        }
        let pos = q * (s.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
    }

    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// The interquartile range: the spread of the middle half of the samples.
    pub fn iqr(&self) -> (f64, f64) {
        (self.quantile(0.25), self.quantile(0.75))
    }
}

/// The outcome of timing `a` against `b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub a: Latency,
    pub b: Latency,
}

impl Comparison {
    /// How many times faster `b` runs than `a` (ratio of medians).
    pub fn speedup(&self) -> f64 {
        self.a.median() / self.b.median()
    }
}

/// Times `a` and `b` on `input`: `warmup` untimed runs each, then `rounds` alternating timed runs.
/// The input is placed on each engine's device first and outputs stay there: a GPU's timings
/// hold no transfers.
pub fn compare(a: &Engine, b: &Engine, input: &Tensor, warmup: usize, rounds: usize) -> Result<Comparison, InferError> {
    let (xa, xb) = (a.prepare(input)?, b.prepare(input)?);
    for _ in 0..warmup {
        a.forward(&xa)?;
        b.forward(&xb)?;
    }
    let (mut ta, mut tb) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        // Alternate which goes first so neither always runs on a cache the other just warmed.
        let order: [(&Engine, &Tensor, &mut Vec<f64>); 2] = if round % 2 == 0 {
            [(a, &xa, &mut ta), (b, &xb, &mut tb)]
        } else {
            [(b, &xb, &mut tb), (a, &xa, &mut ta)]
        };
        for (engine, x, times) in order {
            let start = Instant::now();
            engine.forward(x)?;
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(Comparison {
        a: Latency { samples: ta },
        b: Latency { samples: tb },
    })
}
