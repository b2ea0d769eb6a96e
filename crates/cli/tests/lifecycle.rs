//! Process lifecycle of the `cloudproxy` binary: signals, start-up errors and `creds`.
//!
//! * SIGTERM drains: new Allocates get 508 at once, existing allocations keep flowing for
//!   `--drain-timeout`, then the process exits 0 by itself.
//! * SIGINT stops at once, even with an allocation in place.
//! * Bad configuration (unknown key, bad CIDR, bad flag, `--cert` without `--key`) exits
//!   non-zero quickly, names the culprit on stderr and never panics.
//! * `cloudproxy creds --json` mints credentials the relay accepts (and a wrong secret does
//!   not authenticate).
//!
//! Everything runs on loopback. Every child is killed on drop and every wait has a deadline.
//!
//! Run just these: `cargo test -p cloudproxy --test lifecycle -- --nocapture`.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudproxy_proto::client::{Attr, ALLOCATE, REFRESH};
use cloudproxy_testkit::echo::EchoPeer;
use cloudproxy_testkit::turn::{Conn, TurnClient};
use common::turn::{echo, try_allocate as allocate_with};
use common::{
    cloudproxy_bin, metrics_text, run_bounded, send_signal, start_cloudproxy, wait_exit,
    BoundedRun, RelayOptions,
};

const SECRET: &str = "lifecycle-secret";

fn client_with_channel(conn: Conn, peer: SocketAddr) -> TurnClient {
    common::turn::client_with_channel(conn, SECRET, peer)
}

fn try_allocate(conn: Conn) -> Result<(), u16> {
    allocate_with(conn, SECRET)
}

fn options(extra: &[&str]) -> RelayOptions {
    RelayOptions {
        secret: SECRET.into(),
        allow_peers: vec!["127.0.0.0/8".into()],
        relay_port_count: 20,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..RelayOptions::default()
    }
}

#[test]
fn sigterm_refuses_new_allocations_keeps_old_ones_then_exits_zero() {
    let mut relay = start_cloudproxy(&options(&["--drain-timeout", "3"]));
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    // Client A over UDP, and one over TCP: a stream connection must survive the drain too.
    let mut a = client_with_channel(Conn::udp(relay.udp), peer.addr);
    let mut a_tcp = client_with_channel(Conn::tcp(relay.tcp), peer.addr);
    echo(&mut a, b"before SIGTERM");
    echo(&mut a_tcp, b"before SIGTERM, over TCP");

    let signalled = Instant::now();
    send_signal(relay.process.pid(), "TERM");

    // (a) New allocations are refused with 508 once the signal has been handled. A request
    // that raced ahead of it may still succeed; it is released and the next client tries.
    let refused_at = loop {
        match try_allocate(Conn::udp(relay.udp)) {
            Err(508) => break signalled.elapsed(),
            Ok(()) | Err(_) if signalled.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!(
                "no 508 within 2 s of SIGTERM (last Allocate: {other:?}); relay output:\n{}",
                relay.process.output.tail(30)
            ),
        }
    };
    // Every shard drains, not just the one that answered first (clients spread over shards by
    // their source port).
    for i in 0..6 {
        assert_eq!(
            try_allocate(Conn::udp(relay.udp)),
            Err(508),
            "fresh UDP client {i} during drain"
        );
    }
    assert_eq!(
        try_allocate(Conn::tcp(relay.tcp)),
        Err(508),
        "fresh TCP client during drain"
    );
    let m = metrics_text(relay.metrics.expect("metrics listener"));
    assert!(
        m.lines().any(|l| l.trim() == "cloudproxy_draining 1"),
        "draining gauge not set:\n{m}"
    );

    // (b) The existing allocation keeps relaying (and can be refreshed) during the drain, up to
    // late in the drain window.
    let r = a.transact(REFRESH, &[Attr::Lifetime(600)]);
    assert!(r.success, "refresh during drain: {:?}", r.error);
    let mut echoed = 0;
    while signalled.elapsed() < Duration::from_millis(2_300) {
        relay.assert_alive();
        echo(&mut a, format!("during drain, packet {echoed}").as_bytes());
        echo(
            &mut a_tcp,
            format!("during drain, TCP packet {echoed}").as_bytes(),
        );
        echoed += 1;
        std::thread::sleep(Duration::from_millis(100));
    }

    // (c) Exit 0 by itself once the drain timeout is over, not before.
    let status = wait_exit(
        &mut relay.process,
        Duration::from_secs(10).saturating_sub(signalled.elapsed()),
    );
    let exited_after = signalled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 10 s after SIGTERM with --drain-timeout 3; output:\n{}",
            relay.process.output.tail(30)
        )
    });
    assert!(
        status.success(),
        "exit status after drain: {status}; output:\n{}",
        relay.process.output.tail(30)
    );
    assert!(
        exited_after >= Duration::from_millis(2_900),
        "exited {exited_after:?} after SIGTERM, before the 3 s drain timeout"
    );
    let logs = relay.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    eprintln!(
        "SIGTERM: 508 after {refused_at:?}, {echoed} packets each over UDP and TCP echoed \
         during the drain, exit 0 after {exited_after:?}"
    );
}

#[test]
fn sigint_stops_at_once_with_an_allocation_in_place() {
    // A long drain timeout, to show SIGINT does not wait for it.
    let mut relay = start_cloudproxy(&options(&["--drain-timeout", "30"]));
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    // Allocations over every transport: open TCP and TLS connections must not hold up the exit.
    let mut clients = [
        client_with_channel(Conn::udp(relay.udp), peer.addr),
        client_with_channel(Conn::tcp(relay.tcp), peer.addr),
        client_with_channel(
            Conn::tls(relay.tls.expect("TLS listener"), Some(b"stun.turn")),
            peer.addr,
        ),
    ];
    for c in &mut clients {
        echo(c, b"before SIGINT");
    }

    let signalled = Instant::now();
    send_signal(relay.process.pid(), "INT");
    let status = wait_exit(&mut relay.process, Duration::from_secs(2));
    let stopped_after = signalled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 2 s after SIGINT; output:\n{}",
            relay.process.output.tail(30)
        )
    });
    assert!(status.success(), "exit status after SIGINT: {status}");
    assert!(!relay.logs().contains("panicked"), "{}", relay.logs());
    eprintln!("SIGINT: exit 0 after {stopped_after:?}");
}

// ------------------------------------------------------------------------------------------
// Start-up errors

/// Runs `cloudproxy relay` with listeners on port 0, a secret and `args`, and expects it to
/// refuse to start: a non-zero exit within a few seconds, without panicking. Returns stderr.
fn refused_start(what: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.arg("relay");
    for flag in ["--udp", "--tcp", "--tls", "--metrics"] {
        cmd.args([flag, "127.0.0.1:0"]);
    }
    cmd.args(["--static-secret", SECRET]).args(args);
    cmd.env("NO_COLOR", "1");
    let run = run_bounded(what, cmd, Duration::from_secs(10));
    let stderr = stderr_of(&run);
    let status = run.status.unwrap_or_else(|| {
        panic!(
            "{what}: the relay started instead of refusing (killed after {:?}); output:\n{}",
            run.elapsed, run.output
        )
    });
    assert!(
        !status.success(),
        "{what}: exit {status}; output:\n{}",
        run.output
    );
    assert!(
        run.elapsed < Duration::from_secs(5),
        "{what}: took {:?} to refuse",
        run.elapsed
    );
    assert!(
        !run.output.contains("panicked"),
        "{what}: panicked:\n{}",
        run.output
    );
    stderr
}

fn stderr_of(run: &BoundedRun) -> String {
    run.output
        .lines()
        .filter_map(|l| l.strip_prefix("[stderr] "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_names(what: &str, stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            stderr.contains(n),
            "{what}: stderr does not name {n:?}:\n{stderr}"
        );
    }
}

#[test]
fn bad_configuration_is_refused_with_a_message_naming_it() {
    let dir = common::TempDir::new("lifecycle");
    let file = |name: &str, text: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, text).expect("write config file");
        path.to_str().expect("utf-8 temp path").to_owned()
    };

    let unknown = file("unknown.toml", "udp = [\"127.0.0.1:0\"]\nfrobnicate = 1\n");
    let err = refused_start("unknown top-level key", &["--config", &unknown]);
    assert_names("unknown top-level key", &err, &["frobnicate", &unknown]);

    let nested = file("nested.toml", "[relay]\nipv5 = \"127.0.0.1\"\n");
    let err = refused_start("unknown key in [relay]", &["--config", &nested]);
    assert_names("unknown key in [relay]", &err, &["ipv5", &nested]);

    let cidr = file(
        "cidr.toml",
        "[peers]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
    );
    let err = refused_start("bad CIDR in [peers] allow", &["--config", &cidr]);
    assert_names(
        "bad CIDR in [peers] allow",
        &err,
        &["peers.allow[1]", "10.0.0.0/33", &cidr],
    );

    let err = refused_start("bad --allow-peer", &["--allow-peer", "300.1.2.3/8"]);
    assert_names("bad --allow-peer", &err, &["--allow-peer", "300.1.2.3/8"]);

    let err = refused_start("--cert without --key", &["--cert", "/nonexistent/cert.pem"]);
    assert_names("--cert without --key", &err, &["--cert", "--key"]);

    let err = refused_start("--key without --cert", &["--key", "/nonexistent/key.pem"]);
    assert_names("--key without --cert", &err, &["--cert", "--key"]);
}

// ------------------------------------------------------------------------------------------
// creds

/// Runs `cloudproxy creds --json` and returns the parsed JSON.
fn creds_json(secret: &str, id: &str, ttl: u64) -> serde_json::Value {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["creds", "--secret", secret, "--id", id, "--ttl"])
        .arg(ttl.to_string())
        .arg("--json");
    let run = run_bounded("cloudproxy creds", cmd, Duration::from_secs(10));
    assert!(run.success(), "creds failed: {run:?}");
    let stdout: String = run
        .output
        .lines()
        .filter(|l| !l.starts_with("[stderr] "))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("creds --json output is not JSON ({e}):\n{stdout}"))
}

/// A client using the username and password from `creds` output.
fn client_with_creds(server: SocketAddr, creds: &serde_json::Value) -> TurnClient {
    let mut c = TurnClient::with_secret(Conn::udp(server), "unused");
    c.username = creds["username"].as_str().expect("username").to_owned();
    c.password = creds["password"].as_str().expect("password").to_owned();
    c
}

#[test]
fn creds_json_authenticates_against_the_relay_and_a_wrong_secret_does_not() {
    let creds = creds_json(SECRET, "alice", 60);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let username = creds["username"].as_str().expect("a username string");
    let (expiry, id) = username.split_once(':').expect("<expiry>:<id>");
    assert_eq!(id, "alice");
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    assert!(
        (now + 50..=now + 70).contains(&expiry),
        "expiry {expiry} is not about 60 s after {now}"
    );
    assert!(!creds["password"].as_str().expect("a password").is_empty());
    let ice = &creds["iceServers"][0];
    assert_eq!(ice["username"], creds["username"], "{creds:#}");
    assert_eq!(ice["credential"], creds["password"], "{creds:#}");
    let urls = ice["urls"].as_array().expect("urls");
    assert!(
        urls.iter()
            .any(|u| u.as_str().is_some_and(|u| u.starts_with("turn:"))),
        "{creds:#}"
    );

    let relay = start_cloudproxy(&options(&[]));
    let mut c = client_with_creds(relay.udp, &creds);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate with minted creds: {:?}", r.error);
    assert_eq!(r.integrity_ok, Some(true));
    let r = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "refresh: {:?}", r.error);

    let wrong = creds_json("not-the-relay-secret", "alice", 60);
    assert_ne!(wrong["password"], creds["password"]);
    let mut c = client_with_creds(relay.udp, &wrong);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(
        r.error.as_ref().map(|e| e.0),
        Some(401),
        "allocate with a wrong secret"
    );
}

// ------------------------------------------------------------------------------------------
// diagnose

/// Nothing answers anywhere: `diagnose` says so, names the paths as `join` does, and exits 1
/// (a script can tell), not 0.
#[test]
fn diagnose_exits_non_zero_when_no_path_works() {
    let closed = common::reserve_ports(2, true);
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let token = cloudproxy_proto::token::Token::mint("app1", "k1", b"s", "room", 7, 4_000_000_000)
        .unwrap()
        .encode();
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["diagnose", "--media", &addr(closed[0])])
        .args([
            "--udp-proxy",
            &addr(closed[1]),
            "--tls-proxy",
            &addr(closed[1]),
        ])
        .args([
            "--channel",
            "room",
            "--uid",
            "7",
            "--token",
            &token,
            "--timeout",
            "2",
        ]);
    let run = run_bounded("diagnose", cmd, Duration::from_secs(30));
    let status = run.status.expect("diagnose ends");
    assert_eq!(status.code(), Some(1), "{}", run.output);
    assert!(run.output.contains("no path works"), "{}", run.output);
    assert!(
        run.output.contains("turn_udp") && !run.output.contains("TurnUdp"),
        "{}",
        run.output
    );
}
