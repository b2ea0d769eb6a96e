//! Sessions that clean up after themselves (issue 14), as a user runs them: `cloudproxy join`
//! processes against relays governed by `cloudproxy control` on SQLite, and `cloudproxy media`.
//!
//! - 200 join/leave cycles in each of Force UDP, Force TCP and Auto, in one channel of an app
//!   allowed one proxy user per channel, each cycle a new user. Every cycle joins: the previous
//!   user's lease ended with its allocation (a leaked lease would refuse the next user with
//!   486 for the lease TTL). `cloudproxy_allocations` is 0 again within 1 s of each leave, and
//!   a lease for another user of the channel is granted right after: the control plane's
//!   lease ended too.
//! - Auto on an open network leaves nothing at the relay, also when its TURN candidate had
//!   allocated before the direct path won.
//! - A 2-second session is metered as 2 allocation-seconds (under 5), not the allocation's
//!   whole lifetime.
//!
//! Auto falls back to its proxy only when the direct path fails, and on loopback it never
//! does. So the Auto tests put the media service on an address of its own (127.0.0.x) and an
//! nftables table in the host's `input` hook (dropping there is silent, as a firewall is)
//! that drops what they say, by source address: the Auto relay's relayed address is another
//! 127.0.0.x. That needs root (CI is root); without it the Auto parts are skipped loudly,
//! except under CI, where they fail.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::control::{ControlProc, Credential, GovernedRelay, RelaySpec, Usage};
use common::{cloudproxy_bin, in_ci, reserve_ports, wait_for_listeners, ChildGuard, TempDir};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-key-cleanup-0123456789";
const RELAY_KEY: &str = "relay-key-cleanup-0123456789";
const PATIENCE: Duration = Duration::from_secs(30);
/// What the issue allows between a leave and `cloudproxy_allocations` being 0 again.
const RELEASE_BOUND: Duration = Duration::from_secs(1);
const CYCLES: u32 = 200;

// ------------------------------------------------------------------------------------------
// The control plane, the relays, the media service

fn start_control(dir: &TempDir) -> ControlProc {
    let addr = format!("127.0.0.1:{}", reserve_ports(1, true)[0]);
    let db = format!("sqlite:{}", dir.0.join("control.db").display());
    // The default lease TTL (30 s): a lease that outlived its allocation would refuse the
    // next cycle's user for far longer than a cycle takes.
    common::control::start_control_on(addr, &db, OPERATOR, RELAY_KEY, &[])
}

/// Submits, approves and activates `mode` in Japan with one proxy user per channel.
fn enable(c: &ControlProc, app: &Credential, mode: &str) {
    let form = json!({"region": "japan", "sdk": "native", "use_case": "1:1 call",
        "max_concurrent_channels": 4, "max_users_per_channel": 2,
        "max_proxy_users_per_channel": 1, "quality": "720p", "mode": mode});
    let request = c.enable(&app.app_id, form);
    assert_eq!(request["state"], "active", "{request}");
}

impl GovernedRelay {
    /// A relay in Japan with 1-second sync, renewal and usage intervals, relaying from
    /// `relay_ip`.
    fn start(control: &ControlProc, dir: &TempDir, edge: &str, pool: &str, relay_ip: &str) -> Self {
        let spec = RelaySpec {
            edge,
            pool,
            relay_ip,
            ..RelaySpec::default()
        };
        control.start_relay(&dir.0, RELAY_KEY, &spec)
    }

    fn metric(&self, name: &str) -> i64 {
        common::metric_i64(self.metrics, name)
    }

    fn allocations(&self) -> i64 {
        self.metric("cloudproxy_allocations")
    }

    /// How long until `cloudproxy_allocations` is 0; panics past `bound`.
    #[track_caller]
    fn drains_within(&self, bound: Duration, what: &str) -> Duration {
        let started = Instant::now();
        loop {
            let n = self.allocations();
            if n == 0 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < bound,
                "{what}: {n} allocation(s) still held {:?} after the leave",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Registered and synced: an app's Allocate would be judged by the current table.
    fn wait_ready(&self, control: &ControlProc) {
        let deadline = Instant::now() + PATIENCE;
        while self.metric("cloudproxy_control_sync_age_seconds") > 2
            || !registered(control, &self.edge)
        {
            assert!(
                Instant::now() < deadline,
                "relay {} never synced",
                self.edge
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn registered(control: &ControlProc, edge: &str) -> bool {
    let edges = control.ok("GET", "/v1/edges", Value::Null);
    edges.to_string().contains(&format!("\"{edge}\""))
}

fn start_media(ip: &str, app: &Credential) -> (ChildGuard, SocketAddr) {
    let listen = format!("{ip}:{}", reserve_ports(1, false)[0]);
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["media", "--listen", &listen])
        .args(["--app", &app.joined()]);
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy media", cmd).unwrap();
    let found = wait_for_listeners(&mut guard, &lines, &["media"])
        .unwrap_or_else(|e| panic!("media did not start: {e}\n{}", guard.output.text()));
    (guard, found[0].1)
}

// ------------------------------------------------------------------------------------------
// The firewall for Auto

/// An nftables table of this test in the host's `input` hook; deleted on drop.
struct Firewall {
    table: String,
}

impl Firewall {
    /// `rules` go into one chain; `None` when this user may not change nftables (not root).
    fn install(tag: &str, sets: &str, rules: &[String]) -> Option<Self> {
        remove_stale_tables();
        let table = format!("cpcleanup{}{tag}", std::process::id());
        let ruleset = format!(
            "table inet {table} {{\n{sets}\n chain input {{\n  type filter hook input priority 0; policy accept;\n  {}\n }}\n}}\n",
            rules.join("\n  ")
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().ok()?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!in_ci(), "CI runs as root: nft must work: {why}\n{ruleset}");
            eprintln!("SKIPPING the Auto part: nft refused ({why})");
            return None;
        }
        Some(Self { table })
    }

    /// Packets the rule with `comment` dropped.
    fn dropped(&self, comment: &str) -> u64 {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains(&format!("comment \"{comment}\"")))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter {comment} in\n{text}"))
    }
}

/// Tables that a killed run of this test left behind (their process is gone).
fn remove_stale_tables() {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.strip_prefix("table inet cpcleanup") else {
            continue;
        };
        let pid: String = name.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &format!("cpcleanup{name}")])
                .status();
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

// ------------------------------------------------------------------------------------------
// `cloudproxy join`

struct Join<'a> {
    media: SocketAddr,
    app: &'a Credential,
    channel: &'a str,
    uid: u32,
    mode: &'a str,
    proxy: SocketAddr,
    send: u32,
    interval_ms: u32,
    stagger_ms: u32,
}

impl Join<'_> {
    fn command(&self) -> Command {
        let mut cmd = Command::new(cloudproxy_bin());
        cmd.arg("join")
            .args(["--media", &self.media.to_string()])
            .args(["--app-id", &self.app.app_id, "--channel", self.channel])
            .args(["--uid", &self.uid.to_string(), "--mode", self.mode])
            .args(["--proxy", &self.proxy.to_string()])
            .args(["--send", &self.send.to_string()])
            .args(["--interval-ms", &self.interval_ms.to_string()])
            .args(["--stagger-ms", &self.stagger_ms.to_string()])
            .env("CLOUDPROXY_TOKEN", self.app.token(self.channel, self.uid));
        cmd
    }

    /// Runs it to its end (bounded); the summary line, and when the process had exited.
    #[track_caller]
    fn run(&self) -> (Value, Instant) {
        let (mut guard, lines) = ChildGuard::spawn("cloudproxy join", self.command()).unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = guard.try_wait() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "join {} uid {} still running after {PATIENCE:?}",
                self.mode,
                self.uid
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let exited = Instant::now();
        let summary = summary(&lines, Duration::from_secs(5));
        assert!(
            status.success() && summary.is_some(),
            "join {} uid {} failed ({status}):\n{}",
            self.mode,
            self.uid,
            guard.output.text()
        );
        (summary.unwrap(), exited)
    }
}

/// Joins until the relay has synced the app's enablement (a join before that is refused);
/// not one of the counted cycles.
fn warm_up(join: &Join<'_>, relay: &GovernedRelay) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (mut guard, lines) = ChildGuard::spawn("cloudproxy join", join.command()).unwrap();
        while guard.try_wait().is_none() {
            assert!(Instant::now() < deadline, "warm-up join hangs");
            std::thread::sleep(Duration::from_millis(10));
        }
        if summary(&lines, Duration::from_secs(5)).is_some() {
            relay.drains_within(RELEASE_BOUND, "warm-up");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never admitted the app:\n{}",
            guard.output.text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The `summary` line among the lines still to come.
fn summary(lines: &mpsc::Receiver<String>, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["event"] == "summary" {
            return Some(v);
        }
    }
    None
}

/// A lease for another user of `channel`, asked for as a relay would: granted only when the
/// channel's one proxy user has gone at the control plane too. Released again at once.
fn lease_free(
    control: &ControlProc,
    relay: &GovernedRelay,
    app: &Credential,
    mode: &str,
    channel: &str,
) -> bool {
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    );
    let (code, body) = control.api(
        "POST",
        "/v1/leases",
        RELAY_KEY,
        json!({"lease_id": id, "relay_id": relay.edge, "app_id": app.app_id, "region": "japan",
               "mode": mode, "channel": channel, "user": "probe"}),
    );
    match code {
        201 => {
            let (code, body) = control.api(
                "POST",
                "/v1/leases/release",
                RELAY_KEY,
                json!({"relay_id": relay.edge, "lease_ids": [id]}),
            );
            assert_eq!(code, 200, "releasing the probe lease: {body}");
            true
        }
        409 => false,
        _ => panic!("probe lease: {code} {body}"),
    }
}

/// Figures of a run of cycles.
#[derive(Default)]
struct Cycles {
    took: Duration,
    slowest_release: Duration,
    slowest_lease: Duration,
}

/// One mode's cycles: how to join, which path it must take, and the lease mode at the control
/// plane (none in Auto).
struct Mode<'a> {
    mode: &'a str,
    proxy: SocketAddr,
    path: &'a str,
    lease_mode: Option<&'a str>,
}

/// `CYCLES` join/leave cycles of new users in one channel.
fn cycles(
    control: &ControlProc,
    relay: &GovernedRelay,
    app: &Credential,
    media: SocketAddr,
    m: Mode<'_>,
) -> Cycles {
    let Mode {
        mode,
        proxy,
        path,
        lease_mode,
    } = m;
    let channel = format!("cycles-{mode}");
    let mut figures = Cycles::default();
    let started = Instant::now();
    for uid in 1..=CYCLES {
        let join = Join {
            media,
            app,
            channel: &channel,
            uid,
            mode,
            proxy,
            send: 3,
            interval_ms: 5,
            stagger_ms: 0,
        };
        let (s, exited) = join.run();
        assert_eq!(s["path"], path, "{mode} cycle {uid}: {s}");
        assert_eq!(s["lost"], 0, "{mode} cycle {uid}: {s}");
        let release = relay.drains_within(RELEASE_BOUND, &format!("{mode} cycle {uid}"));
        figures.slowest_release = figures.slowest_release.max(release);
        if let Some(lease_mode) = lease_mode {
            let asked = Instant::now();
            while !lease_free(control, relay, app, lease_mode, &channel) {
                // Well under the 30 s TTL: the lease was released, not left to expire.
                assert!(
                    asked.elapsed() < Duration::from_secs(10),
                    "{mode} cycle {uid}: the lease outlived the allocation"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            figures.slowest_lease = figures.slowest_lease.max(exited.elapsed());
        }
    }
    figures.took = started.elapsed();
    let lease = match lease_mode {
        Some(_) => format!("lease free at most {:?} after", figures.slowest_lease),
        None => "no lease in Auto".into(),
    };
    eprintln!(
        "{mode}: {CYCLES} cycles in {:.1} s ({:.0} ms each); allocations 0 at most {:?} after \
         the join process exited; {lease}",
        figures.took.as_secs_f64(),
        figures.took.as_secs_f64() * 1000.0 / f64::from(CYCLES),
        figures.slowest_release,
    );
    figures
}

// ------------------------------------------------------------------------------------------
// The tests

#[test]
fn two_hundred_join_leave_cycles_per_mode_release_everything() {
    let dir = TempDir::new("cleanup-cycles");
    let control = start_control(&dir);
    let app = control.create_app("cleanup");
    let published = GovernedRelay::start(&control, &dir, "jp-static", "static", "127.0.0.1");
    // The Auto relay relays from an address of its own, which the firewall tells apart.
    let pool = GovernedRelay::start(&control, &dir, "jp-dynamic", "dynamic", "127.0.0.77");
    let (_media, media) = start_media("127.0.0.88", &app);
    published.wait_ready(&control);
    pool.wait_ready(&control);
    enable(&control, &app, "force_udp");
    enable(&control, &app, "force_tcp");
    for (mode, proxy) in [("udp", published.udp), ("tcp", published.tls)] {
        let join = Join {
            media,
            app: &app,
            channel: "warm-up",
            uid: 0,
            mode,
            proxy,
            send: 1,
            interval_ms: 5,
            stagger_ms: 0,
        };
        warm_up(&join, &published);
    }

    let udp = cycles(
        &control,
        &published,
        &app,
        media,
        Mode {
            mode: "udp",
            proxy: published.udp,
            path: "turn_udp",
            lease_mode: Some("force_udp"),
        },
    );
    let tcp = cycles(
        &control,
        &published,
        &app,
        media,
        Mode {
            mode: "tcp",
            proxy: published.tls,
            path: "turn_tls",
            lease_mode: Some("force_tcp"),
        },
    );
    // Auto: direct UDP to the media service is dropped by a firewall; only the relay reaches it.
    let rules = [format!(
        "ip daddr {} udp dport {} ip saddr != 127.0.0.77 counter drop comment \"direct\"",
        media.ip(),
        media.port()
    )];
    let Some(firewall) = Firewall::install("c", "", &rules) else {
        return;
    };
    let auto = cycles(
        &control,
        &pool,
        &app,
        media,
        Mode {
            mode: "auto",
            proxy: pool.tls,
            path: "turn_tls",
            lease_mode: None,
        },
    );
    assert!(
        firewall.dropped("direct") >= u64::from(CYCLES),
        "the direct path was tried"
    );
    eprintln!(
        "total: {:.1} s for {} cycles",
        (udp.took + tcp.took + auto.took).as_secs_f64(),
        3 * CYCLES
    );
}

#[test]
fn auto_on_an_open_network_leaves_no_allocation_behind() {
    let dir = TempDir::new("cleanup-auto");
    let control = start_control(&dir);
    let app = control.create_app("cleanup");
    let pool = GovernedRelay::start(&control, &dir, "jp-dyn-open", "dynamic", "127.0.0.78");
    let (_media, media) = start_media("127.0.0.89", &app);
    pool.wait_ready(&control);
    let join = |uid: u32| Join {
        media,
        app: &app,
        channel: "open",
        uid,
        mode: "auto",
        proxy: pool.tls,
        // A 1.5-second session, so the relay is watched while it goes on.
        send: 75,
        interval_ms: 20,
        stagger_ms: 0,
    };
    // Both candidates start at once; direct wins, and while its session goes on the relay
    // must hold nothing.
    let watch = |uid: u32| -> (i64, Value) {
        let created = pool.metric("cloudproxy_allocations_created_total");
        let (mut guard, lines) = ChildGuard::spawn("cloudproxy join", join(uid).command()).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no join:\n{}", guard.output.text()));
            if line.contains("\"event\":\"joined\"") {
                break;
            }
        }
        let joined = Instant::now();
        let gone = pool.drains_within(RELEASE_BOUND, &format!("auto uid {uid}, while joined"));
        while guard.try_wait().is_none() {
            assert_eq!(
                pool.allocations(),
                0,
                "auto uid {uid}: an allocation while direct"
            );
            assert!(joined.elapsed() < PATIENCE);
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = summary(&lines, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no summary:\n{}", guard.output.text()));
        assert_eq!(s["path"], "direct", "{s}");
        let allocated = pool.metric("cloudproxy_allocations_created_total") - created;
        eprintln!("auto uid {uid}: direct won; the TURN candidate allocated {allocated} time(s); 0 held {gone:?} after the join");
        (allocated, s)
    };
    // 1. The open network as it is: the TURN candidate is usually cancelled before it has
    //    allocated.
    for uid in 1..=3 {
        watch(uid);
    }
    // 2. The same with the TURN candidate made to allocate first: the relay's datagrams to the
    //    media service are dropped (its candidate allocates, binds, and never joins), and each
    //    direct flow is held back for its first second (direct joins on a retransmission
    //    after it, long after the TURN candidate has allocated, even on a loaded machine).
    let rules = [
        format!(
            "ip daddr {} udp dport {} ip saddr 127.0.0.78 counter drop comment \"relayed\"",
            media.ip(),
            media.port()
        ),
        format!(
            "ip daddr {} udp dport {} ip saddr . udp sport != @seen add @seen {{ ip saddr . udp sport }} add @hold {{ ip saddr . udp sport }} counter drop comment \"first\"",
            media.ip(),
            media.port()
        ),
        format!(
            "ip daddr {} udp dport {} ip saddr . udp sport @hold counter drop comment \"held\"",
            media.ip(),
            media.port()
        ),
    ];
    let sets = " set seen { type ipv4_addr . inet_service; flags dynamic; timeout 5m; }\n \
                set hold { type ipv4_addr . inet_service; flags dynamic; timeout 1s; }";
    let Some(firewall) = Firewall::install("o", sets, &rules) else {
        return;
    };
    for uid in 4..=6 {
        let (allocated, _) = watch(uid);
        assert_eq!(
            allocated, 1,
            "uid {uid}: the TURN candidate allocated before it lost"
        );
    }
    assert!(
        firewall.dropped("relayed") >= 3,
        "the TURN candidates tried to join"
    );
}

#[test]
fn a_two_second_session_is_metered_under_five_allocation_seconds() {
    let dir = TempDir::new("cleanup-usage");
    let control = start_control(&dir);
    let app = control.create_app("cleanup");
    let relay = GovernedRelay::start(&control, &dir, "jp-usage", "static", "127.0.0.1");
    let (_media, media) = start_media("127.0.0.1", &app);
    relay.wait_ready(&control);
    enable(&control, &app, "force_udp");
    let warm = Join {
        media,
        app: &app,
        channel: "warm-up",
        uid: 0,
        mode: "udp",
        proxy: relay.udp,
        send: 1,
        interval_ms: 5,
        stagger_ms: 0,
    };
    warm_up(&warm, &relay);
    // 100 packets 20 ms apart: a 2-second session.
    let join = Join {
        media,
        app: &app,
        channel: "metered",
        uid: 1,
        mode: "udp",
        proxy: relay.udp,
        send: 100,
        interval_ms: 20,
        stagger_ms: 0,
    };
    let (s, _) = join.run();
    assert_eq!(s["sent"], 100, "{s}");
    relay.drains_within(RELEASE_BOUND, "after the 2-second session");
    // The relay reports every second. Once the session's bytes are in (they come with the
    // allocation's end), its seconds are too; two more reports must add nothing.
    let deadline = Instant::now() + PATIENCE;
    while control.usage(&app.app_id, "force_udp").bytes < 2 * 100 * 160 {
        assert!(
            Instant::now() < deadline,
            "the session's usage did not arrive"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    let Usage { seconds, bytes, .. } = control.usage(&app.app_id, "force_udp");
    // Sub-second remainders carry over to the app's next usage, so a session of just under
    // 2 s may show as 1 s until more comes.
    eprintln!(
        "a session of {} ms (join to exit) was metered as {seconds} allocation-second(s), {bytes} bytes",
        s["elapsed_ms"]
    );
    assert!(seconds >= 1, "the session was not metered at all");
    assert!(
        seconds < 5,
        "{seconds} allocation-seconds for a 2-second session"
    );
}

#[test]
fn join_leaves_on_sigterm_and_sigint() {
    let dir = TempDir::new("cleanup-signal");
    let control = start_control(&dir);
    let app = control.create_app("cleanup");
    let relay = GovernedRelay::start(&control, &dir, "jp-signal", "static", "127.0.0.1");
    let (_media, media) = start_media("127.0.0.1", &app);
    relay.wait_ready(&control);
    enable(&control, &app, "force_udp");
    let join = |uid: u32, send: u32| Join {
        media,
        app: &app,
        channel: "signalled",
        uid,
        mode: "udp",
        proxy: relay.udp,
        send,
        interval_ms: 20,
        stagger_ms: 0,
    };
    warm_up(&join(0, 1), &relay);
    for (uid, signal) in [(1, "TERM"), (2, "INT")] {
        // --send 0: it would run until stopped.
        let (mut guard, lines) =
            ChildGuard::spawn("cloudproxy join", join(uid, 0).command()).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while !lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no join:\n{}", guard.output.text()))
            .contains("\"event\":\"joined\"")
        {}
        assert_eq!(relay.allocations(), 1);
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &guard.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        while guard.try_wait().is_none() {
            assert!(Instant::now() < deadline, "SIG{signal}: join did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = relay.drains_within(RELEASE_BOUND, &format!("SIG{signal}"));
        let s = summary(&lines, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("SIG{signal}: no summary:\n{}", guard.output.text()));
        assert_eq!(s["signalled"], true, "{s}");
        assert_eq!(guard.try_wait().map(|s| s.success()), Some(true));
        eprintln!("SIG{signal}: left; allocations 0 {took:?} after the exit");
    }
}
