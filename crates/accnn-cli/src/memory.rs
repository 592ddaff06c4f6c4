//! What happens to freed memory: handed back to the OS between the pipeline's phases (so that
//! compressing a big model peaks at its live data), kept mapped while models run (so that each run
//! does not fault its activations in afresh).

use accnn::{Cost, Event, RankSource, Request};

/// Returns memory freed so far to the OS. The decomposition frees large blocks phase by phase (each
/// layer's SVD workspace, the original weights once rewritten), which mimalloc would otherwise keep:
/// without this, VGG-16's peak is 2.1 GB instead of its live data's 1.5 GB. Harmless when mimalloc is
/// not the global allocator (its heaps are then empty).
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc 2's `mi_option_purge_delay` (the position in its `mi_option_e`, which
/// `libmimalloc-sys` does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped while the returned guard lives, for what only runs models (`bench`,
/// `eval`, `finetune`, the Python package's `benchmark` and `evaluate`): mimalloc hands a freed
/// block's pages back to the OS 10 ms after it is freed, so each inference faulted its large
/// activations in afresh, the kernel zeroing every page (VGG-16 at 224, batch 1, 2 threads,
/// `ACCNN_PROFILE`: conv1_1 2.3-6.0 ms with it, 0.83-0.88 ms without; the whole model 90 → 83-87 ms;
/// 30 fine-tuning steps of the 3x Fashion-MNIST student 6.5-7.2 → 6.0-6.1 s). Dropping the guard
/// restores the previous delay and returns what was kept ([`release_freed_memory`] cannot while
/// purging is off), so a process that goes on to compress a model has its memory back. Harmless
/// when mimalloc is not the global allocator.
#[must_use = "freed memory is held only while the guard lives"]
pub fn hold_freed_memory() -> FreedMemoryHeld {
    // SAFETY: reads and sets one of mimalloc's global options; no pointers are involved.
    let previous = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    FreedMemoryHeld { previous }
}

/// See [`hold_freed_memory`].
pub struct FreedMemoryHeld {
    previous: std::ffi::c_long,
}

impl Drop for FreedMemoryHeld {
    fn drop(&mut self) {
        // SAFETY: as in `hold_freed_memory`.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, self.previous) };
        release_freed_memory();
    }
}

/// The pipeline's memory, phase by phase, for an observer to drive from the events it hears
/// (the command's and the Python package's progress both do).
///
/// - Memory freed by a finished phase (the read file, each layer's SVD workspace, each refitted
///   layer's activations, the original weights once rewritten) goes back to the OS.
/// - With `--cost latency`, freed memory is held (see [`hold_freed_memory`]) while layers and the
///   new model are timed, and goes back once at the rewrite. Calibration runs models too, but
///   holding through its statistics pass raised VGG-16's peak from 3.1 to 4.5 GB and gained
///   nothing measurable here, so it does not hold.
pub struct PhaseMemory {
    timing: bool,
    held: Option<FreedMemoryHeld>,
}

impl PhaseMemory {
    pub fn for_request(request: &Request) -> Self {
        PhaseMemory {
            timing: matches!(
                &request.ranks,
                RankSource::Ratio {
                    cost: Cost::Latency(_),
                    ..
                }
            ),
            held: None,
        }
    }

    /// Hands back what the finished phase freed, holds or stops holding as the next one needs.
    pub fn on(&mut self, event: &Event<'_>) {
        match event {
            Event::Folded(_) | Event::Calibrated { .. } | Event::Factorising { .. } => self.next_phase(false),
            Event::Factorised | Event::Refitted { .. } | Event::Rewritten => self.next_phase(self.timing),
            _ => {}
        }
    }

    /// Returns what the last phase freed (or held), then holds freed memory if `hold`.
    fn next_phase(&mut self, hold: bool) {
        // Dropping a guard returns what it held.
        if self.held.take().is_none() {
            release_freed_memory();
        }
        if hold {
            self.held = Some(hold_freed_memory());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: reads one of mimalloc's global options.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    /// The purge delay is one global option: the tests that change it take turns.
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn held_memory_is_purged_again_once_the_guard_goes() {
        let _alone = ALONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = purge_delay();
        // Option 15 is the purge delay: 10 ms unless the environment sets it (its neighbours
        // default to 1 and 0).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(before, 10);
        }
        {
            let _held = hold_freed_memory();
            assert_eq!(purge_delay(), -1);
        }
        assert_eq!(purge_delay(), before);
    }

    fn layer() -> accnn_plan::Layer {
        accnn_plan::Layer {
            id: accnn_plan::LayerId(0),
            node: 1,
            name: "conv".into(),
            kind: accnn_plan::LayerKind::Convolution,
            macs: 1,
            params: 1,
            input_shape: vec![1, 1, 1, 1],
            output_shape: vec![1, 1, 1, 1],
            weight_shape: vec![1, 1, 1, 1],
            groups: 1,
            max_rank: 1,
            macs_per_rank: 1,
        }
    }

    /// Whether freed memory is held after each event of a run (calibrated, to hear every event)
    /// that does (`timing`) or does not time layers, in the pipeline's order.
    fn held_after_each_event(timing: bool) -> Vec<bool> {
        let layer = layer();
        let events = [
            Event::Folded(&[]),
            Event::Calibrated {
                images: 8,
                seconds: 1.0,
            },
            Event::Factorising {
                layer: &layer,
                done: 1,
                total: 1,
            },
            Event::Factorised,
            Event::Refitted {
                layer: &layer,
                done: 1,
                total: 2,
            },
            Event::Refitted {
                layer: &layer,
                done: 2,
                total: 2,
            },
            Event::Rewritten,
        ];
        let mut memory = PhaseMemory { timing, held: None };
        events
            .iter()
            .map(|event| {
                memory.on(event);
                purge_delay() == -1
            })
            .collect()
    }

    #[test]
    fn memory_is_held_while_layers_are_timed_and_handed_back_between_phases() {
        let _alone = ALONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = purge_delay();
        let (f, t) = (false, true);
        assert_eq!(held_after_each_event(true), [f, f, f, t, t, t, t]);
        // The guard of that run is gone with its PhaseMemory.
        assert_eq!(purge_delay(), before);
        assert_eq!(held_after_each_event(false), [f; 7]);
    }
}
