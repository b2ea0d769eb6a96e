//! Force TCP under a slow-sender attack: connections that announce a 65,532-byte STUN message
//! and then trickle one byte every 3 s, over TCP and over TLS. The relay's deadlines (a frame
//! must complete within 5 s of starting; a connection must allocate within 10 s) close them,
//! while a legitimate TLS client allocates and relays every packet, and the relay's memory
//! stays flat. A per-source connection cap refuses the excess of one address and counts it.
//!
//! Everything runs on loopback: attackers connect from 127.0.0.2 and 127.0.0.3, the legitimate
//! client from 127.0.0.1. Run just these: `cargo test -p cloudproxy --test hostile_streams --
//! --nocapture`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{self, Attr, ALLOCATE, CHANNEL_BIND};
use cloudproxy_testkit::echo::EchoPeer;
use cloudproxy_testkit::turn::{Conn, TurnClient};
use common::{rss_kib, start_cloudproxy, Relay, RelayOptions, TempDir};

const SECRET: &str = "hostile-secret";
const PER_TRANSPORT: usize = 300;

fn relay_with(config: &str) -> (Relay, TempDir) {
    let dir = TempDir::new("hostile");
    let file = dir.0.join("relay.toml");
    std::fs::write(&file, config).unwrap();
    let relay = start_cloudproxy(&RelayOptions {
        secret: SECRET.into(),
        allow_peers: vec!["127.0.0.0/8".into()],
        relay_port_count: 20,
        extra_args: vec!["--config".into(), file.display().to_string()],
        ..RelayOptions::default()
    });
    (relay, dir)
}

fn metric(relay: &Relay, series: &str) -> f64 {
    common::metric(relay.metrics.expect("metrics"), series).unwrap_or(0.0)
}

/// A TCP connection from `source` (an address of the loopback network).
fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(source.parse().unwrap(), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(10))?;
    Ok(s.into())
}

/// A STUN Allocate header announcing 0xFFFC bytes of attributes that never come.
fn endless_header() -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[..2].copy_from_slice(&0x0003u16.to_be_bytes());
    h[2..4].copy_from_slice(&0xFFFCu16.to_be_bytes());
    h[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    h[8..20].copy_from_slice(b"slow-sender!");
    h
}

/// One slow sender, over TCP or TLS.
enum Slow {
    Tcp(TcpStream),
    Tls(Box<rustls::ClientConnection>, TcpStream),
}

impl Slow {
    fn tcp(to: SocketAddr) -> Option<Self> {
        let mut s = connect_from("127.0.0.2", to).ok()?;
        s.write_all(&endless_header()).ok()?;
        s.set_nonblocking(true).unwrap();
        Some(Slow::Tcp(s))
    }

    fn tls(to: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Option<Self> {
        let mut s = connect_from("127.0.0.2", to).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c =
            rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).ok()?;
        while c.is_handshaking() {
            c.complete_io(&mut s).ok()?;
        }
        c.writer().write_all(&endless_header()).ok()?;
        while c.wants_write() {
            c.write_tls(&mut s).ok()?;
        }
        s.set_nonblocking(true).unwrap();
        Some(Slow::Tls(Box::new(c), s))
    }

    /// Whether the relay has closed the connection (EOF or reset).
    fn closed(&mut self) -> bool {
        match self {
            Slow::Tcp(s) => {
                let mut b = [0u8; 64];
                match s.read(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                }
            }
            Slow::Tls(c, s) => match c.read_tls(s) {
                Ok(0) => true,
                Ok(_) => c.process_new_packets().is_err(),
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            },
        }
    }

    /// One more byte of the message; false if the connection is gone.
    fn trickle(&mut self) -> bool {
        match self {
            Slow::Tcp(s) => s.write(&[0]).is_ok(),
            Slow::Tls(c, s) => c.writer().write_all(&[0]).is_ok() && c.write_tls(s).is_ok(),
        }
    }
}

#[test]
fn slow_senders_are_closed_while_a_tls_client_relays() {
    let (mut relay, _dir) = relay_with("");
    let tls_addr = relay.tls.expect("TLS listener");
    let pid = relay.process.pid();
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let rss_before = rss_kib(pid);
    let config = cloudproxy_sdk::tls::insecure_client_config(Some(b"stun.turn"));

    let started = Instant::now();
    let mut slow: Vec<(Slow, Option<Duration>)> = Vec::new();
    let mut opened_at = Vec::new();
    for i in 0..2 * PER_TRANSPORT {
        let s = if i % 2 == 0 {
            Slow::tcp(relay.tcp)
        } else {
            Slow::tls(tls_addr, &config)
        };
        let s = s.unwrap_or_else(|| panic!("slow sender {i} could not even connect"));
        opened_at.push(started.elapsed());
        slow.push((s, None));
    }
    let all_open = started.elapsed();
    let open_now = metric(&relay, "cloudproxy_stream_connections");
    eprintln!(
        "{} slow senders connected in {all_open:?}; relay holds {open_now}",
        slow.len()
    );

    // The legitimate client, during the attack.
    let mut c = TurnClient::with_secret(Conn::tls(tls_addr, Some(b"stun.turn")), SECRET);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate during the attack: {:?}", r.error);
    let r = c.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4000), Attr::PeerAddress(peer.addr)],
    );
    assert!(r.success, "channel bind: {:?}", r.error);
    let mut echoed = 0;
    let mut rss_peak = rss_kib(pid);
    let mut last_trickle = Instant::now();
    let deadline = started + all_open + Duration::from_secs(12);
    while Instant::now() < deadline {
        if echoed < 50 {
            let msg = client::channel_data(0x4000, format!("legit {echoed}").as_bytes(), true);
            c.conn.send(&msg);
            assert_eq!(c.conn.recv(), msg, "legit packet {echoed}");
            echoed += 1;
        }
        let trickle = last_trickle.elapsed() >= Duration::from_secs(3);
        for (i, (s, closed)) in slow.iter_mut().enumerate() {
            if closed.is_none() && (s.closed() || (trickle && !s.trickle())) {
                *closed = Some(started.elapsed().saturating_sub(opened_at[i]));
            }
        }
        if trickle {
            last_trickle = Instant::now();
        }
        rss_peak = rss_peak.max(rss_kib(pid));
        if slow.iter().all(|(_, c)| c.is_some()) && echoed == 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    relay.assert_alive();

    let within = |limit: Duration| {
        slow.iter()
            .filter(|(_, c)| c.is_some_and(|d| d <= limit))
            .count()
    };
    let closed_10s = within(Duration::from_secs(10));
    let mut lives: Vec<Duration> = slow.iter().filter_map(|(_, c)| *c).collect();
    lives.sort();
    let median = lives.get(lives.len() / 2).copied();
    let growth_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "slow senders closed within 10 s of connecting: {closed_10s} of {} (median life {median:?}); \
         legitimate TLS client: {echoed}/50 echoed; relay RSS {} -> peak {} KiB (+{growth_mib:.1} MiB)",
        slow.len(),
        rss_before,
        rss_peak
    );
    eprintln!(
        "frame timeouts counted: {}",
        metric(&relay, "cloudproxy_stream_timeouts_total{reason=\"frame\"}")
    );
    assert_eq!(echoed, 50);
    assert!(
        closed_10s * 100 >= slow.len() * 95,
        "only {closed_10s} of {} slow senders closed within 10 s",
        slow.len()
    );
    assert!(growth_mib < 50.0, "RSS grew {growth_mib:.1} MiB");
    assert!(
        metric(&relay, "cloudproxy_stream_timeouts_total{reason=\"frame\"}")
            >= (closed_10s as f64) * 0.9,
        "the closures are the frame deadline's"
    );
}

#[test]
fn a_connection_must_allocate_in_time_and_one_source_cannot_take_every_slot() {
    let (relay, _dir) =
        relay_with("stream_idle_timeout_secs = 2\nmax_stream_connections_per_ip = 20\n");
    // Silent connections from one source: 20 held, the 10 beyond the cap refused at once.
    // (All looked at well within the 2 s allocate deadline.)
    let conns: Vec<TcpStream> = (0..30)
        .map(|_| connect_from("127.0.0.3", relay.tcp).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut held = Vec::new();
    let mut refused = 0;
    for mut s in conns {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                s.set_nonblocking(false).unwrap();
                held.push(s);
            }
            _ => refused += 1,
        }
    }
    assert_eq!((held.len(), refused), (20, 10));
    assert_eq!(
        metric(
            &relay,
            "cloudproxy_stream_refused_total{reason=\"per_source_limit\"}"
        ),
        10.0
    );
    assert!(
        relay.logs().contains("connection limit reached"),
        "a warning is logged"
    );

    // Another source is unaffected, and a client that sends complete but useless messages
    // (Binding requests, answered) is still closed when its allocate deadline passes.
    let mut other = connect_from("127.0.0.1", relay.tcp).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut answered = 0;
    let closed_after = loop {
        let req = client::request(
            cloudproxy_proto::client::BINDING,
            cloudproxy_proto::client::TransactionId::from(answered as u128 + 7),
            &[],
            None,
        );
        if other.write_all(&req).is_err() {
            break started.elapsed();
        }
        let mut b = [0u8; 512];
        match other.read(&mut b) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => answered += 1,
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never closed");
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "a client without an allocation: {answered} Binding answers, closed after {closed_after:?}"
    );
    assert!(answered >= 3, "{answered}");
    assert!(
        closed_after >= Duration::from_millis(1900),
        "{closed_after:?}"
    );

    // The held silent ones went the same way, freeing the source's slots.
    std::thread::sleep(Duration::from_millis(500));
    for mut s in held {
        let mut b = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "a silent connection outlived its allocate deadline"
        );
    }
    assert!(
        metric(
            &relay,
            "cloudproxy_stream_timeouts_total{reason=\"allocate\"}"
        ) >= 21.0
    );
    let again = connect_from("127.0.0.3", relay.tcp);
    assert!(again.is_ok());
}
