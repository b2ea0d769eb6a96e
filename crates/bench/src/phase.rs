//! The timed part of a run: constant-rate steps, the `--rate max` search over them, and the
//! idle hold of `--setup-only`. The driver only sets the [`Control`] word and reads the
//! workers' [`Live`] counters; it never touches a packet.
//!
//! A step sends for its duration, then stops sending and waits until every packet came back
//! or the drain time passed (500 ms on UDP, 2 s on streams), so a step's loss is not
//! confused with packets still in flight, and an overloaded step does not spill into the next.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::churn::ChurnSwitch;
use crate::config::{Config, Search};
use crate::control::{Control, Live, MAX_STEPS};
use crate::report::{Event, StepReport, Verdict};
use crate::sys;

/// A step passes only if the generator sent at least this share of its target.
const SENT_SHARE: f64 = 0.95;
/// The search never asks for more than this many packets per second.
const CEILING_PPS: f64 = 50e6;

/// The driver's side of the timed part: runs steps by setting the workers' [`Control`] word,
/// sums their [`Live`] counters into [`StepReport`]s and reports progress to `observe`.
pub struct Phases<'a> {
    control: &'a Control,
    lives: &'a [Arc<Live>],
    observe: &'a mut dyn FnMut(Event),
    allocations: usize,
    size: usize,
    duration: Duration,
    max_loss: f64,
    drain: Duration,
    start: Instant,
    /// Replaces allocations while a fixed-rate step sends.
    churn: Option<&'a ChurnSwitch>,
}

impl<'a> Phases<'a> {
    /// Phases for `allocations` allocations (the ones that came up), whose workers listen to
    /// `control` and count into `lives`; size, duration, loss threshold and drain time come
    /// from `config`, and `churn` (if any) is started with a fixed-rate step.
    pub fn new(
        control: &'a Control,
        lives: &'a [Arc<Live>],
        observe: &'a mut dyn FnMut(Event),
        allocations: usize,
        config: &Config,
        churn: Option<&'a ChurnSwitch>,
    ) -> Self {
        Self {
            control,
            lives,
            observe,
            allocations,
            size: config.size,
            duration: config.duration,
            max_loss: config.search.max_loss,
            drain: if config.transport.is_stream() {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(500)
            },
            start: Instant::now(),
            churn,
        }
    }

    fn totals(&self, step: u16) -> (u64, u64, u64) {
        let s = step as usize;
        self.lives.iter().fold((0, 0, 0), |(a, b, c), l| {
            (
                a + l.sent[s].load(Ordering::Relaxed),
                b + l.received[s].load(Ordering::Relaxed),
                c + l.unsent[s].load(Ordering::Relaxed),
            )
        })
    }

    /// Every allocation at `pps` for the configured duration.
    pub fn fixed(&mut self, pps: f64) -> StepReport {
        let total = pps * self.allocations as f64;
        if let Some(churn) = self.churn {
            churn.start();
        }
        self.step(0, total, self.duration, "")
    }

    /// The `--rate max` search ([`Bisection`]), one step per target it proposes.
    pub fn search(&mut self, search: &Search) -> Vec<StepReport> {
        let mut steps = Vec::new();
        let mut plan = Bisection::new(search, self.allocations);
        let mut target = plan.first();
        for k in 0..search.max_steps.min(MAX_STEPS) {
            let label = format!("step {k} @ {target:.0} pps: ");
            let r = self.step(k as u16, target, search.step, &label);
            (self.observe)(Event::Step(r.clone()));
            let passed = r.verdict == Verdict::Pass;
            steps.push(r);
            match plan.next(target, passed) {
                Some(t) => target = t,
                None => break,
            }
        }
        steps
    }

    /// Keeps the allocations idle (refreshing them) for `hold`, after announcing they are up.
    pub fn hold(&mut self, hold: Duration, requested: usize) {
        self.control.set(0, 0.0);
        (self.observe)(Event::Ready {
            up: self.allocations,
            requested,
        });
        let end = Instant::now() + hold;
        let mut tick = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
            if Instant::now() >= tick && Instant::now() < end {
                tick += Duration::from_secs(10);
                let left = end - Instant::now();
                (self.observe)(Event::Progress(format!(
                    "[{:6.1}s] holding {} allocations, {:.0} s left",
                    self.start.elapsed().as_secs_f64(),
                    self.allocations,
                    left.as_secs_f64()
                )));
            }
        }
    }

    /// One constant-rate step: send, report once a second, stop, drain, tally.
    fn step(&mut self, step: u16, target: f64, duration: Duration, label: &str) -> StepReport {
        let cpu0 = sys::cpu_time();
        let t0 = Instant::now();
        self.control.set(step, target / self.allocations as f64);
        let end = t0 + duration;
        let (mut tick, mut last) = (t0 + Duration::from_secs(1), (0u64, 0u64));
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(tick.saturating_duration_since(now)));
            if Instant::now() >= tick {
                tick += Duration::from_secs(1);
                let (sent, received, _) = self.totals(step);
                let (ds, dr) = (sent - last.0, received.saturating_sub(last.1));
                last = (sent, received);
                let loss = if ds > 0 {
                    (1.0 - dr as f64 / ds as f64).max(0.0) * 100.0
                } else {
                    0.0
                };
                let churned = match self.churn {
                    Some(c) => format!(", {} replaced", c.joined.load(Ordering::Relaxed)),
                    None => String::new(),
                };
                (self.observe)(Event::Progress(format!(
                    "[{:6.1}s] {label}sent {ds} pps, received {dr} pps, loss {loss:.2}%{churned}",
                    self.start.elapsed().as_secs_f64()
                )));
            }
        }
        self.control.set(step, 0.0);
        if let Some(churn) = self.churn {
            churn.stop();
        }
        let seconds = t0.elapsed().as_secs_f64();
        let drain_end = Instant::now() + self.drain;
        loop {
            let (sent, received, _) = self.totals(step);
            if received >= sent || Instant::now() >= drain_end {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (sent, received, unsent) = self.totals(step);
        let generator_cpu = (sys::cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
        let loss = if sent > 0 {
            sent.saturating_sub(received) as f64 / sent as f64
        } else {
            0.0
        };
        let mbps = |pps: f64| pps * self.size as f64 * 8.0 / 1e6;
        let (sent_pps, received_pps) = (sent as f64 / seconds, received as f64 / seconds);
        let verdict = if sent > 0 && loss >= self.max_loss {
            Verdict::Loss
        } else if (sent as f64) < SENT_SHARE * target * seconds {
            Verdict::Short
        } else {
            Verdict::Pass
        };
        StepReport {
            step,
            target_pps: target,
            seconds,
            sent,
            received,
            unsent,
            sent_pps,
            received_pps,
            sent_mbps: mbps(sent_pps),
            received_mbps: mbps(received_pps),
            loss_percent: loss * 100.0,
            latency: None,
            generator_cpu,
            verdict,
        }
    }
}

/// The decisions of the `--rate max` search, apart from running steps: an exponential ramp from
/// the start rate until a step fails, then bisection between the best passing and the lowest
/// failing rate until they are within `precision`; halving instead if nothing passed yet. A
/// failed step is run again first, and only a second failure counts: on a shared machine one
/// stall of another process can lose a burst of packets.
#[derive(Debug, Clone)]
pub struct Bisection {
    start: f64,
    precision: f64,
    confirm: bool,
    floor: f64,
    pass: Option<f64>,
    fail: Option<f64>,
    confirming: bool,
}

impl Bisection {
    /// A search for `allocations` allocations: it starts at `search.start_pps` total (at
    /// least 10 packets/s per allocation) and ends rather than go below 1 per allocation.
    pub fn new(search: &Search, allocations: usize) -> Self {
        Self {
            start: search.start_pps.max(10.0 * allocations as f64),
            precision: search.precision,
            confirm: search.confirm_failures,
            floor: allocations as f64,
            pass: None,
            fail: None,
            confirming: false,
        }
    }

    /// The rate of the first step.
    pub fn first(&self) -> f64 {
        self.start
    }

    /// The next rate after a step at `target` passed or not; `None` when the search is done.
    pub fn next(&mut self, target: f64, passed: bool) -> Option<f64> {
        if !passed && self.confirm && !self.confirming {
            self.confirming = true;
            return Some(target);
        }
        self.confirming = false;
        if passed {
            self.pass = Some(self.pass.map_or(target, |p| p.max(target)));
        } else {
            self.fail = Some(self.fail.map_or(target, |f| f.min(target)));
        }
        let next = match (self.pass, self.fail) {
            (_, None) => target * 2.0,
            (None, Some(f)) => f / 2.0,
            (Some(p), Some(f)) if (f - p) / p <= self.precision => return None,
            (Some(p), Some(f)) => (p + f) / 2.0,
        };
        (self.floor..=CEILING_PPS).contains(&next).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a server that passes every rate up to `limit`; `flaky` rates
    /// fail once (a stall) and pass when run again.
    fn search(limit: f64, flaky: &[f64], confirm: bool) -> (Vec<f64>, Option<f64>) {
        let config = Search {
            start_pps: 1000.0,
            confirm_failures: confirm,
            ..Search::default()
        };
        let mut plan = Bisection::new(&config, 1);
        let (mut target, mut tried) = (plan.first(), Vec::new());
        let mut stalled = Vec::new();
        while tried.len() < 60 {
            tried.push(target);
            let stall = flaky.contains(&target) && !stalled.contains(&target);
            if stall {
                stalled.push(target);
            }
            let passed = target <= limit && !stall;
            match plan.next(target, passed) {
                Some(t) => target = t,
                None => break,
            }
        }
        (tried, plan.pass)
    }

    #[test]
    fn ramps_then_bisects_to_within_precision() {
        let (tried, best) = search(50_000.0, &[], true);
        assert_eq!(&tried[..7], &[1e3, 2e3, 4e3, 8e3, 16e3, 32e3, 64e3]);
        assert_eq!(tried[7], 64e3, "a failure is confirmed once");
        let best = best.unwrap();
        assert!(
            (50_000.0 / 1.05..=50_000.0).contains(&best),
            "{best} ({tried:?})"
        );
        assert!(tried.len() < 20, "{tried:?}");
    }

    #[test]
    fn one_stall_does_not_end_the_ramp() {
        let (_, best) = search(50_000.0, &[8e3], true);
        assert!(best.unwrap() > 45_000.0);
        let (_, without) = search(50_000.0, &[8e3], false);
        assert!(
            without.unwrap() < 8e3,
            "without confirmation the stall caps the search"
        );
    }

    #[test]
    fn halves_when_the_first_step_fails_and_stops_at_the_floor() {
        let (tried, best) = search(300.0, &[], false);
        assert_eq!(&tried[..3], &[1000.0, 500.0, 250.0]);
        assert!(best.unwrap() >= 250.0);
        let (tried, best) = search(0.0, &[], false);
        assert_eq!(best, None);
        assert!(tried.len() <= 11, "{tried:?}");
    }
}
