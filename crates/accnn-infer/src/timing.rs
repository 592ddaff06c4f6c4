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
    let mut run_a = || a.forward(&xa).map(drop);
    let mut run_b = || b.forward(&xb).map(drop);
    let mut latencies = alternate(&mut [&mut run_a, &mut run_b], warmup, rounds)?.into_iter();
    match (latencies.next(), latencies.next()) {
        (Some(a), Some(b)) => Ok(Comparison { a, b }),
        _ => unreachable!("alternate gives one latency per run"),
    }
}

/// One run of whatever is being timed (an engine, another runtime's session).
pub type TimedRun<'a, E> = &'a mut dyn FnMut() -> Result<(), E>;

/// Times every run of `runs`: `warmup` untimed calls each, then `rounds` rounds in which each is
/// called once, the order rotating from round to round so that none always runs on caches another
/// just warmed (or always first after a pause). One [`Latency`] per run, in the order given.
pub fn alternate<E>(runs: &mut [TimedRun<'_, E>], warmup: usize, rounds: usize) -> Result<Vec<Latency>, E> {
    for run in runs.iter_mut() {
        for _ in 0..warmup {
            run()?;
        }
    }
    let n = runs.len();
    let mut samples = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let start = Instant::now();
            runs[i]()?;
            samples[i].push(start.elapsed().as_secs_f64());
        }
    }
    Ok(samples.into_iter().map(|samples| Latency { samples }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_rotate_and_each_gets_its_own_samples() {
        let calls = std::cell::RefCell::new(Vec::new());
        let mut a = || -> Result<(), ()> {
            calls.borrow_mut().push('a');
            Ok(())
        };
        let mut b = || -> Result<(), ()> {
            calls.borrow_mut().push('b');
            Ok(())
        };
        let mut c = || -> Result<(), ()> {
            calls.borrow_mut().push('c');
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(())
        };
        let latencies = alternate(&mut [&mut a, &mut b, &mut c], 1, 3).unwrap();
        let order: String = calls.borrow().iter().collect();
        // Warm-up in the given order, then rounds starting with a, b, c in turn.
        assert_eq!(order, "abcabcbcacab");
        assert!(latencies.iter().all(|l| l.samples.len() == 3));
        // The slow run is the slow one, wherever it came in a round.
        assert!(latencies[2].median() >= 0.002 && latencies[2].median() > latencies[0].median());
    }

    #[test]
    fn an_error_stops_the_timing() {
        let mut ok = || -> Result<(), &'static str> { Ok(()) };
        let mut fails = || -> Result<(), &'static str> { Err("broken") };
        assert_eq!(alternate(&mut [&mut ok, &mut fails], 0, 2), Err("broken"));
    }
}
