//! The generator against a hand-written fake TURN server: does it set up through a 401 and a
//! 438, count loss and duplicates exactly, release its allocations, and explain failures?
//! Every run here is a second or less at a low rate; nothing asserts speed.

mod fake;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudproxy_bench::echo::EchoPeer;
use cloudproxy_bench::{run, BenchError, Config, Credentials, Event, Rate};
use fake::{FakeTurn, Script};

fn config(server: SocketAddr, allocations: usize) -> Config {
    let mut c = Config::new(
        server,
        Credentials::Rest {
            secret: "s".into(),
            user: "test".into(),
        },
    );
    c.allocations = allocations;
    c.rate = Rate::PerAllocation(100.0);
    c.duration = Duration::from_millis(1000);
    c.threads = 2;
    c.socket_buffer = 256 << 10;
    c.setup.timeout = Duration::from_millis(1500);
    c
}

fn no_events(_: Event) {}

#[test]
fn counts_loss_and_duplicates_exactly() {
    let fake = FakeTurn::start(Script {
        stale_nonce_once: true,
        drop_every: Some(10),
        duplicate_every: Some(7),
        ..Script::default()
    });
    let report = run(&config(fake.addr, 3), &mut no_events).expect("the run happens");
    assert_eq!(report.setup.up, 3, "{report}");
    assert_eq!(
        fake.tally.stale_nonces.load(Ordering::Relaxed),
        3,
        "each 438 answered"
    );
    let r = report.result.as_ref().expect("a fixed-rate result");
    let dropped = fake.tally.dropped.load(Ordering::Relaxed);
    assert!(r.sent >= 60 && dropped > 0, "{report}");
    assert_eq!(
        r.sent - r.received,
        dropped,
        "loss is exactly what was dropped: {report}"
    );
    assert_eq!(report.peer_received, r.sent - dropped);
    assert_eq!(
        report.counters.duplicates,
        fake.tally.duplicated.load(Ordering::Relaxed),
        "{report}"
    );
    assert!((r.loss_percent - 10.0).abs() < 2.0, "{report}");
    assert_eq!(report.counters.misrouted, 0);
    let latency = r.latency.as_ref().expect("latency samples");
    assert_eq!(latency.samples, r.received);
    assert!(latency.p50_ms > 0.0 && latency.p50_ms <= latency.p99_ms);
    // UDP allocations are deleted at the end (Refresh with LIFETIME 0).
    assert_eq!(fake.tally.deletions.load(Ordering::Relaxed), 3);
    assert_eq!(
        (report.counters.released, report.counters.release_failed),
        (3, 0)
    );
    // The JSON form carries the same figures.
    let json: serde_json::Value = serde_json::to_value(&report).expect("serializable");
    assert_eq!(json["result"]["sent"], r.sent);
    assert_eq!(json["transport"], "udp");
}

fn failure(script: Script, allocations: usize) -> (String, FakeTurn) {
    let fake = FakeTurn::start(script);
    match run(&config(fake.addr, allocations), &mut no_events) {
        Err(e @ BenchError::NoAllocations { .. }) => (e.to_string(), fake),
        Err(e) => panic!("unexpected error {e}"),
        Ok(r) => panic!("the run should fail:\n{r}"),
    }
}

#[test]
fn wrong_credentials_are_grouped_with_a_hint() {
    let (msg, _fake) = failure(
        Script {
            reject_credentials: true,
            ..Script::default()
        },
        5,
    );
    assert!(
        msg.starts_with("0/5 allocations: Allocate: 401 Unauthorized ×5"),
        "{msg}"
    );
    assert!(msg.contains("wrong secret"), "{msg}");
}

#[test]
fn forbidden_peer_is_explained_and_the_allocation_released() {
    let (msg, fake) = failure(
        Script {
            forbid_peer: true,
            ..Script::default()
        },
        2,
    );
    assert!(msg.contains("ChannelBind: 403 Forbidden ×2"), "{msg}");
    assert!(msg.contains("--allow-loopback-peers"), "{msg}");
    // Give the fake a moment to read the Refresh(0) each client sent after the failure.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fake.tally.deletions.load(Ordering::Relaxed), 2);
}

#[test]
fn a_silent_server_times_out_and_the_run_gives_up_early() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut c = config(silent.local_addr().expect("addr"), 200);
    c.setup.timeout = Duration::from_millis(300);
    c.setup.concurrency = 8;
    let start = std::time::Instant::now();
    let err = run(&c, &mut no_events).expect_err("nothing answers");
    let msg = err.to_string();
    assert!(msg.contains("Allocate: no response (timeout)"), "{msg}");
    assert!(
        msg.contains("not attempted"),
        "gives up after the first round: {msg}"
    );
    assert!(msg.contains("is a TURN server listening"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn setup_only_announces_ready_and_sends_nothing() {
    let fake = FakeTurn::start(Script::default());
    let mut c = config(fake.addr, 4);
    c.setup.only = true;
    c.setup.hold = Duration::from_millis(200);
    let mut ready = None;
    let report = run(&c, &mut |e| {
        if let Event::Ready { up, requested } = e {
            ready = Some((up, requested));
        }
    })
    .expect("the run happens");
    assert_eq!(ready, Some((4, 4)));
    assert_eq!(report.workload.mode, "setup-only");
    assert!(report.steps.is_empty() && report.result.is_none());
    assert!(report.setup.rate_per_s > 0.0);
    assert_eq!(report.peer_received, 0);
}

/// `peer.remote`: the channels point at an echo peer already running (here the test's own,
/// standing in for `cloudproxy bench-echo` elsewhere) and the run starts none.
#[test]
fn a_remote_echo_peer_is_used_and_none_is_started() {
    let fake = FakeTurn::start(Script::default());
    let echo = EchoPeer::start("127.0.0.1".parse().unwrap(), 1, 256 << 10, 2048)
        .expect("the test's echo peer starts");
    let mut c = config(fake.addr, 2);
    c.peer.remote = Some(echo.addr());
    let report = run(&c, &mut no_events).expect("the run happens");
    assert_eq!(report.setup.up, 2, "{report}");
    assert_eq!(
        report.peer_received, 0,
        "no peer of the run's own: {report}"
    );
    let r = report.result.as_ref().expect("a fixed-rate result");
    assert!(
        r.received > 0,
        "echoes came back from the remote peer: {report}"
    );
    assert!(
        echo.received() >= r.received,
        "every echo passed the remote peer ({} there): {report}",
        echo.received()
    );
}
