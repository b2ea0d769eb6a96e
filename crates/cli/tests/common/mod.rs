//! Helpers for tests that drive real processes: our relay binary, coturn's `turnserver`,
//! `turnutils_peer` and `turnutils_uclient`.
//!
//! Every child is owned by a guard that kills it on drop, so a failing assertion never leaves a
//! process behind, and every run is bounded by a deadline, so a hang can never stall CI.
//! Ports come from below the kernel's ephemeral range (which the clients' own sockets use) and
//! are checked free before use; starting a server is retried on other ports if it fails.

#![allow(dead_code)] // each test binary uses a different subset

pub(crate) mod cdp;
pub(crate) mod control;
pub(crate) mod turn;
pub(crate) mod up;
pub(crate) mod web;
pub(crate) mod xdp_maps;

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) const LOCALHOST: &str = "127.0.0.1";

// ------------------------------------------------------------------------------------------
// Environment

pub(crate) use cloudproxy_testkit::process::in_ci;

/// Full path of `program` on `PATH`, if there is an executable file by that name.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `true` if coturn's tools are installed. If not: under CI this panics (a missing coturn must
/// fail the run, `.ci/run` installs it); elsewhere it prints a loud notice and the caller skips.
pub(crate) fn require_coturn(test: &str) -> bool {
    let missing: Vec<&str> = ["turnutils_uclient", "turnutils_peer", "turnserver"]
        .into_iter()
        .filter(|p| which(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!("{test}: coturn tools {missing:?} are not installed, and CI is set: failing");
    }
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!! SKIPPED {test}: {missing:?} not installed (apt-get install coturn).");
    eprintln!("!! This interop test did NOT run. Under CI=true it would fail instead.");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
    false
}

/// Interop tests run one at a time: each pushes thousands of packets through loopback, and two
/// at once on a 2-core machine make loss and timeouts that are not the relay's fault.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An XDP program on `lo` (generic mode) sees every loopback datagram of the process's other
/// tests, and the kernel's generic XDP path can hand a locally sent datagram on with only its
/// partial checksum, which the receiver then drops: a test that attaches one holds
/// [`loopback_exclusive`], and every other loopback test of that binary holds
/// [`loopback_shared`] (they still run in parallel with each other).
static LOOPBACK: RwLock<()> = RwLock::new(());

/// Loopback traffic while no XDP program is on `lo` (see [`LOOPBACK`]).
pub(crate) fn loopback_shared() -> RwLockReadGuard<'static, ()> {
    LOOPBACK
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `lo` to this test alone, for an XDP program on it (see [`LOOPBACK`]).
pub(crate) fn loopback_exclusive() -> RwLockWriteGuard<'static, ()> {
    LOOPBACK
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ------------------------------------------------------------------------------------------
// Ports

/// Ports handed out by this process, never reused within it.
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Where we look for ports: below the ephemeral range, which uclient's own sockets draw from.
fn port_window() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        (10_000, ephemeral_low - 1)
    } else {
        // Unusual kernel settings: fall back to the top of the port space.
        (61_000, 65_000)
    }
}

fn port_is_free(port: u16, tcp_too: bool) -> bool {
    let udp = UdpSocket::bind((LOCALHOST, port)).is_ok();
    udp && (!tcp_too || TcpListener::bind((LOCALHOST, port)).is_ok())
}

/// Reserves `n` consecutive ports, all free on 127.0.0.1 for UDP (and TCP if `tcp_too`) at the
/// time of the check. The start is spread by process id so parallel test processes rarely meet.
pub(crate) fn reserve_ports(n: u16, tcp_too: bool) -> Vec<u16> {
    static CURSOR: AtomicU16 = AtomicU16::new(0);
    let (low, high) = port_window();
    let span = high - low;
    assert!(n > 0 && n < span / 4);
    let seed = (std::process::id() as u64)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0),
        );
    let _ = CURSOR.compare_exchange(
        0,
        (seed % span as u64) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2_000 {
        let offset = CURSOR.fetch_add(n, Ordering::SeqCst) % (span - n);
        let start = low + offset;
        let ports: Vec<u16> = (start..start + n).collect();
        let mut taken = taken().lock().unwrap_or_else(|p| p.into_inner());
        if ports.iter().any(|p| taken.contains(p)) {
            continue;
        }
        if ports.iter().all(|&p| port_is_free(p, tcp_too)) {
            taken.extend(ports.iter().copied());
            return ports;
        }
    }
    panic!("could not find {n} free consecutive ports in {low}..{high}");
}

pub(crate) fn reserve_port() -> u16 {
    reserve_ports(1, true)[0]
}

// ------------------------------------------------------------------------------------------
// Processes: the workspace's test kit (kept under these names for the tests that use them)

#[allow(unused_imports)] // each test binary uses a different subset
pub(crate) use cloudproxy_testkit::process::{
    run_bounded, send_signal, wait_exit, BoundedRun, Captured, ChildGuard, TempDir,
};

/// The `summary` event among `cloudproxy join`'s JSON lines (its totals: sent, from_others,
/// lost, path...); panics with the whole output when there is none.
pub(crate) fn join_summary(output: &str) -> serde_json::Value {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary:\n{output}"))
}

// ------------------------------------------------------------------------------------------
// The relay under test

/// Options for `cloudproxy relay`.
#[derive(Debug, Clone)]
pub(crate) struct RelayOptions {
    pub secret: String,
    pub realm: String,
    /// `--allow-peer` values; empty means the relay's default (deny every peer).
    pub allow_peers: Vec<String>,
    /// How many relay ports to give it (`--relay-ports`).
    pub relay_port_count: u16,
    /// `--user-quota`; `None` keeps the relay's default (32 per credential, which covers
    /// uclient's 10 clients with RTCP pairs: 20 allocations under one username).
    pub user_quota: Option<u32>,
    pub extra_args: Vec<String>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            secret: "interop-secret".into(),
            realm: "example.org".into(),
            allow_peers: vec!["127.0.0.0/8".into()],
            relay_port_count: 100,
            user_quota: None,
            extra_args: Vec::new(),
        }
    }
}

/// A running relay (ours or coturn's) and where it listens.
pub(crate) struct Relay {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub relay_ports: (u16, u16),
    pub secret: String,
    pub process: ChildGuard,
}

impl Relay {
    pub(crate) fn logs(&self) -> String {
        self.process.output.text()
    }

    /// Panics with the relay's output if it has died.
    pub(crate) fn assert_alive(&mut self) {
        if let Some(status) = self.process.try_wait() {
            panic!(
                "relay exited with {status} during the test; its output:\n{}",
                self.process.output.tail(80)
            );
        }
    }
}

/// The binary under test, as cargo built it for this test target.
pub(crate) fn cloudproxy_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cloudproxy"))
}

/// How long a server gets to print its listener lines.
pub(crate) const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// Starts `cloudproxy relay` on fresh ports and waits (bounded) until it has printed a line for
/// each listener: `udp ADDR`, `tcp ADDR`, `tls ADDR`, `metrics ADDR`. Retries on other ports if
/// it exits early (e.g. a port was taken between our check and its bind).
pub(crate) fn start_cloudproxy(opts: &RelayOptions) -> Relay {
    let mut last_error = String::new();
    for attempt in 1..=3 {
        let listen = reserve_ports(4, true);
        let relay = reserve_ports(opts.relay_port_count, false);
        let (low, high) = (relay[0], *relay.last().expect("n > 0"));
        let addr = |p: u16| format!("{LOCALHOST}:{p}");
        let mut cmd = Command::new(cloudproxy_bin());
        cmd.arg("relay")
            .args(["--udp", &addr(listen[0])])
            .args(["--tcp", &addr(listen[1])])
            .args(["--tls", &addr(listen[2])])
            .args(["--metrics", &addr(listen[3])])
            .args(["--static-secret", &opts.secret])
            .args(["--realm", &opts.realm])
            .args(["--relay-ip", LOCALHOST])
            .args(["--relay-ports", &format!("{low}-{high}")]);
        for peer in &opts.allow_peers {
            cmd.args(["--allow-peer", peer]);
        }
        if let Some(quota) = opts.user_quota {
            cmd.args(["--user-quota", &quota.to_string()]);
        }
        cmd.args(&opts.extra_args);
        // Keep logs useful for a failure report without flooding.
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1");
        let description = format!("{cmd:?}");
        let (mut guard, lines) = match ChildGuard::spawn("cloudproxy relay", cmd) {
            Ok(g) => g,
            Err(e) => panic!("cannot start {}: {e}", cloudproxy_bin().display()),
        };
        match wait_for_listeners(&mut guard, &lines, &["udp", "tcp", "tls", "metrics"]) {
            Ok(found) => {
                let get = |k: &str| found.iter().find(|(n, _)| n == k).map(|(_, a)| *a);
                return Relay {
                    udp: get("udp").expect("waited for it"),
                    tcp: get("tcp").expect("waited for it"),
                    tls: get("tls"),
                    metrics: get("metrics"),
                    relay_ports: (low, high),
                    secret: opts.secret.clone(),
                    process: guard,
                };
            }
            Err(why) => {
                last_error = format!(
                    "attempt {attempt}: {why}\ncommand: {description}\noutput:\n{}",
                    guard.output.tail(40)
                );
                guard.kill();
                // Only an early exit (port clash?) is worth another try; a hang is not.
                if !why.starts_with("exited") {
                    break;
                }
            }
        }
    }
    panic!("cloudproxy relay did not come up:\n{last_error}");
}

/// Waits for `NAME ADDR` lines on stdout for every name in `names`.
pub(crate) fn wait_for_listeners(
    guard: &mut ChildGuard,
    lines: &mpsc::Receiver<String>,
    names: &[&str],
) -> Result<Vec<(String, SocketAddr)>, String> {
    let start = Instant::now();
    let mut found: Vec<(String, SocketAddr)> = Vec::new();
    while found.len() < names.len() {
        if let Some(status) = guard.try_wait() {
            return Err(format!(
                "exited with {status} before printing its listeners"
            ));
        }
        let left = STARTUP_DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "no listener lines for {:?} within {STARTUP_DEADLINE:?} (saw {found:?})",
                names
                    .iter()
                    .filter(|n| !found.iter().any(|(f, _)| f == *n))
                    .collect::<Vec<_>>()
            ));
        }
        match lines.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(line) => {
                if let Some((name, addr)) = parse_listener_line(&line) {
                    if names.contains(&name.as_str()) && !found.iter().any(|(n, _)| *n == name) {
                        found.push((name, addr));
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(found)
}

/// Parses `udp 127.0.0.1:3478` (also tolerating extra words after the address).
pub(crate) fn parse_listener_line(line: &str) -> Option<(String, SocketAddr)> {
    let mut words = line.split_whitespace();
    let name = words.next()?;
    let addr = words.next()?.parse().ok()?;
    Some((name.to_ascii_lowercase(), addr))
}

/// Starts coturn's own `turnserver` (UDP and TCP, no TLS), as a reference relay that validates
/// this harness: if uclient fails against coturn too, the fault is not our relay's.
pub(crate) fn start_coturn(opts: &RelayOptions, workdir: &Path) -> Relay {
    let listen = reserve_ports(2, true);
    let relay = reserve_ports(opts.relay_port_count, false);
    let (low, high) = (relay[0], *relay.last().expect("n > 0"));
    let mut cmd = Command::new("turnserver");
    cmd.arg("-n")
        .arg(format!("--listening-ip={LOCALHOST}"))
        .arg(format!("--relay-ip={LOCALHOST}"))
        .arg(format!("--listening-port={}", listen[0]))
        .arg(format!("--alt-listening-port={}", listen[1]))
        .arg("--use-auth-secret")
        .arg(format!("--static-auth-secret={}", opts.secret))
        .arg(format!("--realm={}", opts.realm))
        .arg(format!("--min-port={low}"))
        .arg(format!("--max-port={high}"))
        .arg("--no-cli")
        .arg("--no-tls")
        .arg("--no-dtls")
        .arg(format!(
            "--pidfile={}",
            workdir.join("turnserver.pid").display()
        ))
        .arg("--log-file=stdout")
        .arg("--simple-log");
    if opts.allow_peers.iter().any(|p| p.starts_with("127.")) {
        cmd.arg("--allow-loopback-peers");
    }
    let (mut guard, _lines) = ChildGuard::spawn("turnserver", cmd).expect("start turnserver");
    // It prints no single "ready" line; wait until its TCP listener accepts.
    let start = Instant::now();
    let addr: SocketAddr = format!("{LOCALHOST}:{}", listen[0]).parse().expect("addr");
    loop {
        if let Some(status) = guard.try_wait() {
            panic!(
                "turnserver exited with {status}:\n{}",
                guard.output.tail(40)
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < STARTUP_DEADLINE,
            "turnserver did not listen on {addr}:\n{}",
            guard.output.tail(40)
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The UDP listener comes up with the TCP one; give its threads a moment anyway.
    thread::sleep(Duration::from_millis(200));
    Relay {
        udp: addr,
        tcp: addr,
        tls: None,
        metrics: None,
        relay_ports: (low, high),
        secret: opts.secret.clone(),
        process: guard,
    }
}

// ------------------------------------------------------------------------------------------
// coturn's test peer and client

/// `turnutils_peer`: a UDP echo server, the peer uclient talks to through the relay.
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub process: ChildGuard,
}

impl Peer {
    /// Panics if the echo peer is gone: a run against a dead peer says nothing about the relay.
    pub(crate) fn assert_alive(&mut self) {
        if let Some(status) = self.process.try_wait() {
            panic!(
                "turnutils_peer on {} exited with {status} during the test (killed from outside?); \
                 its output:\n{}",
                self.addr,
                self.process.output.tail(20)
            );
        }
    }
}

/// Starts `turnutils_peer -L 127.0.0.1 -p PORT` and waits until it echoes a datagram.
pub(crate) fn start_peer() -> Peer {
    let mut last = String::new();
    for _ in 0..3 {
        let port = reserve_ports(1, false)[0];
        let mut cmd = Command::new("turnutils_peer");
        cmd.args(["-L", LOCALHOST, "-p", &port.to_string()]);
        let (mut guard, _lines) =
            ChildGuard::spawn("turnutils_peer", cmd).expect("start turnutils_peer");
        let addr: SocketAddr = format!("{LOCALHOST}:{port}").parse().expect("addr");
        match wait_for_echo(&mut guard, addr) {
            Ok(()) => {
                return Peer {
                    addr,
                    process: guard,
                }
            }
            Err(e) => last = format!("{e}\n{}", guard.output.tail(20)),
        }
    }
    panic!("turnutils_peer did not come up: {last}");
}

fn wait_for_echo(guard: &mut ChildGuard, addr: SocketAddr) -> Result<(), String> {
    let sock = UdpSocket::bind((LOCALHOST, 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while start.elapsed() < STARTUP_DEADLINE {
        if let Some(status) = guard.try_wait() {
            return Err(format!("turnutils_peer exited with {status}"));
        }
        let _ = sock.send_to(b"cloudproxy-harness-ping", addr);
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == addr && &buf[..n] == b"cloudproxy-harness-ping" {
                return Ok(());
            }
        }
    }
    Err(format!("no echo from {addr} within {STARTUP_DEADLINE:?}"))
}

/// How a uclient run reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientTransport {
    Udp,
    Tcp,
    Tls,
}

/// One `turnutils_uclient` run.
#[derive(Debug, Clone)]
pub(crate) struct Uclient {
    pub transport: ClientTransport,
    pub secret: String,
    pub user: String,
    pub clients: u32,
    pub messages: u32,
    pub length: u32,
    /// `-s`: Send/Data indications instead of ChannelData.
    pub send_indications: bool,
    /// `-c`: no RTCP allocations (by default every client also allocates an RTCP relay, with
    /// EVEN-PORT and RESERVATION-TOKEN).
    pub no_rtcp: bool,
    pub verbose: bool,
    pub deadline: Duration,
}

impl Uclient {
    /// The run described in the project README: 10 clients × 200 messages of 170 bytes.
    pub(crate) fn new(transport: ClientTransport, secret: &str) -> Self {
        Self {
            transport,
            secret: secret.to_owned(),
            user: "user".into(),
            clients: 10,
            messages: 200,
            length: 170,
            send_indications: false,
            no_rtcp: false,
            verbose: false,
            deadline: Duration::from_secs(60),
        }
    }

    pub(crate) fn args(&self, relay: &Relay, peer: SocketAddr) -> Vec<String> {
        let server = match self.transport {
            ClientTransport::Udp => relay.udp,
            ClientTransport::Tcp => relay.tcp,
            ClientTransport::Tls => relay.tls.expect("this relay has a TLS listener"),
        };
        let mut args: Vec<String> = Vec::new();
        match self.transport {
            ClientTransport::Udp => {}
            ClientTransport::Tcp => args.push("-t".into()),
            ClientTransport::Tls => args.extend(["-t".into(), "-S".into()]),
        }
        if self.send_indications {
            args.push("-s".into());
        }
        if self.no_rtcp {
            args.push("-c".into());
        }
        if self.verbose {
            args.push("-v".into());
        }
        args.extend([
            "-e".into(),
            peer.ip().to_string(),
            "-r".into(),
            peer.port().to_string(),
            "-W".into(),
            self.secret.clone(),
            "-u".into(),
            self.user.clone(),
            "-m".into(),
            self.clients.to_string(),
            "-n".into(),
            self.messages.to_string(),
            "-l".into(),
            self.length.to_string(),
            "-p".into(),
            server.port().to_string(),
            server.ip().to_string(),
        ]);
        args
    }

    pub(crate) fn run(&self, relay: &Relay, peer: SocketAddr) -> UclientReport {
        let args = self.args(relay, peer);
        let mut cmd = Command::new("turnutils_uclient");
        cmd.args(&args);
        let run = run_bounded("turnutils_uclient", cmd, self.deadline);
        let mut report = UclientReport::parse(&run.output);
        report.command = format!("turnutils_uclient {}", args.join(" "));
        report.run = Some(run);
        report
    }
}

/// What `turnutils_uclient` (coturn 4.6.1) said at the end of a run. Its closing lines are
///
/// ```text
/// 9: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=2000
/// 9: : start_mclient: tot_send_bytes ~ 340000, tot_recv_bytes ~ 340000
/// 9: : Total transmit time is 9
/// 9: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
/// ```
///
/// and errors look like `0: : ERROR: Cannot complete Allocation` or
/// `0: : channel bind: error 403 (Forbidden IP)` (followed by exit status 255).
#[derive(Debug, Clone, Default)]
pub(crate) struct UclientReport {
    pub sent: Option<u64>,
    pub received: Option<u64>,
    pub sent_bytes: Option<u64>,
    pub received_bytes: Option<u64>,
    pub lost: Option<u64>,
    pub send_dropped: Option<u64>,
    /// Lines that mention an error.
    pub errors: Vec<String>,
    pub command: String,
    pub run: Option<BoundedRun>,
}

impl UclientReport {
    pub(crate) fn parse(output: &str) -> Self {
        let mut r = Self::default();
        for line in output.lines() {
            // Drop the "<seconds>: : " prefix coturn's logger puts on every line.
            let text = line
                .split_once(": : ")
                .map(|(_, rest)| rest)
                .unwrap_or(line)
                .trim();
            if let Some(rest) = text.strip_prefix("start_mclient: tot_send_msgs=") {
                // Final totals (the periodic lines start with "msz=" and are skipped).
                r.sent = number_after(rest, "");
                r.received = number_after(rest, "tot_recv_msgs=");
            } else if let Some(rest) = text.strip_prefix("start_mclient: tot_send_bytes ~ ") {
                r.sent_bytes = number_after(rest, "");
                r.received_bytes = number_after(rest, "tot_recv_bytes ~ ");
            } else if let Some(rest) = text.strip_prefix("Total lost packets ") {
                r.lost = number_after(rest, "");
                r.send_dropped = number_after(rest, "total send dropped ");
            } else {
                let lower = text.to_ascii_lowercase();
                if lower.contains("error") || lower.contains("cannot") {
                    r.errors.push(text.to_owned());
                }
            }
        }
        r
    }

    /// uclient printed its closing statistics.
    pub(crate) fn completed(&self) -> bool {
        self.sent.is_some() && self.received.is_some() && self.lost.is_some()
    }

    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.run.as_ref().and_then(|r| r.status)
    }

    pub(crate) fn timed_out(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.timed_out())
    }

    /// A one-paragraph account for assertion messages: command, outcome, figures, errors and
    /// the tail of the output.
    pub(crate) fn describe(&self) -> String {
        let run = self.run.as_ref();
        let outcome = match run {
            None => "not run".to_owned(),
            Some(r) if r.timed_out() => format!("killed at the deadline after {:?}", r.elapsed),
            Some(r) => format!(
                "exited with {} after {:?}",
                r.status.expect("exited"),
                r.elapsed
            ),
        };
        let tail: String = run
            .map(|r| {
                let lines: Vec<&str> = r
                    .output
                    .lines()
                    .filter(|l| !l.contains("start_mclient: msz="))
                    .collect();
                lines[lines.len().saturating_sub(25)..].join("\n")
            })
            .unwrap_or_default();
        format!(
            "{}\n  {outcome}; sent={:?} received={:?} lost={:?} send_dropped={:?}\n  errors: {:?}\n  output tail:\n{tail}",
            self.command, self.sent, self.received, self.lost, self.send_dropped, self.errors
        )
    }
}

/// The first unsigned number after `key` in `s` (`key` may be empty).
fn number_after(s: &str, key: &str) -> Option<u64> {
    let start = s.find(key)? + key.len();
    let digits: String = s[start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The OpenMetrics text of a `/metrics` endpoint.
pub(crate) fn metrics_text(addr: SocketAddr) -> String {
    use std::io::Write as _;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics response");
    body
}

/// The value of one series (name and labels exactly as exposed, e.g.
/// `cloudproxy_stream_refused_total{reason="total_limit"}`), if present.
pub(crate) fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    series_value(&metrics_text(addr), series)
}

/// The value of a series that must be there (name and labels exactly as exposed), as an integer.
#[track_caller]
pub(crate) fn metric_i64(addr: SocketAddr, series: &str) -> i64 {
    let text = metrics_text(addr);
    series_value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}")) as i64
}

/// `VmRSS` of a live process, KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// The value of `series` (name and labels exactly as exposed) in OpenMetrics text.
pub(crate) fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One HTTP/1.1 request with `Connection: close`: (status, whole response text).
#[allow(dead_code)]
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::Write as _;
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    (code, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_clean_uclient_run() {
        let out = "\
0: : Total connect time is 1
2: : start_mclient: msz=10, tot_send_msgs=45, tot_recv_msgs=45, tot_send_bytes ~ 7650, tot_recv_bytes ~ 7650
9: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=1998
9: : start_mclient: tot_send_bytes ~ 340000, tot_recv_bytes ~ 339660
9: : Total transmit time is 9
9: : Total lost packets 2 (0.100000%), total send dropped 0 (0.000000%)
9: : Average round trip delay 0.009000 ms; min = 0 ms, max = 3 ms
";
        let r = UclientReport::parse(out);
        assert!(r.completed());
        assert_eq!(r.sent, Some(2000));
        assert_eq!(r.received, Some(1998));
        assert_eq!(r.sent_bytes, Some(340_000));
        assert_eq!(r.received_bytes, Some(339_660));
        assert_eq!(r.lost, Some(2));
        assert_eq!(r.send_dropped, Some(0));
        assert!(r.errors.is_empty());
    }

    #[test]
    fn parses_uclient_errors() {
        let r = UclientReport::parse(
            "0: : channel bind: error 403 (Forbidden IP)\n0: : ERROR: Cannot complete Allocation\n",
        );
        assert!(!r.completed());
        assert_eq!(r.errors.len(), 2);
        assert!(r.errors[0].contains("403"));
    }

    #[test]
    fn parses_listener_lines() {
        assert_eq!(
            parse_listener_line("udp 127.0.0.1:3478"),
            Some(("udp".into(), "127.0.0.1:3478".parse().unwrap()))
        );
        assert_eq!(parse_listener_line("starting"), None);
    }
}
