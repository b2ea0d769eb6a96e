//! The CI smoke form of `cloudproxy bench`: a few seconds at a low rate against our relay over
//! UDP, TCP and TLS, and against coturn's `turnserver` over UDP (a server nobody here wrote),
//! checking correctness only — every allocation up, nothing lost, every packet back exactly
//! once. Speed is never asserted: that is what BENCHMARKS.md is for. Last, a 20-second smoke
//! of the soak (`tests/soak/mod.rs`): churn through a relay governed by a control plane leaves
//! no allocation behind, and the usage metered is the payload relayed.

mod common;
mod soak;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{
    cloudproxy_bin, require_coturn, run_bounded, serial, start_cloudproxy, start_coturn,
    BoundedRun, RelayOptions, TempDir,
};
use serde_json::Value;

const SECRET: &str = "bench-smoke-secret";
const ALLOCATIONS: u64 = 10;
/// Hard limit for one bench run (it should take about 3 s).
const DEADLINE: Duration = Duration::from_secs(60);

fn options() -> RelayOptions {
    RelayOptions {
        secret: SECRET.into(),
        allow_peers: vec!["127.0.0.1/32".into()],
        relay_port_count: 60,
        ..RelayOptions::default()
    }
}

/// `cloudproxy bench` at 10 allocations × 50 packets/s × 160 B for 2 s.
fn bench(server: SocketAddr, transport: &str, secret: &str) -> BoundedRun {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.arg("bench")
        .args(["--server", &server.to_string()])
        .args(["--transport", transport])
        .args(["--secret", secret])
        .args(["--allocations", &ALLOCATIONS.to_string()])
        .args(["--rate", "50", "--size", "160", "--duration", "2"])
        .args(["--threads", "2", "--json"])
        .env("NO_COLOR", "1");
    run_bounded("cloudproxy bench", cmd, DEADLINE)
}

/// Checks a successful low-rate run: every allocation up, zero loss, each packet back once.
fn assert_clean(run: &BoundedRun, what: &str) -> Value {
    assert!(
        !run.timed_out(),
        "{what}: bench did not finish within {DEADLINE:?}:\n{}",
        run.output
    );
    assert!(run.success(), "{what}: bench failed:\n{}", run.output);
    let json = run
        .output
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{what}: no JSON report in:\n{}", run.output));
    let report: Value = serde_json::from_str(json).expect("the report is JSON");
    let n = |path: &str| {
        report
            .pointer(path)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{what}: no number at {path} in {report}"))
    };
    assert_eq!(
        n("/setup/up"),
        ALLOCATIONS as f64,
        "{what}: set-up: {report}"
    );
    assert_eq!(n("/setup/failed"), 0.0, "{what}: set-up failures: {report}");
    let sent = n("/result/sent");
    // Not a speed check: it only proves packets flowed at all (the target is 1,000).
    assert!(sent >= 100.0, "{what}: only {sent} packets sent: {report}");
    assert_eq!(
        n("/result/received"),
        sent,
        "{what}: received != sent: {report}"
    );
    assert_eq!(n("/result/loss_percent"), 0.0, "{what}: loss: {report}");
    assert_eq!(
        n("/peer_received"),
        sent,
        "{what}: the echo peer saw: {report}"
    );
    for counter in [
        "duplicates",
        "misrouted",
        "foreign",
        "closed",
        "send_errors",
    ] {
        assert_eq!(
            n(&format!("/counters/{counter}")),
            0.0,
            "{what}: {counter}: {report}"
        );
    }
    assert!(
        n("/result/latency/p50_ms") > 0.0,
        "{what}: no latency: {report}"
    );
    report
}

#[test]
fn bench_drives_our_relay_over_udp_tcp_and_tls() {
    let _lo = common::loopback_shared();
    let _serial = serial();
    let mut relay = start_cloudproxy(&options());
    let tls = relay.tls.expect("the relay has a TLS listener");
    for (transport, server) in [("udp", relay.udp), ("tcp", relay.tcp), ("tls", tls)] {
        let run = bench(server, transport, SECRET);
        let report = assert_clean(&run, &format!("cloudproxy over {transport}"));
        assert_eq!(report["transport"], transport);
        relay.assert_alive();
    }
}

#[test]
fn bench_drives_coturn_over_udp() {
    let _lo = common::loopback_shared();
    if !require_coturn("bench_drives_coturn_over_udp") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("bench-coturn");
    let mut coturn = start_coturn(&options(), &dir.0);
    let run = bench(coturn.udp, "udp", SECRET);
    assert_clean(&run, "coturn over udp");
    coturn.assert_alive();
}

#[test]
fn wrong_secret_exits_1_and_says_why() {
    let _lo = common::loopback_shared();
    let _serial = serial();
    let relay = start_cloudproxy(&options());
    let run = bench(relay.udp, "udp", "not-the-secret");
    assert!(!run.timed_out(), "bench hung:\n{}", run.output);
    assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{}", run.output);
    for needle in ["0/10 allocations", "401", "wrong secret"] {
        assert!(
            run.output.contains(needle),
            "expected {needle:?} in:\n{}",
            run.output
        );
    }
    assert!(
        !run.output.contains('{'),
        "no report on failure:\n{}",
        run.output
    );
}

/// The benchmark's other-namespace form: the echo peer as its own process (`bench-echo`), the
/// generator pointed at it with `--remote-peer` — through our relay, and straight to the peer
/// with `--raw` (the no-relay baseline). The peer counts what reached it: every packet sent.
#[test]
fn bench_through_a_remote_echo_peer_and_straight_to_it() {
    let _lo = common::loopback_shared();
    let relay = start_cloudproxy(&options());
    for raw in [false, true] {
        let mut cmd = Command::new(cloudproxy_bin());
        cmd.args(["bench-echo", "--listen", "127.0.0.1:0"]);
        let (mut echo, lines) = common::ChildGuard::spawn("bench-echo", cmd).unwrap();
        let addr: SocketAddr = lines
            .recv_timeout(DEADLINE)
            .expect("bench-echo prints its address")
            .strip_prefix("echo ")
            .expect("an `echo ADDR` line")
            .parse()
            .unwrap();
        let server = if raw { addr } else { relay.udp };
        let mut cmd = Command::new(cloudproxy_bin());
        cmd.arg("bench")
            .args(["--server", &server.to_string(), "--secret", SECRET])
            .args(["--remote-peer", &addr.to_string()])
            .args(["--allocations", &ALLOCATIONS.to_string()])
            .args(["--rate", "50", "--size", "160", "--duration", "2", "--json"]);
        if raw {
            cmd.arg("--raw");
        }
        let run = run_bounded("cloudproxy bench", cmd, DEADLINE);
        assert!(run.success(), "raw {raw}: {}", run.output);
        let report: Value =
            serde_json::from_str(run.output.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
        let sent = report["result"]["sent"].as_u64().unwrap();
        assert!(sent >= 100, "raw {raw}: {report}");
        assert_eq!(report["result"]["received"], sent, "raw {raw}: {report}");
        assert_eq!(report["peer_received"], 0, "no local peer: {report}");
        common::send_signal(echo.pid(), "TERM");
        common::wait_exit(&mut echo, DEADLINE).expect("bench-echo exits on SIGTERM");
        let at_peer = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(5)).ok())
            .find_map(|l| l.strip_prefix("received ").map(str::to_owned))
            .expect("bench-echo prints what it received");
        assert_eq!(at_peer, sent.to_string(), "raw {raw}: the peer's count");
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let cases: [(&[&str], &str); 6] = [
        (&["--size", "3"], "--size"),
        (&["--rate", "fast"], "--rate"),
        (&["--allocations", "0"], "--allocations"),
        (&["--hold", "5"], "--hold"),
        (&["--churn", "5", "--rate", "max"], "--churn"),
        (&["--churn", "7000"], "--churn"),
    ];
    for (args, flag) in cases {
        let mut cmd = Command::new(cloudproxy_bin());
        cmd.args(["bench", "--server", "127.0.0.1:9", "--secret", "s"])
            .args(args);
        let run = run_bounded("cloudproxy bench", cmd, DEADLINE);
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(2),
            "{args:?}: {}",
            run.output
        );
        assert!(run.output.contains(flag), "{args:?}: {}", run.output);
    }
}

/// The soak's CI smoke: 50 allocations × 50 packets/s for 20 s with 60% of them replaced per
/// minute (10 replacements), through a relay governed by a control plane (debug build).
#[test]
fn soak_smoke_churns_leaves_nothing_behind_and_meters_what_was_relayed() {
    let _lo = common::loopback_shared();
    let _serial = serial();
    let run = soak::Soak {
        allocations: 50,
        seconds: 20,
        churn_percent: 60.0,
        warmup: 5,
        // Patient set-up: a slow machine must not turn into a failed join.
        setup_timeout: 20,
        ..soak::Soak::full()
    };
    let r = soak::run(&run);
    println!("{r}");
    assert_eq!(r.setup_up, 50, "every allocation up: {r}");
    // The churn thread replaces one every 2 s; a stalled machine may fit fewer into 20 s, but
    // never none, and every replacement is a join that worked and a leave.
    assert!(r.joined >= 1, "no allocation was replaced: {r}");
    assert_eq!(r.join_failed, 0, "{r}");
    assert_eq!(r.left, r.joined, "each join replaced one allocation: {r}");
    // Every allocation the run made was deleted by the bench and is gone at the relay.
    assert_eq!(r.release_failed, 0, "{r}");
    assert_eq!(r.released, 50 + r.joined, "{r}");
    assert_eq!(
        r.allocations_created as u64,
        50 + r.joined + 1,
        "the run's allocations and the sync probe's: {r}"
    );
    assert_eq!(r.allocations_after, 0, "allocations left behind: {r}");
    // Loss: 2,500 packets/s on loopback is nothing for the relay, but the machine is shared;
    // a stall of another process can cost a burst. 1% is far beyond that and far below what
    // a broken churn (echoes of a deleted allocation, a slot sending nowhere) would lose.
    assert!(r.sent > 0, "{r}");
    assert!(r.loss_percent <= 1.0, "loss {:.3}%: {r}", r.loss_percent);
    // Usage: the relay meters the payload it accepted in each direction (see the module).
    assert_eq!(r.usage_reports_pending, 0, "{r}");
    assert!(
        (r.expected_bytes_low..=r.expected_bytes_high).contains(&r.metered_bytes),
        "metered {} bytes, expected {}..={}: {r}",
        r.metered_bytes,
        r.expected_bytes_low,
        r.expected_bytes_high
    );
    if r.received == r.sent {
        assert_eq!(
            r.metered_bytes,
            2 * 160 * r.sent,
            "nothing lost: exact: {r}"
        );
    }
    assert!(r.metered_peak >= 50, "peak concurrency: {r}");
}

/// The same smoke with the XDP fast path on the loopback interface (generic mode): the
/// kernel forwards the ChannelData, and the usage the control plane meters is still exactly
/// the payload relayed. Needs root and a build with clang (CI has both); elsewhere it says so
/// and passes.
#[test]
fn soak_smoke_in_the_kernel_meters_exactly() {
    let _lo = common::loopback_exclusive();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root"
        );
        eprintln!("skipped: XDP needs root");
        return;
    }
    let _serial = serial();
    let run = soak::Soak {
        allocations: 20,
        seconds: 10,
        churn_percent: 60.0,
        warmup: 3,
        setup_timeout: 20,
        relay_flags: common::xdp_maps::GENERIC_ON_LO.map(String::from).to_vec(),
        ..soak::Soak::full()
    };
    let r = soak::run(&run);
    println!("{r}");
    if let Some(why) = &r.fastpath_off {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the fast path must run in CI: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    assert_eq!(r.allocations_after, 0, "allocations left behind: {r}");
    assert_eq!(r.usage_reports_pending, 0, "{r}");
    // Every probe and every echo went through the kernel, none through the relay's sockets.
    assert!(r.sent > 0, "{r}");
    assert_eq!(
        r.fastpath_packets.0 as u64, r.peer_received,
        "client->peer in the kernel: {r}"
    );
    assert_eq!(
        r.fastpath_packets.1 as u64, r.peer_received,
        "peer->client in the kernel: {r}"
    );
    assert!(
        (r.expected_bytes_low..=r.expected_bytes_high).contains(&r.metered_bytes),
        "metered {} bytes, expected {}..={}: {r}",
        r.metered_bytes,
        r.expected_bytes_low,
        r.expected_bytes_high
    );
    assert_eq!(
        r.metered_bytes,
        160 * (r.peer_received + r.received),
        "exact: what reached the peer plus what came back: {r}"
    );
}
