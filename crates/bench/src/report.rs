//! What a run found: serializable for `--json`, and readable as text.
//!
//! Rates count ChannelData packets the generator sent to the server (`sent`) and echoes that
//! came back (`received`); the relay forwarded each received packet twice (client → peer and
//! peer → client). Mbps count payload bits only, without ChannelData, UDP or IP headers.
//! Latency is the round trip generator → relay → echo peer → relay → generator.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::config::Transport;
use crate::histogram::Histogram;

/// What a run tells its caller as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A progress line, about once a second.
    Progress(String),
    /// Every allocation that could be set up is up and idle (`--setup-only`): now is the time
    /// to read the server's memory use.
    Ready {
        /// Allocations set up and held.
        up: usize,
        /// Allocations the run asked for.
        requested: usize,
    },
    /// A step of the `--rate max` search ended (latency is filled in only in the final report).
    Step(StepReport),
}

/// Data-path events other than plain sends and receipts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataCounters {
    /// `sendmmsg` calls that failed (e.g. the server's port went away).
    pub send_errors: u64,
    /// `recvmmsg` calls that failed, e.g. with an ICMP port unreachable reported on the socket.
    pub receive_errors: u64,
    /// TCP/TLS connections the server closed (or that failed) during the run.
    pub closed: u64,
    /// Frames that were not our probes.
    pub foreign: u64,
    /// Probes that came back on another allocation's connection.
    pub misrouted: u64,
    /// Probes whose sequence number had already been received on that allocation.
    pub duplicates: u64,
    /// Refreshes (every 120 s per allocation) the server accepted.
    pub refresh_ok: u64,
    /// Refreshes the server refused or left unanswered (by the end of the run).
    pub refresh_failed: u64,
    /// UDP allocations deleted (Refresh, LIFETIME 0) at the end or when churn replaced them.
    pub released: u64,
    /// Deletions that failed or went unanswered (the server frees those when their lifetime
    /// runs out).
    pub release_failed: u64,
    /// Allocations replaced by churn during the run (each then deleted, see `released`).
    pub left: u64,
}

impl DataCounters {
    /// Adds another thread's counters to these.
    pub fn add(&mut self, o: &DataCounters) {
        self.send_errors += o.send_errors;
        self.receive_errors += o.receive_errors;
        self.closed += o.closed;
        self.foreign += o.foreign;
        self.misrouted += o.misrouted;
        self.duplicates += o.duplicates;
        self.refresh_ok += o.refresh_ok;
        self.refresh_failed += o.refresh_failed;
        self.released += o.released;
        self.release_failed += o.release_failed;
        self.left += o.left;
    }
}

/// Quantiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value recorded, exact.
    pub max_ms: f64,
    /// Values the quantiles are taken over.
    pub samples: u64,
}

impl Latency {
    /// The quantiles of a histogram of nanoseconds; `None` when it is empty.
    pub fn of(h: &Histogram) -> Option<Self> {
        let ms = |q: f64| h.quantile(q).map(|ns| ns as f64 / 1e6);
        Some(Self {
            p50_ms: ms(0.5)?,
            p99_ms: ms(0.99)?,
            p999_ms: ms(0.999)?,
            max_ms: h.max() as f64 / 1e6,
            samples: h.count(),
        })
    }
}

/// How a step of the `--rate max` search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Loss under the threshold at the target rate.
    Pass,
    /// Loss at or above the threshold.
    Loss,
    /// The generator could not send the target rate (CPU shared with the server, or a stream
    /// backlogged): this rate is beyond what this machine can measure.
    Short,
}

/// One constant-rate period.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's number: 0 for a fixed rate, the search's step index for `--rate max`.
    pub step: u16,
    /// Total packets per second asked of all allocations together.
    pub target_pps: f64,
    /// How long the step sent (the drain wait after it not included).
    pub seconds: f64,
    /// ChannelData packets sent during the step, all allocations.
    pub sent: u64,
    /// Echoes of this step's packets that came back, up to the end of the drain wait.
    pub received: u64,
    /// Due but not sent (socket buffer full, stream backlogged).
    pub unsent: u64,
    /// `sent` over `seconds`.
    pub sent_pps: f64,
    /// `received` over `seconds`.
    pub received_pps: f64,
    /// Payload megabits per second sent (headers not counted).
    pub sent_mbps: f64,
    /// Payload megabits per second received back (headers not counted).
    pub received_mbps: f64,
    /// `(sent − received) / sent`, in percent.
    pub loss_percent: f64,
    /// Round-trip times of the step's probes; filled in only in the final report.
    pub latency: Option<Latency>,
    /// CPU cores this process used during the step (user + system time / wall time).
    pub generator_cpu: f64,
    /// Pass, loss or short, against the loss threshold and the target rate.
    pub verdict: Verdict,
}

/// Allocation set-up.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// Allocations the run asked for.
    pub requested: usize,
    /// Allocations set up (Allocate and ChannelBind succeeded).
    pub up: usize,
    /// Allocations whose set-up failed ([`SetupReport::failures`] says why).
    pub failed: usize,
    /// Not tried because every attempt so far had failed.
    pub not_attempted: usize,
    /// Wall time of the whole set-up phase.
    pub seconds: f64,
    /// Allocations set up per second (successful ones over the whole set-up time).
    pub rate_per_s: f64,
    /// Time from first request to ChannelBind success, per allocation.
    pub time: Option<Latency>,
    /// Failures grouped by cause.
    pub failures: BTreeMap<String, u64>,
}

/// Join/leave churn of a fixed-rate run ([`crate::churn`]).
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    /// The churn asked for, in percent of the allocations per minute.
    pub percent_per_minute: f64,
    /// New allocations set up during the run, each replacing an old one.
    pub joined: u64,
    /// Replacements whose set-up failed.
    pub join_failed: u64,
    /// Those failures counted per cause ([`crate::SetupError::key`]).
    pub failures: BTreeMap<String, u64>,
}

/// What the run was asked to do: which server, the load offered it, and the generator's
/// threads. The first line of the text report.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// The server measured (a TURN server, or the plain forwarder of a raw run).
    pub server: String,
    /// How the generator reached it.
    pub transport: Transport,
    /// `fixed`, `max` or `setup-only`.
    pub mode: &'static str,
    /// ChannelData payload size, probe header included.
    pub payload_bytes: usize,
    /// Allocations asked for (see [`SetupReport::up`] for those set up).
    pub allocations: usize,
    /// The per-allocation rate of a fixed-rate run.
    pub per_allocation_pps: Option<f64>,
    /// Sending and receiving worker threads.
    pub threads: usize,
    /// Echo peer threads.
    pub echo_threads: usize,
}

/// The whole run: what it was asked to do, then what happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run. Flattened: its fields are the first keys of the JSON report, as the
    /// scripts that read it expect.
    #[serde(flatten)]
    pub workload: Workload,
    /// How the allocations' set-up went.
    pub setup: SetupReport,
    /// The fixed-rate step, or the best passing step of `--rate max`.
    pub result: Option<StepReport>,
    /// Every step (one for a fixed rate).
    pub steps: Vec<StepReport>,
    /// Join/leave churn, when the run had some.
    pub churn: Option<ChurnReport>,
    /// Datagrams that reached the echo peer (client → peer direction), all steps.
    pub peer_received: u64,
    /// Data-path events of every thread, summed over the run.
    pub counters: DataCounters,
}

impl fmt::Display for StepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target {:>9.0} pps | sent {:>9.0} pps {:>8.2} Mbps | received {:>9.0} pps {:>8.2} \
             Mbps | loss {:>6.3}%",
            self.target_pps,
            self.sent_pps,
            self.sent_mbps,
            self.received_pps,
            self.received_mbps,
            self.loss_percent
        )?;
        if let Some(l) = &self.latency {
            write!(
                f,
                " | rtt p50 {:.3} p99 {:.3} p99.9 {:.3} ms",
                l.p50_ms, l.p99_ms, l.p999_ms
            )?;
        }
        write!(f, " | cpu {:.2} | {:?}", self.generator_cpu, self.verdict)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server {} over {}, {} allocation(s), {} B payloads, {} thread(s) + {} echo",
            self.server,
            self.transport,
            self.allocations,
            self.payload_bytes,
            self.threads,
            self.echo_threads
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.setup;
        let max = self.workload.mode == "max";
        writeln!(f, "{}", self.workload)?;
        write!(
            f,
            "set-up: {}/{} up in {:.3} s = {:.0} allocations/s",
            s.up, s.requested, s.seconds, s.rate_per_s
        )?;
        if let Some(t) = &s.time {
            write!(f, " (each p50 {:.2} ms, p99 {:.2} ms)", t.p50_ms, t.p99_ms)?;
        }
        writeln!(f)?;
        for (why, n) in &s.failures {
            writeln!(f, "  failed: {why} ×{n}")?;
        }
        if s.not_attempted > 0 {
            writeln!(f, "  not attempted: {}", s.not_attempted)?;
        }
        if max {
            for step in &self.steps {
                writeln!(f, "step {:>2}: {step}", step.step)?;
            }
        }
        if let Some(r) = &self.result {
            let what = if max {
                "max rate with loss under the threshold"
            } else {
                "result"
            };
            writeln!(f, "{what}:")?;
            writeln!(
                f,
                "  sent     {:>10.0} pps {:>9.2} Mbps ({} packets in {:.2} s)",
                r.sent_pps, r.sent_mbps, r.sent, r.seconds
            )?;
            writeln!(
                f,
                "  received {:>10.0} pps {:>9.2} Mbps ({} packets)",
                r.received_pps, r.received_mbps, r.received
            )?;
            writeln!(f, "  loss     {:.4}%", r.loss_percent)?;
            if let Some(l) = &r.latency {
                writeln!(
                    f,
                    "  rtt      p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
                )?;
            }
        } else if max {
            writeln!(f, "no step passed")?;
        }
        if let Some(churn) = &self.churn {
            writeln!(
                f,
                "churn: {}% per minute: {} joined, {} left, {} joins failed",
                churn.percent_per_minute, churn.joined, self.counters.left, churn.join_failed
            )?;
            for (why, n) in &churn.failures {
                writeln!(f, "  join failed: {why} ×{n}")?;
            }
        }
        let c = &self.counters;
        writeln!(
            f,
            "peer received {}; duplicates {}, misrouted {}, foreign {}, send errors {}, \
             closed {}, refreshes {} ok / {} failed, released {} ({} failed)",
            self.peer_received,
            c.duplicates,
            c.misrouted,
            c.foreign,
            c.send_errors,
            c.closed,
            c.refresh_ok,
            c.refresh_failed,
            c.released,
            c.release_failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u16, verdict: Verdict) -> StepReport {
        StepReport {
            step,
            target_pps: 1000.0,
            seconds: 2.0,
            sent: 2000,
            received: 1998,
            unsent: 0,
            sent_pps: 1000.0,
            received_pps: 999.0,
            sent_mbps: 1.28,
            received_mbps: 1.25,
            loss_percent: 0.1,
            latency: Some(Latency {
                p50_ms: 0.25,
                p99_ms: 1.5,
                p999_ms: 2.0,
                max_ms: 3.0,
                samples: 1998,
            }),
            generator_cpu: 0.5,
            verdict,
        }
    }

    fn report() -> Report {
        Report {
            workload: Workload {
                server: "127.0.0.1:3478".into(),
                transport: Transport::Udp,
                mode: "max",
                payload_bytes: 160,
                allocations: 2,
                per_allocation_pps: None,
                threads: 2,
                echo_threads: 1,
            },
            setup: SetupReport {
                requested: 2,
                up: 1,
                failed: 1,
                not_attempted: 0,
                seconds: 0.5,
                rate_per_s: 2.0,
                time: None,
                failures: BTreeMap::from([("Allocate: 401 Unauthorized".into(), 1)]),
            },
            result: Some(step(0, Verdict::Pass)),
            steps: vec![step(0, Verdict::Pass), step(1, Verdict::Loss)],
            churn: Some(ChurnReport {
                percent_per_minute: 5.0,
                joined: 3,
                join_failed: 0,
                failures: BTreeMap::new(),
            }),
            peer_received: 3998,
            counters: DataCounters {
                left: 3,
                ..DataCounters::default()
            },
        }
    }

    /// The JSON report's keys and their order are what `scripts/*.py` and the soak read: the
    /// run's parameters at the top level, then its outcome.
    #[test]
    fn json_keeps_its_flat_shape() {
        let step = r#"{"step":S,"target_pps":1000.0,"seconds":2.0,"sent":2000,"received":1998,"unsent":0,"sent_pps":1000.0,"received_pps":999.0,"sent_mbps":1.28,"received_mbps":1.25,"loss_percent":0.1,"latency":{"p50_ms":0.25,"p99_ms":1.5,"p999_ms":2.0,"max_ms":3.0,"samples":1998},"generator_cpu":0.5,"verdict":"V"}"#;
        let step = |n: &str, v: &str| step.replace(":S,", &format!(":{n},")).replace("\"V\"", v);
        let want = format!(
            r#"{{"server":"127.0.0.1:3478","transport":"udp","mode":"max","payload_bytes":160,"allocations":2,"per_allocation_pps":null,"threads":2,"echo_threads":1,"setup":{{"requested":2,"up":1,"failed":1,"not_attempted":0,"seconds":0.5,"rate_per_s":2.0,"time":null,"failures":{{"Allocate: 401 Unauthorized":1}}}},"result":{},"steps":[{},{}],"churn":{{"percent_per_minute":5.0,"joined":3,"join_failed":0,"failures":{{}}}},"peer_received":3998,"counters":{{"send_errors":0,"receive_errors":0,"closed":0,"foreign":0,"misrouted":0,"duplicates":0,"refresh_ok":0,"refresh_failed":0,"released":0,"release_failed":0,"left":3}}}}"#,
            step("0", "\"pass\""),
            step("0", "\"pass\""),
            step("1", "\"loss\""),
        );
        assert_eq!(serde_json::to_string(&report()).unwrap(), want);
    }

    #[test]
    fn text_starts_with_what_was_run() {
        let text = report().to_string();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("server 127.0.0.1:3478 over udp, 2 allocation(s), 160 B payloads, 2 thread(s) + 1 echo")
        );
        assert_eq!(
            lines.next(),
            Some("set-up: 1/2 up in 0.500 s = 2 allocations/s")
        );
        assert!(text.contains("step  1: target"), "{text}");
        assert!(
            text.contains("max rate with loss under the threshold:"),
            "{text}"
        );
        assert!(
            text.contains("churn: 5% per minute: 3 joined, 3 left"),
            "{text}"
        );
    }
}
