//! Real-socket integration tests: a relay on loopback, a UDP echo peer, and a blocking TURN
//! client over UDP, TCP and TLS. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_proto::auth::{rest_password, rest_username};
use cloudproxy_proto::channel::stream_frame_len;
use cloudproxy_proto::client::{
    self, Attr, ClientAuth, Response, ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH,
};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::{AuthConfig, ServerConfig};
use cloudproxy_relay::{Relay, RelayConfig};
use stun_types::message::TransactionId;

const SECRET: &str = "integration-secret";
const TIMEOUT: Duration = Duration::from_secs(5);

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
            relay_ports: 40000..=40999,
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

/// A UDP echo peer on loopback that stops when dropped.
struct EchoPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl EchoPeer {
    fn start() -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = s.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
    Tls(
        Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
        Vec<u8>,
    ),
}

impl Conn {
    fn udp(server: SocketAddr) -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Conn::Udp(s, server)
    }

    fn tcp(server: SocketAddr) -> Self {
        let s = TcpStream::connect_timeout(&server, TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Conn::Tcp(s, Vec::new())
    }

    fn tls(server: SocketAddr, alpn: Option<&[u8]>) -> Self {
        let s = TcpStream::connect_timeout(&server, TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let config = cloudproxy_relay::tls::insecure_client_config(alpn);
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        Conn::Tls(Box::new(rustls::StreamOwned::new(conn, s)), Vec::new())
    }

    fn is_stream(&self) -> bool {
        !matches!(self, Conn::Udp(..))
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Udp(s, to) => {
                s.send_to(bytes, *to).unwrap();
            }
            Conn::Tcp(s, _) => s.write_all(bytes).unwrap(),
            Conn::Tls(s, _) => {
                s.write_all(bytes).unwrap();
                s.flush().unwrap();
            }
        }
    }

    fn recv(&mut self) -> Vec<u8> {
        fn frame<R: Read>(r: &mut R, pending: &mut Vec<u8>) -> Vec<u8> {
            loop {
                if let Ok(Some(n)) = stream_frame_len(pending) {
                    return pending.drain(..n).collect();
                }
                let mut buf = [0u8; 4096];
                let n = r.read(&mut buf).expect("read within the timeout");
                assert!(n > 0, "server closed the connection");
                pending.extend_from_slice(&buf[..n]);
            }
        }
        match self {
            Conn::Udp(s, _) => {
                let mut buf = [0u8; 2048];
                let (n, _) = s.recv_from(&mut buf).expect("datagram within the timeout");
                buf[..n].to_vec()
            }
            Conn::Tcp(s, p) => frame(s, p),
            Conn::Tls(s, p) => frame(s.as_mut(), p),
        }
    }
}

struct Client {
    conn: Conn,
    auth: Option<ClientAuth>,
    tid: u128,
    username: String,
    password: String,
}

impl Client {
    fn new(conn: Conn, secret: &str) -> Self {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let username = rest_username(expiry, "it-user");
        let password = rest_password(secret.as_bytes(), &username);
        Self {
            conn,
            auth: None,
            tid: 0x1000,
            username,
            password,
        }
    }

    fn transact(&mut self, method: stun_types::message::Method, attrs: &[Attr]) -> Response {
        for _ in 0..2 {
            self.tid += 1;
            let req = client::request(
                method,
                TransactionId::from(self.tid),
                attrs,
                self.auth.as_ref(),
            );
            self.conn.send(&req);
            let r = client::parse(&self.conn.recv(), self.auth.as_ref().map(|a| &a.key)).unwrap();
            assert_eq!(r.transaction, self.tid);
            match r.error.as_ref().map(|e| e.0) {
                Some(401) | Some(438)
                    if self.auth.is_none() || r.error.as_ref().unwrap().0 == 438 =>
                {
                    let realm = r.realm.clone().unwrap();
                    let nonce = r.nonce.clone().unwrap();
                    self.auth = Some(ClientAuth::new(
                        &self.username,
                        &self.password,
                        &realm,
                        &nonce,
                    ));
                }
                _ => return r,
            }
        }
        panic!("no answer after the challenge");
    }
}

/// Allocate, bind a channel to the echo peer, send `n` packets and get each echoed back
/// through the relay as ChannelData.
fn relay_roundtrip(conn: Conn, peer: SocketAddr, n: usize) -> SocketAddr {
    let stream = conn.is_stream();
    let mut c = Client::new(conn, SECRET);
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
    let peer = EchoPeer::start();
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
    let peer = EchoPeer::start();
    let mut c = Client::new(Conn::udp(relay.local_addrs().udp[0]), SECRET);
    assert!(c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]).success);
    let r = c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(peer.addr)]);
    assert_eq!(r.error.unwrap().0, 403);
    let m = metric(&relay, "cloudproxy_errors_total{code=\"403\"}");
    assert!(m >= 1, "{}", metrics_text(&relay));
}

#[test]
fn wrong_secret_is_refused_and_counted() {
    let relay = relay(&["127.0.0.0/8"]);
    let mut c = Client::new(Conn::tcp(relay.local_addrs().tcp[0]), "wrong-secret");
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.unwrap().0, 401);
    assert_eq!(metric(&relay, "cloudproxy_auth_failures_total"), 1);
}

#[test]
fn garbage_on_a_stream_closes_only_that_connection() {
    let relay = relay(&["127.0.0.0/8"]);
    let peer = EchoPeer::start();
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
    let peer = EchoPeer::start();
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
