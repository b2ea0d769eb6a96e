//! How the driver steers the workers and watches them: one atomic control word and per-thread
//! counters, so nothing on the data path takes a lock or crosses a channel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::histogram::Histogram;
use crate::report::DataCounters;

/// Steps a run may have (the step number travels in every probe).
pub const MAX_STEPS: usize = 64;

/// What the driver tells the workers: the step number and the per-allocation rate in one word
/// (high 16 bits step, low 48 bits milli-packets/s), and a stop flag.
#[derive(Debug, Default)]
pub struct Control {
    word: AtomicU64,
    stop: AtomicBool,
}

impl Control {
    /// Starts step `step` at `per_allocation_pps` packets per second per allocation (0:
    /// send nothing); workers pick it up on their next wake-up. The rate is kept to 0.001
    /// packet/s.
    pub fn set(&self, step: u16, per_allocation_pps: f64) {
        let milli = ((per_allocation_pps * 1000.0) as u64).min((1 << 48) - 1);
        self.word
            .store(((step as u64) << 48) | milli, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> (u16, f64) {
        let w = self.word.load(Ordering::Relaxed);
        ((w >> 48) as u16, (w & ((1 << 48) - 1)) as f64 / 1000.0)
    }

    /// Tells every worker to finish: they stop sending, release their allocations and
    /// return their [`Outcome`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Per-step counters of one thread, read by the driver while the thread runs.
#[derive(Debug)]
pub struct Live {
    /// ChannelData packets sent, indexed by step.
    pub sent: [AtomicU64; MAX_STEPS],
    /// Probes received back, indexed by the step written in the probe (a late packet counts
    /// for the step that sent it).
    pub received: [AtomicU64; MAX_STEPS],
    /// Packets due that could not be sent: socket buffer full, or a stream backlogged.
    pub unsent: [AtomicU64; MAX_STEPS],
}

impl Default for Live {
    fn default() -> Self {
        Self {
            sent: [const { AtomicU64::new(0) }; MAX_STEPS],
            received: [const { AtomicU64::new(0) }; MAX_STEPS],
            unsent: [const { AtomicU64::new(0) }; MAX_STEPS],
        }
    }
}

/// What a thread hands back when it stops.
pub struct Outcome {
    /// Round-trip times per step, in nanoseconds.
    pub latency: Vec<Histogram>,
    /// The thread's totals over the whole run (errors, duplicates, refreshes, releases).
    pub counters: DataCounters,
}

impl Control {
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
