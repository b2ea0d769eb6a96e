//! The soak, shared by the benchmark (`crates/cli/benches/soak.rs`, run by hand: 1,000
//! allocations × 50 packets/s for 10 minutes) and its CI smoke (`bench_smoke.rs`: 50 for 20 s).
//!
//! What it sets up, all as real processes of the binary cargo built:
//! 1. `cloudproxy control` on SQLite in a scratch directory;
//! 2. `cloudproxy relay --config` governed by it: a static-pool relay in Japan (so every
//!    allocation is Force UDP: admitted, leased and metered centrally), usage reported every
//!    second;
//! 3. an app enabled for Force UDP there (tier `audio_only`, one proxy user per channel,
//!    room for twice the allocations in channels, so churn never meets the quota);
//! 4. `cloudproxy bench --app …` with one user token per allocation (channel `soak-<i>`,
//!    uid `i`), at a fixed rate, with join/leave churn (`--churn`): deleted allocations are
//!    replaced by new users.
//!
//! What it reads: the relay's RSS (`VmRSS` of `/proc/<pid>/status`) when idle, `warmup`
//! seconds after sending began (every allocation up, the data path's buffers touched: the
//! *start*), once a second while sending (the maximum), one second before sending ends (the
//! *end*, with the same number of allocations as the start) and after the run; the relay's
//! `cloudproxy_allocations` after the bench deleted its allocations; and the app's usage at
//! the control plane (`GET /v1/apps/{id}/usage`) once the relay has no report pending.
//!
//! How metered bytes compare with the traffic: the relay meters the payload of every
//! ChannelData it accepts from a client and of every datagram it accepts from a peer for a
//! client (`cloudproxy_proto::Server`: `alloc.bytes += len` on both paths), and nothing else
//! (no headers, no STUN). With `sent` probes sent by the bench, `peer` received by its echo
//! peer and `received` back: client → peer accepted is in `[peer, sent]`, peer → client
//! accepted in `[received, peer]`, so metered bytes are in
//! `[size × (received + peer), size × (sent + peer)]` — exactly `2 × size × sent` when nothing
//! was lost.

#![allow(dead_code)] // the benchmark and the smoke use different parts

use std::fmt;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::control::{start_control_on, ControlProc};
use crate::common::{
    cloudproxy_bin, http, metric_i64, metrics_text, reserve_ports, rss_kib, series_value,
    wait_for_listeners, ChildGuard, TempDir,
};

const OPERATOR: &str = "operator-key-soak-0123456789";
const RELAY_KEY: &str = "relay-key-soak-0123456789";
/// How long a start-up step (a process, a registration, a sync) may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// The relay's usage report interval.
const USAGE_INTERVAL_SECS: u64 = 1;

/// One soak run.
#[derive(Debug, Clone)]
pub(crate) struct Soak {
    pub allocations: usize,
    /// Sending time.
    pub seconds: u64,
    /// Percent of the allocations replaced per minute.
    pub churn_percent: f64,
    /// Per allocation.
    pub pps: f64,
    pub size: usize,
    /// RSS "at start" is read this many seconds after sending began.
    pub warmup: u64,
    /// Give each set-up request this long (UDP retransmits within it).
    pub setup_timeout: u64,
    /// More flags for the relay (e.g. the XDP fast path).
    pub relay_flags: Vec<String>,
}

impl Soak {
    /// The soak: 1,000 allocations at the audio rate for 10 minutes, 5% churn a minute.
    pub(crate) fn full() -> Self {
        Self {
            allocations: 1000,
            seconds: 600,
            churn_percent: 5.0,
            pps: 50.0,
            size: 160,
            warmup: 10,
            setup_timeout: 10,
            relay_flags: Vec::new(),
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub(crate) struct SoakReport {
    pub soak: Soak,
    /// The bench's JSON report.
    pub bench: Value,
    pub setup_up: u64,
    pub setup_failed: u64,
    pub sent: u64,
    pub received: u64,
    pub peer_received: u64,
    pub loss_percent: f64,
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub joined: u64,
    pub join_failed: u64,
    pub left: u64,
    pub released: u64,
    pub release_failed: u64,
    pub rss_idle_kib: u64,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_max_kib: u64,
    pub rss_after_kib: u64,
    /// Seconds into sending of the start and end readings.
    pub rss_start_at: u64,
    pub rss_end_at: u64,
    /// RSS every minute of sending (KiB), for the trend.
    pub rss_by_minute: Vec<u64>,
    /// Seconds of sending with any loss (from the bench's per-second progress), and the worst.
    pub lossy_seconds: u64,
    pub worst_second_loss_percent: f64,
    /// `cloudproxy_allocations` at the start and end readings, and after the run.
    pub allocations_start: i64,
    pub allocations_end: i64,
    pub allocations_after: i64,
    /// How long after the bench exited `cloudproxy_allocations` read its final value.
    pub allocations_after_wait: Duration,
    pub allocations_created: i64,
    /// Relay CPU while sending, in cores (user + system).
    pub relay_cpu_cores: f64,
    pub unchecked_admissions: i64,
    pub send_dropped: i64,
    /// Packets the kernel forwarded (XDP fast path): client → peer, peer → client.
    pub fastpath_packets: (i64, i64),
    /// The relay said its fast path is off (and why), if it was asked for one.
    pub fastpath_off: Option<String>,
    /// Event-loop ticks later than 100 ms (`cloudproxy_event_loop_stalls_total`).
    pub event_loop_stalls: i64,
    /// The relay's first "event loop stalled" warnings (lag, CPU time, context switches).
    pub stall_log: Vec<String>,
    /// Datagrams the kernel dropped for a full receive buffer (`/proc/net/udp`) on the relay's
    /// UDP listeners (the client side) and on its relayed sockets (the peer side), and on any
    /// other loopback UDP socket (the bench's and its echo peer's), during the run.
    pub drops_listener: u64,
    pub drops_relayed: u64,
    pub drops_other: u64,
    pub metered_bytes: u64,
    pub metered_seconds: u64,
    pub metered_peak: u64,
    pub expected_bytes_low: u64,
    pub expected_bytes_high: u64,
    /// Allocation-seconds the bench held: allocations × sending time (set-up and deletion
    /// add a little).
    pub held_seconds_approx: u64,
    pub usage_reports_pending: i64,
}

struct RelayProc {
    udp: SocketAddr,
    metrics: SocketAddr,
    relay_ports: (u16, u16),
    guard: ChildGuard,
}

fn start_control(dir: &TempDir) -> ControlProc {
    let addr = format!("127.0.0.1:{}", reserve_ports(1, true)[0]);
    let db = format!("sqlite:{}", dir.0.join("control.db").display());
    start_control_on(addr, &db, OPERATOR, RELAY_KEY, &[])
}

/// A static-pool relay in Japan governed by `control`, with relay ports for `allocations`
/// (and the churn's replacements, whose ports are freed as they go).
fn start_relay(control: &ControlProc, dir: &TempDir, soak: &Soak) -> RelayProc {
    let allocations = soak.allocations;
    // The relay key may publish only addresses inside the edge's CIDRs.
    control.ok(
        "PUT",
        "/v1/edges/soak-1/cidrs",
        json!({"cidrs": ["127.0.0.0/8"]}),
    );
    let config = dir.0.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[control]\nurl = \"http://{}\"\nkey = \"{RELAY_KEY}\"\nedge_id = \"soak-1\"\n\
             region = \"japan\"\npool = \"static\"\ncapacity_kbps = 100000000\n\
             sync_interval_secs = 1\nusage_interval_secs = {USAGE_INTERVAL_SECS}\n",
            control.addr
        ),
    )
    .unwrap();
    let ports = reserve_ports(4, true);
    let relay_ports = reserve_ports((allocations + allocations / 5 + 64) as u16, false);
    let (low, high) = (relay_ports[0], *relay_ports.last().unwrap());
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.arg("relay")
        .args(["--config", config.to_str().unwrap()])
        .args(["--udp", &format!("127.0.0.1:{}", ports[0])])
        .args(["--tcp", &format!("127.0.0.1:{}", ports[1])])
        .args(["--tls", &format!("127.0.0.1:{}", ports[2])])
        .args(["--metrics", &format!("127.0.0.1:{}", ports[3])])
        .args(["--relay-ip", "127.0.0.1", "--allow-peer", "127.0.0.1/32"])
        .args(["--relay-ports", &format!("{low}-{high}")])
        .args(&soak.relay_flags)
        .env("RUST_LOG", "warn");
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy relay", cmd).unwrap();
    let found = wait_for_listeners(&mut guard, &lines, &["udp", "metrics"])
        .unwrap_or_else(|e| panic!("relay did not start: {e}\n{}", guard.output.text()));
    let get = |k: &str| found.iter().find(|(n, _)| n == k).unwrap().1;
    RelayProc {
        udp: get("udp"),
        metrics: get("metrics"),
        relay_ports: (low, high),
        guard,
    }
}

/// Registers an app, enables it for Force UDP in Japan, and returns `APP_ID:KEY_ID:SECRET`.
fn enable_app(control: &ControlProc, relay: &RelayProc, allocations: usize) -> (String, String) {
    let c = &control.addr;
    // The approval reserves capacity of the region's static relays: wait for ours.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = http(c, "GET", "/v1/allowlist/japan?format=csv", None, "");
        if list.contains(&format!(",udp,{}", relay.udp.port())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not register: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let app = control.create_app("soak");
    let form = json!({"region": "japan", "sdk": "native", "use_case": "soak",
        "max_concurrent_channels": 2 * allocations + 16, "max_users_per_channel": 2,
        "max_proxy_users_per_channel": 1, "quality": "audio_only", "mode": "force_udp"});
    let request = control.enable(&app.app_id, form);
    assert_eq!(request["state"], "active", "{request}");
    let key = app.joined();
    (app.app_id, key)
}

/// Waits until the relay has synced the app: one allocation set up and deleted, no data.
fn wait_for_sync(relay: &RelayProc, app: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = Command::new(cloudproxy_bin())
            .args(["bench", "--server", &relay.udp.to_string(), "--app", app])
            .args(["--user", "sync-probe", "--allocations", "1"])
            .args(["--setup-only", "--hold", "0", "--quiet", "--json"])
            .output()
            .expect("run cloudproxy bench");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never accepted the app's tokens:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A series' value from the relay's OpenMetrics text (labels included in `name`).
fn metric(relay: &RelayProc, name: &str) -> i64 {
    metric_i64(relay.metrics, name)
}

/// [`metric`], 0 when the series is absent.
fn metric_or_zero(relay: &RelayProc, name: &str) -> i64 {
    series_value(&metrics_text(relay.metrics), name).unwrap_or(0.0) as i64
}

/// User + system CPU time of a process (clock ticks of 10 ms, Linux's USER_HZ).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may contain spaces) end at the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Receive-buffer drops of every IPv4 UDP socket now: (listener, relayed, other) for `relay`.
/// Sockets that closed take their counts with them, so read this while they are open.
fn udp_drops(relay: &RelayProc) -> (u64, u64, u64) {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let (low, high) = relay.relay_ports;
    let mut drops = (0, 0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = f
            .get(1)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        let n: u64 = f.last().and_then(|d| d.parse().ok()).unwrap_or(0);
        match port {
            Some(p) if p == relay.udp.port() => drops.0 += n,
            Some(p) if (low..=high).contains(&p) => drops.1 += n,
            _ => drops.2 += n,
        }
    }
    drops
}

/// Runs the soak and measures it. Panics only when something could not be run at all; the
/// figures are for the caller to judge.
pub(crate) fn run(soak: &Soak) -> SoakReport {
    let dir = TempDir::new("soak");
    let control = start_control(&dir);
    let relay = start_relay(&control, &dir, soak);
    let (app_id, app) = enable_app(&control, &relay, soak.allocations);
    wait_for_sync(&relay, &app);
    let pid = relay.guard.pid();
    let rss_idle_kib = rss_kib(pid);
    let drops_before = udp_drops(&relay);

    let mut cmd = Command::new(cloudproxy_bin());
    cmd.arg("bench")
        .args([
            "--server",
            &relay.udp.to_string(),
            "--app",
            &app,
            "--user",
            "soak",
        ])
        .args(["--allocations", &soak.allocations.to_string()])
        .args([
            "--rate",
            &soak.pps.to_string(),
            "--size",
            &soak.size.to_string(),
        ])
        .args(["--duration", &soak.seconds.to_string()])
        .args(["--churn", &soak.churn_percent.to_string()])
        .args(["--setup-timeout", &soak.setup_timeout.to_string()])
        .args(["--json"])
        .env("NO_COLOR", "1");
    let (mut bench, _stdout) = ChildGuard::spawn("cloudproxy bench", cmd).unwrap();
    // Bounded: set-up (at most a set-up timeout per allocation in 64 parallel lanes), the
    // sending time, the release.
    let limit = Duration::from_secs(
        soak.seconds + 120 + soak.setup_timeout * (soak.allocations as u64 / 64 + 2),
    );
    let started = Instant::now();
    let (mut seconds_seen, mut start, mut end) = (0u64, None, None);
    let (mut rss_max_kib, mut cpu0) = (0u64, None);
    let mut drops = drops_before;
    let mut rss_by_minute = Vec::new();
    let mut cpu_end = Duration::ZERO;
    let status = loop {
        if let Some(status) = bench.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < limit,
            "the bench did not finish within {limit:?}:\n{}",
            bench.output.tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
        // One progress line a second while sending: "[ 12.0s] sent 50000 pps, ...".
        let seen = bench
            .output
            .text()
            .lines()
            .filter(|l| l.contains("] sent "))
            .count() as u64;
        if seen > seconds_seen {
            seconds_seen = seen;
            let rss = rss_kib(pid);
            rss_max_kib = rss_max_kib.max(rss);
            if seen.is_multiple_of(60) {
                rss_by_minute.push(rss);
            }
            let sample = (seen, rss, metric(&relay, "cloudproxy_allocations"));
            cpu0.get_or_insert((seen, cpu_time(pid)));
            cpu_end = cpu_time(pid);
            if start.is_none() && seen >= soak.warmup.min(soak.seconds) {
                start = Some(sample);
            }
            // The last line comes as sending stops, and the deletions follow within a second:
            // the end is read a second before, with every allocation still up.
            if seen < soak.seconds {
                end = Some(sample);
                // Before the bench's sockets close (and take their counts with them).
                drops = udp_drops(&relay);
            }
        }
    };
    let output = bench.output.text();
    assert!(status.success(), "the bench failed ({status}):\n{output}");
    let line = output
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON report in:\n{output}"));
    let report: Value = serde_json::from_str(line).expect("the report is JSON");
    // "[ 12.0s] sent 50000 pps, received 49990 pps, loss 0.02%, 10 replaced"
    let per_second: Vec<f64> = output
        .lines()
        .filter(|l| l.contains("] sent "))
        .filter_map(|l| l.split("loss ").nth(1)?.split('%').next()?.parse().ok())
        .collect();
    let lossy_seconds = per_second.iter().filter(|&&l| l > 0.0).count() as u64;
    let worst_second_loss_percent = per_second.iter().copied().fold(0.0, f64::max);
    let start = start.expect("RSS was read at the start");
    let end = end.expect("RSS was read at the end");
    let relay_cpu_cores = match cpu0 {
        Some((first, c0)) if end.0 > first => (cpu_end - c0).as_secs_f64() / (end.0 - first) as f64,
        _ => 0.0,
    };

    // The bench waited for each deletion's answer; the gauge is published every 250 ms.
    let exited = Instant::now();
    let mut allocations_after = metric(&relay, "cloudproxy_allocations");
    while allocations_after != 0 && exited.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
        allocations_after = metric(&relay, "cloudproxy_allocations");
    }
    let allocations_after_wait = exited.elapsed();
    let rss_after_kib = rss_kib(pid);

    // Usage: every allocation has ended, so its last bytes are in the relay's period; wait
    // for two report intervals, then until nothing is pending and the figure holds still.
    std::thread::sleep(Duration::from_secs(2 * USAGE_INTERVAL_SECS + 1));
    let deadline = Instant::now() + PATIENCE;
    let mut metered = control.usage(&app_id, "force_udp");
    loop {
        std::thread::sleep(Duration::from_secs(USAGE_INTERVAL_SECS * 2));
        let pending = metric(&relay, "cloudproxy_usage_reports_pending");
        let again = control.usage(&app_id, "force_udp");
        if (pending == 0 && again == metered) || Instant::now() > deadline {
            metered = again;
            break;
        }
        metered = again;
    }

    let n = |path: &str| report.pointer(path).and_then(Value::as_f64).unwrap_or(0.0);
    let u = |path: &str| n(path) as u64;
    let (sent, received, peer) = (
        u("/result/sent"),
        u("/result/received"),
        u("/peer_received"),
    );
    let size = soak.size as u64;
    SoakReport {
        soak: soak.clone(),
        setup_up: u("/setup/up"),
        setup_failed: u("/setup/failed"),
        sent,
        received,
        peer_received: peer,
        loss_percent: n("/result/loss_percent"),
        rtt_p50_ms: n("/result/latency/p50_ms"),
        rtt_p99_ms: n("/result/latency/p99_ms"),
        joined: u("/churn/joined"),
        join_failed: u("/churn/join_failed"),
        left: u("/counters/left"),
        released: u("/counters/released"),
        release_failed: u("/counters/release_failed"),
        rss_idle_kib,
        rss_start_kib: start.1,
        rss_end_kib: end.1,
        rss_max_kib,
        rss_after_kib,
        rss_start_at: start.0,
        rss_end_at: end.0,
        rss_by_minute,
        lossy_seconds,
        worst_second_loss_percent,
        allocations_start: start.2,
        allocations_end: end.2,
        allocations_after,
        allocations_after_wait,
        allocations_created: metric(&relay, "cloudproxy_allocations_created_total"),
        relay_cpu_cores,
        unchecked_admissions: metric(&relay, "cloudproxy_control_unchecked_admissions_total"),
        send_dropped: metric(&relay, "cloudproxy_send_dropped_total"),
        event_loop_stalls: metric(&relay, "cloudproxy_event_loop_stalls_total"),
        fastpath_packets: (
            metric_or_zero(
                &relay,
                "cloudproxy_fastpath_packets_total{direction=\"client_to_peer\"}",
            ),
            metric_or_zero(
                &relay,
                "cloudproxy_fastpath_packets_total{direction=\"peer_to_client\"}",
            ),
        ),
        fastpath_off: relay
            .guard
            .output
            .text()
            .lines()
            .find(|l| l.contains("XDP fast path off"))
            .map(str::to_owned),
        stall_log: relay
            .guard
            .output
            .text()
            .lines()
            .filter(|l| l.contains("event loop stalled"))
            .take(20)
            .map(str::to_owned)
            .collect(),
        drops_listener: drops.0.saturating_sub(drops_before.0),
        drops_relayed: drops.1.saturating_sub(drops_before.1),
        drops_other: drops.2.saturating_sub(drops_before.2),
        metered_bytes: metered.bytes,
        metered_seconds: metered.seconds,
        metered_peak: metered.peak,
        expected_bytes_low: size * (received + peer),
        expected_bytes_high: size * (sent + peer),
        held_seconds_approx: (soak.allocations as f64 * n("/result/seconds")) as u64,
        usage_reports_pending: metric(&relay, "cloudproxy_usage_reports_pending"),
        bench: report,
    }
}

impl SoakReport {
    /// RSS at the end relative to the start, in percent.
    pub(crate) fn rss_growth_percent(&self) -> f64 {
        (self.rss_end_kib as f64 / self.rss_start_kib.max(1) as f64 - 1.0) * 100.0
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.soak;
        writeln!(
            f,
            "soak: {} allocations × {} pps × {} B for {} s, churn {}%/min, Force UDP through a \
             relay governed by a control plane",
            s.allocations, s.pps, s.size, s.seconds, s.churn_percent
        )?;
        writeln!(
            f,
            "set-up           {} up, {} failed",
            self.setup_up, self.setup_failed
        )?;
        writeln!(
            f,
            "churn            {} joined, {} left, {} joins failed",
            self.joined, self.left, self.join_failed
        )?;
        writeln!(
            f,
            "loss             {:.4}% ({} sent, {} received, {} at the echo peer); rtt p50 {:.3} \
             ms, p99 {:.3} ms",
            self.loss_percent,
            self.sent,
            self.received,
            self.peer_received,
            self.rtt_p50_ms,
            self.rtt_p99_ms
        )?;
        writeln!(
            f,
            "loss by second   {} of {} seconds got fewer echoes than they sent (an echo late \
             by a second counts there too); the worst {:.2}%",
            self.lossy_seconds, s.seconds, self.worst_second_loss_percent
        )?;
        writeln!(
            f,
            "relay RSS        idle {} KiB; start {} KiB (at {} s, {} allocations); end {} KiB (at \
             {} s, {} allocations): {:+.1}%; max {} KiB; after the run {} KiB",
            self.rss_idle_kib,
            self.rss_start_kib,
            self.rss_start_at,
            self.allocations_start,
            self.rss_end_kib,
            self.rss_end_at,
            self.allocations_end,
            self.rss_growth_percent(),
            self.rss_max_kib,
            self.rss_after_kib
        )?;
        if !self.rss_by_minute.is_empty() {
            writeln!(f, "relay RSS/min    {:?} KiB", self.rss_by_minute)?;
        }
        writeln!(
            f,
            "relay CPU        {:.2} cores while sending; send dropped {}; unchecked admissions {}",
            self.relay_cpu_cores, self.send_dropped, self.unchecked_admissions
        )?;
        writeln!(
            f,
            "event loops      {} ticks later than 100 ms",
            self.event_loop_stalls
        )?;
        if self.fastpath_packets != (0, 0) || self.fastpath_off.is_some() {
            writeln!(
                f,
                "fast path        {} client->peer, {} peer->client forwarded in the kernel{}",
                self.fastpath_packets.0,
                self.fastpath_packets.1,
                self.fastpath_off
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            )?;
        }
        for l in &self.stall_log {
            writeln!(f, "  {l}")?;
        }
        writeln!(
            f,
            "kernel drops     {} at the relay's listeners, {} at its relayed sockets, {} at \
             other UDP sockets (the bench's, its echo peer's, other processes')",
            self.drops_listener, self.drops_relayed, self.drops_other
        )?;
        writeln!(
            f,
            "allocations      {} at the end ({:.1} s after the bench exited); {} created in \
             all; {} deleted by the bench, {} deletions failed",
            self.allocations_after,
            self.allocations_after_wait.as_secs_f64(),
            self.allocations_created,
            self.released,
            self.release_failed
        )?;
        let exact = if self.expected_bytes_low == self.expected_bytes_high {
            format!("{}", self.expected_bytes_low)
        } else {
            format!("{}..={}", self.expected_bytes_low, self.expected_bytes_high)
        };
        writeln!(
            f,
            "usage metered    {} bytes (payload relayed, both directions: expected {exact}); {} \
             allocation-seconds (held ≈ {}); peak {}; reports pending {}",
            self.metered_bytes,
            self.metered_seconds,
            self.held_seconds_approx,
            self.metered_peak,
            self.usage_reports_pending
        )
    }
}
