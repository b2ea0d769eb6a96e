//! The CI smoke form of `cloudproxy bench`: a few seconds at a low rate against our relay over
//! UDP, TCP and TLS, and against coturn's `turnserver` over UDP (a server nobody here wrote),
//! checking correctness only — every allocation up, nothing lost, every packet back exactly
//! once. Speed is never asserted: that is what BENCHMARKS.md is for.

mod common;

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

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let cases: [(&[&str], &str); 4] = [
        (&["--size", "3"], "--size"),
        (&["--rate", "fast"], "--rate"),
        (&["--allocations", "0"], "--allocations"),
        (&["--hold", "5"], "--hold"),
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
