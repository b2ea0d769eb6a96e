//! Join/leave churn during a fixed-rate run, as users come and go in a real service.
//!
//! At `percent` per minute of `n` allocations, one allocation is replaced every
//! `60 s / (n × percent / 100)`: the churn thread sets up a new allocation with the next unused
//! index (so a fresh credential, and with app credentials a fresh channel and uid), and hands
//! it to the worker that owns the oldest allocation, which puts it in that slot. The old one
//! *leaves* as a client does ([`crate::worker`]): it stops sending, keeps receiving the echoes
//! still in flight for the drain time, then is deleted (Refresh LIFETIME 0, RFC 8656 §7.3; on
//! TCP/TLS, its connection is closed). The number of allocations, and so the sending rate,
//! stays constant, and every probe sent on a leaving allocation is still counted.
//!
//! Allocations are dealt to workers round-robin, so global position `c` is slot `c / threads`
//! of worker `c % threads`: walking `c` upwards replaces the oldest allocation first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::setup::{self, Allocation, Params};

/// A new allocation for a worker's slot.
pub type Arrival = (usize, Allocation);

/// What the churn thread did.
#[derive(Debug, Default)]
pub struct ChurnTally {
    /// New allocations handed to workers.
    pub joined: u64,
    /// Set-ups that failed, by cause ([`crate::SetupError::key`]).
    pub failures: BTreeMap<String, u64>,
}

/// Shared between the churn thread and the phase that turns it on and off.
#[derive(Debug, Default)]
pub struct ChurnSwitch {
    running: AtomicBool,
    done: AtomicBool,
    /// Replacements so far, for progress lines.
    pub joined: AtomicU64,
}

impl ChurnSwitch {
    /// Starts replacing (when sending starts).
    pub fn start(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// Stops for good (when sending stops).
    pub fn stop(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// The churn thread and its switch.
pub struct Churn {
    /// Starts and stops the replacing; the driver flips it around the sending step.
    pub switch: Arc<ChurnSwitch>,
    handle: JoinHandle<ChurnTally>,
}

impl Churn {
    /// Spawns the thread; it waits for [`ChurnSwitch::start`]. `slots[w]` is the number of
    /// allocations worker `w` holds, and `workers[w]` reaches it.
    pub fn spawn(
        params: Params,
        workers: Vec<Sender<Arrival>>,
        slots: Vec<usize>,
        first_index: u32,
        every: Duration,
    ) -> std::io::Result<Self> {
        let switch = Arc::new(ChurnSwitch::default());
        let s = switch.clone();
        let handle = std::thread::Builder::new()
            .name("bench-churn".into())
            .spawn(move || run(&s, &params, &workers, &slots, first_index, every))?;
        Ok(Self { switch, handle })
    }

    /// Stops it and waits for it (at most one set-up timeout).
    pub fn finish(self) -> ChurnTally {
        self.switch.stop();
        self.handle.join().unwrap_or_default()
    }
}

/// How often one allocation is replaced, or `None` for no churn.
pub fn interval(allocations: usize, percent_per_minute: f64) -> Option<Duration> {
    let per_minute = allocations as f64 * percent_per_minute / 100.0;
    (per_minute > 0.0 && per_minute.is_finite()).then(|| Duration::from_secs_f64(60.0 / per_minute))
}

fn run(
    switch: &ChurnSwitch,
    params: &Params,
    workers: &[Sender<Arrival>],
    slots: &[usize],
    first_index: u32,
    every: Duration,
) -> ChurnTally {
    let mut tally = ChurnTally::default();
    let threads = workers.len();
    let total: usize = slots.iter().sum();
    let stopped = || switch.done.load(Ordering::Relaxed);
    while !switch.running.load(Ordering::Relaxed) {
        if stopped() {
            return tally;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (mut next, mut position, mut index) = (Instant::now() + every, 0usize, first_index);
    loop {
        while Instant::now() < next {
            if stopped() {
                return tally;
            }
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
        }
        if stopped() {
            return tally;
        }
        // Keep the schedule, but do not catch up in a burst after a slow set-up.
        next = (next + every).max(Instant::now());
        let (worker, slot) = (position % threads, position / threads);
        position = (position + 1) % total;
        match setup::set_up(index, params) {
            Ok(a) => {
                if workers[worker].send((slot, a)).is_ok() {
                    tally.joined += 1;
                    switch.joined.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => *tally.failures.entry(e.key()).or_insert(0) += 1,
        }
        index = index.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_spreads_the_percentage_over_a_minute() {
        assert_eq!(interval(1000, 5.0), Some(Duration::from_millis(1200)));
        assert_eq!(interval(50, 60.0), Some(Duration::from_secs(2)));
        assert_eq!(interval(1000, 0.0), None);
    }
}
