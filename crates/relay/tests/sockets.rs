//! Real-socket integration tests: a relay on loopback, a UDP echo peer, and a blocking TURN
//! client over UDP, TCP and TLS. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{
    self, Attr, TransactionId, ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH,
};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::{AuthConfig, ServerConfig};
use cloudproxy_relay::{Relay, RelayConfig};
use cloudproxy_testkit::echo::EchoPeer;
use cloudproxy_testkit::turn::{Conn, TurnClient, TIMEOUT};

const SECRET: &str = "integration-secret";

fn relay(allow: &[&str]) -> Relay {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = RelayConfig {
        server: ServerConfig {
            realm: "test.realm".into(),
            auth: AuthConfig {
                static_secret: Some(SECRET.as_bytes().to_vec()),
                app_keys: vec![],
            },
            peer_policy: PeerPolicy::new(allow.iter().map(|r| r.parse::<PeerRule>().unwrap())),
            relay_ports: 22000..=22999,
            ..ServerConfig::default()
        },
        udp: vec![any],
        tcp: vec![any],
        tls: vec![any],
        metrics: Some(any),
        shards: 2,
        stream_idle_timeout: Duration::from_secs(1),
        ..RelayConfig::default()
    };
    Relay::start(config).expect("relay starts")
}

/// Allocate, bind a channel to the echo peer, send `n` packets and get each echoed back
/// through the relay as ChannelData.
fn relay_roundtrip(conn: Conn, peer: SocketAddr, n: usize) -> SocketAddr {
    let stream = conn.is_stream();
    let mut c = TurnClient::with_secret(conn, SECRET);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate: {:?}", r.error);
    assert_eq!(r.integrity_ok, Some(true));
    let relayed = r.relayed[0];
    let r = c.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4000), Attr::PeerAddress(peer)],
    );
    assert!(r.success, "channel bind: {:?}", r.error);
    for i in 0..n {
        let payload = format!("packet {i} of {n}, odd length");
        c.conn
            .send(&client::channel_data(0x4000, payload.as_bytes(), stream));
        let back = c.conn.recv();
        let expected = client::channel_data(0x4000, payload.as_bytes(), stream);
        assert_eq!(back, expected, "echo {i}");
    }
    // Send indication path too: permission exists through the channel binding.
    c.tid += 1;
    c.conn.send(&client::send_indication(
        TransactionId::from(c.tid),
        peer,
        b"via send",
    ));
    let back = c.conn.recv();
    // The peer has a channel, so the answer comes as ChannelData.
    assert_eq!(back, client::channel_data(0x4000, b"via send", stream));
    let r = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success);
    relayed
}

fn metrics_text(relay: &Relay) -> String {
    let addr = relay.local_addrs().metrics.unwrap();
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn metric(relay: &Relay, name_and_labels: &str) -> u64 {
    metrics_text(relay)
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn udp_tcp_and_tls_relay_channel_data_and_metrics_count_it() {
    let relay = relay(&["127.0.0.0/8"]);
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let addrs = relay.local_addrs().clone();
    relay_roundtrip(Conn::udp(addrs.udp[0]), peer.addr, 50);
    relay_roundtrip(Conn::tcp(addrs.tcp[0]), peer.addr, 30);
    relay_roundtrip(Conn::tls(addrs.tls[0], Some(b"stun.turn")), peer.addr, 20);
    relay_roundtrip(Conn::tls(addrs.tls[0], None), peer.addr, 10);
    // 50 + 1 over UDP, 31 over TCP, 21 + 11 over TLS, in each direction.
    for (transport, n) in [("udp", 51), ("tcp", 31), ("tls", 32)] {
        for dir in ["client_to_peer", "peer_to_client"] {
            let got = metric(
                &relay,
                &format!(
                    "cloudproxy_packets_total{{direction=\"{dir}\",transport=\"{transport}\"}}"
                ),
            );
            assert_eq!(got, n, "{dir} over {transport}");
        }
    }
    assert_eq!(metric(&relay, "cloudproxy_allocations "), 0);
    assert!(metric(&relay, "cloudproxy_allocations_created_total") >= 4);
}

#[test]
fn loopback_peer_is_forbidden_by_default() {
    let relay = relay(&[]);
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let mut c = TurnClient::with_secret(Conn::udp(relay.local_addrs().udp[0]), SECRET);
    assert!(c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]).success);
    let r = c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(peer.addr)]);
    assert_eq!(r.error.unwrap().0, 403);
    let m = metric(&relay, "cloudproxy_errors_total{code=\"403\"}");
    assert!(m >= 1, "{}", metrics_text(&relay));
}

#[test]
fn wrong_secret_is_refused_and_counted() {
    let relay = relay(&["127.0.0.0/8"]);
    let mut c = TurnClient::with_secret(Conn::tcp(relay.local_addrs().tcp[0]), "wrong-secret");
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.unwrap().0, 401);
    assert_eq!(metric(&relay, "cloudproxy_auth_failures_total"), 1);
}

#[test]
fn garbage_on_a_stream_closes_only_that_connection() {
    let relay = relay(&["127.0.0.0/8"]);
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let tcp = relay.local_addrs().tcp[0];
    let mut bad = TcpStream::connect_timeout(&tcp, TIMEOUT).unwrap();
    bad.set_read_timeout(Some(TIMEOUT)).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(bad.read(&mut buf).unwrap_or(0), 0, "closed");
    // Others keep working.
    relay_roundtrip(Conn::tcp(tcp), peer.addr, 5);
    relay_roundtrip(Conn::udp(relay.local_addrs().udp[0]), peer.addr, 5);
}

#[test]
fn silent_connections_are_timed_out() {
    let relay = relay(&[]);
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 {
                relay.local_addrs().tcp[0]
            } else {
                relay.local_addrs().tls[0]
            };
            let s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    for s in &mut silent {
        let mut buf = [0u8; 1];
        // EOF (Ok(0)) or reset: the server hung up on its own (idle timeout is 1 s here).
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn garbage_datagrams_do_not_disturb_the_relay() {
    let relay = relay(&["127.0.0.0/8"]);
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let udp = relay.local_addrs().udp[0];
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u32 = 12345;
    for len in 0..300usize {
        let mut d = vec![0u8; len];
        for b in &mut d {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        if len > 0 {
            d[0] &= 0x7f; // STUN or ChannelData first bits, to get past the demux
        }
        junk.send_to(&d, udp).unwrap();
    }
    relay_roundtrip(Conn::udp(udp), peer.addr, 5);
}

#[test]
fn large_frames_on_a_stream_are_reassembled() {
    // A Send indication with a 9000-byte payload: larger than a stream connection's initial
    // read buffer, so the relay must grow it to reassemble the frame.
    let relay = relay(&["127.0.0.0/8"]);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut c = TurnClient::with_secret(Conn::tcp(relay.local_addrs().tcp[0]), SECRET);
    assert!(c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]).success);
    let peer_addr = peer.local_addr().unwrap();
    assert!(
        c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(peer_addr)])
            .success
    );
    let payload: Vec<u8> = (0..9000u32).map(|i| i as u8).collect();
    c.tid += 1;
    c.conn.send(&client::send_indication(
        TransactionId::from(c.tid),
        peer_addr,
        &payload,
    ));
    let mut buf = vec![0u8; 10_000];
    let (n, _) = peer
        .recv_from(&mut buf)
        .expect("the peer gets the datagram");
    assert_eq!(&buf[..n], &payload[..]);
}

/// Even with every network allowed (and loopback opened for the test), the relay will not
/// send to itself: not to another allocation's relayed address (a relay loop), not to its own
/// listeners. An ordinary peer on the same host, at another port, is fine.
#[test]
fn the_relay_refuses_its_own_addresses_as_peers() {
    let relay = relay(&["0.0.0.0/0", "::/0", "127.0.0.0/8"]);
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let addrs = relay.local_addrs().clone();
    let mut other = TurnClient::with_secret(Conn::udp(addrs.udp[0]), SECRET);
    let r = other.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate: {:?}", r.error);
    let other_relayed = r.relayed[0];

    let mut c = TurnClient::with_secret(Conn::udp(addrs.udp[0]), SECRET);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate: {:?}", r.error);
    let own_relayed = r.relayed[0];
    let mapped = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    for (what, target) in [
        ("another allocation's relayed address", other_relayed),
        ("its own relayed address", own_relayed),
        ("the UDP listener", addrs.udp[0]),
        ("the TCP listener", addrs.tcp[0]),
        ("the TLS listener", addrs.tls[0]),
    ] {
        let r = c.transact(
            CHANNEL_BIND,
            &[Attr::ChannelNumber(0x4001), Attr::PeerAddress(target)],
        );
        assert_eq!(
            r.error.as_ref().map(|e| e.0),
            Some(403),
            "ChannelBind to {what} ({target})"
        );
    }
    // An IPv4 allocation refuses an IPv6 peer first (443 Peer Address Family Mismatch); the
    // mapped form is judged as the IPv4 address it carries in the policy tests.
    let r = c.transact(
        CHANNEL_BIND,
        &[
            Attr::ChannelNumber(0x4001),
            Attr::PeerAddress(mapped(other_relayed)),
        ],
    );
    assert!(
        matches!(r.error.as_ref().map(|e| e.0), Some(403 | 443)),
        "{:?}",
        r.error
    );
    let r = c.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4001), Attr::PeerAddress(peer.addr)],
    );
    assert!(r.success, "an ordinary peer on this host: {:?}", r.error);
}

/// The relay as an amplifier, measured on the wire: the answer to each unauthenticated
/// request, over its size. None may exceed 4×; malformed messages get no answer at all.
#[test]
fn unauthenticated_answers_stay_within_four_times_the_request() {
    let relay = relay(&[]);
    let server = relay.local_addrs().udp[0];
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ask = |req: &[u8]| -> Option<usize> {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send_to(req, server).unwrap();
        let mut buf = [0u8; 65536];
        s.recv_from(&mut buf).ok().map(|(n, _)| n)
    };
    let header = |method: u16, len: u16| {
        let mut h = vec![0u8; 20];
        h[..2].copy_from_slice(&method.to_be_bytes());
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        h[8..20].copy_from_slice(b"reflect-test");
        h
    };
    // 1. A bare Allocate (20 bytes).
    let bare = header(0x0003, 0);
    let n = ask(&bare).expect("a 401");
    eprintln!(
        "unauthenticated Allocate: {} -> {n} bytes ({:.1}x)",
        bare.len(),
        n as f64 / 20.0
    );
    assert!(n <= 4 * bare.len());
    // 2. Malformed: an attribute running past the end.
    let mut bad = header(0x0003, 8);
    bad.extend_from_slice(&[0x00, 0x19, 0x00, 0x40, 0x11, 0, 0, 0]);
    assert_eq!(ask(&bad), None, "malformed messages get no answer");
    assert_eq!(metric(&relay, "cloudproxy_malformed_dropped_total"), 1);
    eprintln!("malformed message: {} -> no answer", bad.len());
    // 3. 1,000 unknown comprehension-required attributes (the same one, then all different).
    for distinct in [false, true] {
        let mut req = header(0x0003, 4000);
        for i in 0..1000u16 {
            let t = if distinct { 0x4000 + i } else { 0x4000 };
            req.extend_from_slice(&t.to_be_bytes());
            req.extend_from_slice(&[0, 0]);
        }
        let n = ask(&req).expect("a 420");
        eprintln!(
            "420 for 1,000 unknown attributes (distinct: {distinct}): {} -> {n} bytes ({:.3}x)",
            req.len(),
            n as f64 / req.len() as f64
        );
        assert!(n <= 4 * req.len());
        assert!(n <= 100, "each listed once, at most 16: {n} bytes");
    }
}

/// Every shard measures how late its 10 ms tick runs, from the start, for `/metrics`.
#[test]
fn event_loops_report_their_lag() {
    let relay = relay(&[]);
    let count = || {
        relay
            .metrics()
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("cloudproxy_event_loop_lag_seconds_count "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "no lag samples:\n{}",
            relay.metrics().encode()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(relay
        .metrics()
        .encode()
        .contains("cloudproxy_event_loop_stalls_total"));
}
