//! A relay's day in operation: drain on SIGTERM, reload on SIGHUP, and restarts that bind
//! again at once.
//!
//! * SIGTERM with no allocation exits at once; with allocations, new Allocates get 508 and
//!   the process exits when the last allocation ends, long before the drain timeout.
//! * SIGHUP with a renewed certificate: new TLS clients get the new certificate while an
//!   established TLS session keeps relaying. SIGHUP also applies the peer policy and the
//!   quotas from the config file; a broken config file is refused, logged, counted, and the
//!   old configuration stays in force.
//! * A relay and a control plane restarted right after serving TCP and TLS clients (their
//!   connections in TIME_WAIT on the listening port) bind the same port again at once.
//!
//! Everything runs on loopback; every child is killed on drop and every wait has a deadline.
//! Run just these: `cargo test -p cloudproxy --test drain_reload -- --nocapture`.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{self, Attr, ALLOCATE, CHANNEL_BIND, REFRESH};
use cloudproxy_testkit::echo::EchoPeer;
use cloudproxy_testkit::turn::{Conn, TurnClient, TIMEOUT};
use common::turn::{echo, CHANNEL};
use common::{
    cloudproxy_bin, reserve_ports, send_signal, start_cloudproxy, wait_exit, wait_for_listeners,
    ChildGuard, Relay, RelayOptions, TempDir,
};

const SECRET: &str = "drain-reload-secret";

fn client_with_channel(conn: Conn, peer: SocketAddr) -> TurnClient {
    common::turn::client_with_channel(conn, SECRET, peer)
}

fn try_allocate(conn: Conn) -> Result<(), u16> {
    common::turn::try_allocate(conn, SECRET)
}

fn metric(relay: &Relay, series: &str) -> Option<f64> {
    common::metric(relay.metrics.expect("metrics listener"), series)
}

fn options(extra: &[String]) -> RelayOptions {
    RelayOptions {
        secret: SECRET.into(),
        // Peers come from the config file where a test reloads them.
        allow_peers: Vec::new(),
        relay_port_count: 20,
        extra_args: extra.to_vec(),
        ..RelayOptions::default()
    }
}

/// Whether a ChannelData packet comes back within `wait` (UDP only).
fn echoes_within(c: &mut TurnClient, payload: &[u8], wait: Duration) -> bool {
    let Conn::Udp(s, _) = &c.conn else {
        panic!("UDP clients only")
    };
    s.set_read_timeout(Some(wait)).unwrap();
    let msg = client::channel_data(CHANNEL, payload, false);
    c.conn.send(&msg);
    let Conn::Udp(s, _) = &c.conn else {
        unreachable!()
    };
    let mut buf = [0u8; 2048];
    let got = s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec());
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    got.as_deref() == Some(&msg[..])
}

/// Waits until `relay`'s output contains `needle` (bounded).
fn wait_log(relay: &Relay, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !relay.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the relay's output within 15 s:\n{}",
            relay.process.output.tail(40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts `needle` in the relay's output.
fn log_count(relay: &Relay, needle: &str) -> usize {
    relay.logs().matches(needle).count()
}

/// Sends SIGHUP and waits for the relay to log the outcome (the `n`th reload line).
fn sighup(relay: &Relay) {
    let before = log_count(relay, "configuration reloaded") + log_count(relay, "reload refused");
    send_signal(relay.process.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while log_count(relay, "configuration reloaded") + log_count(relay, "reload refused") == before
    {
        assert!(
            Instant::now() < deadline,
            "no reload logged within 15 s of SIGHUP:\n{}",
            relay.process.output.tail(40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------------
// Drain

#[test]
fn sigterm_without_allocations_exits_at_once() {
    let mut relay = start_cloudproxy(&options(&["--drain-timeout".into(), "30".into()]));
    // One allocation made and deleted: what counts is the allocations held now.
    assert_eq!(try_allocate(Conn::udp(relay.udp)), Ok(()));
    let signalled = Instant::now();
    send_signal(relay.process.pid(), "TERM");
    let status = wait_exit(&mut relay.process, Duration::from_secs(10));
    let after = signalled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 10 s after SIGTERM with no allocation (drain timeout 30 s):\n{}",
            relay.process.output.tail(30)
        )
    });
    eprintln!("SIGTERM with 0 allocations: {status} after {after:?}");
    assert!(status.success(), "{status}");
    assert!(
        after < Duration::from_secs(1),
        "exit took {after:?} with no allocation to drain"
    );
    // The output is read by threads: give them the last lines (bounded).
    wait_log(&relay, "drained: no allocation left");
}

#[test]
fn sigterm_refuses_new_allocations_and_exits_when_the_last_one_ends() {
    let mut relay = start_cloudproxy(&options(&[
        "--drain-timeout".into(),
        "60".into(),
        "--allow-peer".into(),
        "127.0.0.0/8".into(),
    ]));
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let mut udp = client_with_channel(Conn::udp(relay.udp), peer.addr);
    let mut tcp = client_with_channel(Conn::tcp(relay.tcp), peer.addr);

    send_signal(relay.process.pid(), "TERM");
    wait_log(&relay, "SIGTERM: draining");
    assert_eq!(try_allocate(Conn::udp(relay.udp)), Err(508), "new UDP");
    assert_eq!(try_allocate(Conn::tcp(relay.tcp)), Err(508), "new TCP");
    echo(&mut udp, b"during the drain");
    echo(&mut tcp, b"during the drain, over TCP");

    // One of two ends: the relay keeps running for the other.
    let r = udp.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "delete: {:?}", r.error);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        relay.process.try_wait().is_none(),
        "exited with an allocation still held:\n{}",
        relay.process.output.tail(30)
    );
    echo(&mut tcp, b"still flowing after the other left");

    // The last one ends: exit 0, long before the 60 s drain timeout.
    let r = tcp.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "delete: {:?}", r.error);
    let ended = Instant::now();
    let status = wait_exit(&mut relay.process, Duration::from_secs(20));
    let after = ended.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 20 s after the last allocation ended:\n{}",
            relay.process.output.tail(30)
        )
    });
    eprintln!("SIGTERM with 2 allocations: {status} {after:?} after the last one ended");
    assert!(status.success(), "{status}");
    // The output is read by threads: give them the last lines (bounded).
    wait_log(&relay, "drained: no allocation left");
}

// ------------------------------------------------------------------------------------------
// Reload

/// A config file holding what the reload tests change: certificate, peers, quota.
fn write_config(path: &Path, cert: &Path, key: &Path, peers: &str, quota: usize) {
    let text = format!(
        "[tls_cert]\ncert = {cert:?}\nkey = {key:?}\n\n[peers]\nallow = [{peers}]\n\n\
         [relay]\nuser_quota = {quota}\n"
    );
    std::fs::write(path, text).expect("write config");
}

fn write_identity(dir: &TempDir, cert: &Path, key: &Path) -> Vec<u8> {
    let (cert_pem, key_pem) =
        cloudproxy_relay::tls::self_signed_pem(["localhost", "127.0.0.1"]).unwrap();
    // Renewal tools replace the files; write-then-rename, as they do.
    let tmp = dir.0.join("renew.tmp");
    std::fs::write(&tmp, &key_pem).unwrap();
    std::fs::rename(&tmp, key).unwrap();
    std::fs::write(&tmp, &cert_pem).unwrap();
    std::fs::rename(&tmp, cert).unwrap();
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The leaf certificate a TLS client of the relay is shown (after one TURN transaction).
fn presented_certificate(tls: SocketAddr) -> Vec<u8> {
    let mut c = TurnClient::with_secret(Conn::tls(tls, Some(b"stun.turn")), SECRET);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.map(|e| e.0), None, "allocate over TLS");
    let _ = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    certificate_of(&c)
}

fn certificate_of(c: &TurnClient) -> Vec<u8> {
    match &c.conn {
        Conn::Tls(s, _) => s.conn.peer_certificates().expect("handshake done")[0].to_vec(),
        _ => panic!("not a TLS client"),
    }
}

#[test]
fn sighup_renews_the_certificate_without_dropping_a_tls_session() {
    let dir = TempDir::new("reload-cert");
    let (cert, key, file) = (
        dir.0.join("cert.pem"),
        dir.0.join("key.pem"),
        dir.0.join("relay.toml"),
    );
    let first = write_identity(&dir, &cert, &key);
    write_config(&file, &cert, &key, "\"127.0.0.0/8\"", 32);
    let relay = start_cloudproxy(&options(&["--config".into(), file.display().to_string()]));
    let tls = relay.tls.expect("TLS listener");
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();

    let mut held = client_with_channel(Conn::tls(tls, Some(b"stun.turn")), peer.addr);
    assert_eq!(certificate_of(&held), first);
    echo(&mut held, b"before the renewal");
    assert_eq!(presented_certificate(tls), first);

    let second = write_identity(&dir, &cert, &key);
    assert_ne!(first, second);
    sighup(&relay);
    assert!(
        relay.logs().contains("certificate_reloaded=true"),
        "{}",
        relay.logs()
    );

    assert_eq!(
        presented_certificate(tls),
        second,
        "a new TLS client must see the renewed certificate"
    );
    for i in 0..20 {
        echo(
            &mut held,
            format!("after the renewal, packet {i}").as_bytes(),
        );
    }
    let r = held.transact(REFRESH, &[Attr::Lifetime(600)]);
    assert!(r.success, "refresh on the old session: {:?}", r.error);
    assert_eq!(
        metric(&relay, "cloudproxy_config_reloads_total{outcome=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&relay, "cloudproxy_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(metric(&relay, "cloudproxy_allocations"), Some(1.0));
}

#[test]
fn sighup_applies_peers_and_quota_and_refuses_a_broken_config() {
    let dir = TempDir::new("reload-policy");
    let (cert, key, file) = (
        dir.0.join("cert.pem"),
        dir.0.join("key.pem"),
        dir.0.join("relay.toml"),
    );
    write_identity(&dir, &cert, &key);
    write_config(&file, &cert, &key, "\"127.0.0.0/8\"", 32);
    let mut relay = start_cloudproxy(&options(&["--config".into(), file.display().to_string()]));
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let mut a = client_with_channel(Conn::udp(relay.udp), peer.addr);
    echo(&mut a, b"allowed");

    // 1. A broken file: refused, logged with the file's name, counted; the old one stays.
    std::fs::write(&file, "[peers]\nallow = [\"127.0.0.0/33\"]\n").unwrap();
    sighup(&relay);
    relay.assert_alive();
    let logs = relay.logs();
    let refusal = logs
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("a refusal line");
    assert!(
        refusal.contains("127.0.0.0/33") && refusal.contains("relay.toml"),
        "the refusal must say what is wrong and where: {refusal}"
    );
    assert_eq!(
        metric(&relay, "cloudproxy_config_reloads_total{outcome=\"error\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&relay, "cloudproxy_config_last_reload_successful"),
        Some(0.0)
    );
    echo(&mut a, b"still allowed under the old policy");
    assert_eq!(try_allocate(Conn::udp(relay.udp)), Ok(()));

    // 2. A quota of 1 per credential: the held allocation stays, a second one gets 486.
    write_config(&file, &cert, &key, "\"127.0.0.0/8\"", 1);
    sighup(&relay);
    assert_eq!(
        metric(&relay, "cloudproxy_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(try_allocate(Conn::udp(relay.udp)), Err(486));
    echo(
        &mut a,
        b"the held allocation is above the new quota and stays",
    );

    // 3. The peer's network leaves the policy: relaying to it stops at once, the allocation
    // stays (a Refresh succeeds), and a new permission for it is refused.
    write_config(&file, &cert, &key, "\"10.0.0.0/8\"", 32);
    sighup(&relay);
    assert!(
        !echoes_within(&mut a, b"denied now", Duration::from_millis(700)),
        "data still relayed to a peer the reloaded policy denies"
    );
    let r = a.transact(REFRESH, &[Attr::Lifetime(600)]);
    assert!(
        r.success,
        "the allocation must survive the reload: {:?}",
        r.error
    );
    // (A second peer: the first one's address stays reserved to its channel, §12.)
    let other = EchoPeer::start("127.0.0.1:0").unwrap();
    let r = a.transact(
        CHANNEL_BIND,
        &[
            Attr::ChannelNumber(CHANNEL + 1),
            Attr::PeerAddress(other.addr),
        ],
    );
    assert_eq!(r.error.map(|e| e.0), Some(403));
    assert_eq!(
        try_allocate(Conn::udp(relay.udp)),
        Ok(()),
        "quota back to 32"
    );

    // 4. And back: permissions are installed again and data flows.
    write_config(&file, &cert, &key, "\"127.0.0.0/8\"", 32);
    sighup(&relay);
    let r = a.transact(
        CHANNEL_BIND,
        &[
            Attr::ChannelNumber(CHANNEL + 1),
            Attr::PeerAddress(other.addr),
        ],
    );
    assert!(r.success, "channel bind after re-allowing: {:?}", r.error);
    let msg = client::channel_data(CHANNEL + 1, b"allowed again", false);
    a.conn.send(&msg);
    assert_eq!(a.conn.recv(), msg);
    assert_eq!(
        metric(&relay, "cloudproxy_config_reloads_total{outcome=\"ok\"}"),
        Some(3.0)
    );
    assert!(!relay.logs().contains("panicked"));
}

// ------------------------------------------------------------------------------------------
// Restart with connections in TIME_WAIT

/// Sockets in TIME_WAIT whose local port is `port` (from /proc/net/tcp and tcp6).
fn time_wait_on(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 06 is TIME_WAIT.
            if local_port == Some(port) && f.get(3) == Some(&"06") {
                n += 1;
            }
        }
    }
    n
}

/// Starts `cloudproxy relay` on exactly these listener ports.
fn relay_on(ports: &[u16], relay_ports: &str) -> ChildGuard {
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.arg("relay")
        .args(["--udp", &addr(ports[0])])
        .args(["--tcp", &addr(ports[1])])
        .args(["--tls", &addr(ports[2])])
        .args(["--metrics", &addr(ports[3])])
        .args(["--static-secret", SECRET, "--relay-ip", "127.0.0.1"])
        .args(["--relay-ports", relay_ports]);
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy relay", cmd).unwrap();
    if let Err(why) = wait_for_listeners(&mut guard, &lines, &["udp", "tcp", "tls", "metrics"]) {
        panic!(
            "the relay did not bind {ports:?}: {why}\n{}",
            guard.output.tail(30)
        );
    }
    guard
}

/// A TURN client over a stream that allocates, deletes, and reads until the relay closes
/// the connection first (so the relay's side is the one left in TIME_WAIT).
fn served_and_closed_by_relay(conn: Conn) {
    let mut c = TurnClient::with_secret(conn, SECRET);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate: {:?}", r.error);
    let r = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "delete: {:?}", r.error);
    let mut buf = [0u8; 256];
    let eof = match &mut c.conn {
        Conn::Tcp(s, _) => matches!(s.read(&mut buf), Ok(0)),
        Conn::Tls(s, _) => matches!(s.read(&mut buf), Ok(0) | Err(_)),
        Conn::Udp(..) => unreachable!(),
    };
    assert!(
        eof,
        "the relay should close the connection after the last allocation"
    );
}

#[test]
fn a_restarted_relay_binds_again_while_its_old_connections_are_in_time_wait() {
    let ports = reserve_ports(4, true);
    let relay_ports = reserve_ports(10, false);
    let range = format!("{}-{}", relay_ports[0], relay_ports[9]);
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let mut first = relay_on(&ports, &range);
    // Serve and close until the relay's side of both listeners holds connections in
    // TIME_WAIT (on a busy machine a close can race; more connections settle it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while time_wait_on(ports[1]) == 0 || time_wait_on(ports[2]) == 0 {
        assert!(
            Instant::now() < deadline,
            "no TIME_WAIT on the relay's ports: tcp {} tls {}",
            time_wait_on(ports[1]),
            time_wait_on(ports[2])
        );
        served_and_closed_by_relay(Conn::tcp(addr(ports[1])));
        served_and_closed_by_relay(Conn::tls(addr(ports[2]), Some(b"stun.turn")));
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill();
    let (tcp_tw, tls_tw) = (time_wait_on(ports[1]), time_wait_on(ports[2]));
    let restarted = Instant::now();
    let _second = relay_on(&ports, &range);
    eprintln!(
        "relay restarted with {tcp_tw} TCP and {tls_tw} TLS connections in TIME_WAIT: \
         listening again after {:?}",
        restarted.elapsed()
    );
    assert!(tcp_tw > 0 && tls_tw > 0);
    // And it serves.
    served_and_closed_by_relay(Conn::tcp(addr(ports[1])));
}

fn control_on(port: u16, db: &str) -> ChildGuard {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["control", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", db])
        .args(["--operator-key", "drain-reload-operator-key"]);
    let (guard, lines) = ChildGuard::spawn("cloudproxy control", cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.starts_with("control http://") => return guard,
            Ok(_) => {}
            Err(_) => panic!(
                "the control plane did not bind port {port}:\n{}",
                guard.output.tail(30)
            ),
        }
    }
}

#[test]
fn a_restarted_control_plane_binds_again_while_its_old_connections_are_in_time_wait() {
    let dir = TempDir::new("control-restart");
    let db = format!("sqlite:{}", dir.0.join("control.db").display());
    let port = reserve_ports(1, true)[0];
    let mut first = control_on(port, &db);
    // `Connection: close`: the server closes after its answer, so TIME_WAIT is its own. On a
    // busy machine a close can race; more requests settle it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while time_wait_on(port) == 0 {
        assert!(
            Instant::now() < deadline,
            "no TIME_WAIT on the control plane's port"
        );
        let (code, _) = common::http(
            &format!("127.0.0.1:{port}"),
            "GET",
            "/v1/regions",
            Some("drain-reload-operator-key"),
            "",
        );
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill();
    let tw = time_wait_on(port);
    let restarted = Instant::now();
    let _second = control_on(port, &db);
    eprintln!(
        "control plane restarted with {tw} connections in TIME_WAIT: listening again after {:?}",
        restarted.elapsed()
    );
    let (code, _) = common::http(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/v1/regions",
        Some("drain-reload-operator-key"),
        "",
    );
    assert_eq!(code, 200);
}

// ------------------------------------------------------------------------------------------
// Health and readiness

/// `GET path` on the relay's metrics listener: (status, body).
fn probe(relay: &Relay, path: &str) -> (u16, String) {
    let (code, text) = common::http(
        &relay.metrics.expect("metrics listener").to_string(),
        "GET",
        path,
        None,
        "",
    );
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    (code, body.to_owned())
}

#[test]
fn healthz_and_readyz_follow_the_relay_through_a_drain() {
    let relay = start_cloudproxy(&options(&[
        "--drain-timeout".into(),
        "60".into(),
        "--allow-peer".into(),
        "127.0.0.0/8".into(),
    ]));
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    assert_eq!(probe(&relay, "/healthz"), (200, "ok".into()));
    assert_eq!(probe(&relay, "/readyz"), (200, "ready".into()));
    let mut held = client_with_channel(Conn::udp(relay.udp), peer.addr);
    send_signal(relay.process.pid(), "TERM");
    wait_log(&relay, "SIGTERM: draining");
    // Draining: alive, but a load balancer must stop sending clients.
    assert_eq!(probe(&relay, "/healthz"), (200, "ok".into()));
    let (code, why) = probe(&relay, "/readyz");
    assert_eq!(code, 503);
    assert!(why.contains("draining"), "{why}");
    echo(&mut held, b"still relayed while not ready");
}

#[test]
fn a_governed_relay_is_not_ready_before_it_has_a_directory() {
    // A control plane nobody listens on, and no sync cache.
    let nowhere = reserve_ports(1, true)[0];
    let relay = start_cloudproxy(&options(&[
        "--control".into(),
        format!("http://127.0.0.1:{nowhere}"),
        "--control-key".into(),
        "relay-key-nobody-has-0123456789".into(),
        "--edge-id".into(),
        "jp-readyz".into(),
        "--region".into(),
        "japan".into(),
    ]));
    assert_eq!(probe(&relay, "/healthz"), (200, "ok".into()));
    let (code, why) = probe(&relay, "/readyz");
    assert_eq!(code, 503);
    assert!(why.contains("directory"), "{why}");
}
