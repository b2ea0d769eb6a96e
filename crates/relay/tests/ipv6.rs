//! IPv6 relaying over real sockets on loopback (RFC 8656 §7.2, RFC 8656 §9.1): an in-process
//! relay listening on 127.0.0.1 and [::1], relaying on both families.
//!
//! * REQUESTED-ADDRESS-FAMILY IPv6 gives an IPv6 relayed address, and data flows to an IPv6
//!   peer; a permission for an IPv4 peer on that allocation is refused with 443.
//! * ADDITIONAL-ADDRESS-FAMILY IPv6 gives two relayed addresses, and data flows to an IPv4 and
//!   an IPv6 peer through the one allocation.
//! * A relay without an IPv6 relay address answers REQUESTED-ADDRESS-FAMILY IPv6 with 440.
//!
//! If `[::1]` cannot be bound (a container without IPv6), the IPv6 tests print a loud notice
//! and pass without running, unless `CI` is set: there IPv6 loopback is expected and they fail.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use cloudproxy_proto::client::{
    self, Attr, TransactionId, ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH,
};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::{AuthConfig, ServerConfig};
use cloudproxy_relay::{Relay, RelayConfig};
use cloudproxy_testkit::echo::EchoPeer;
use cloudproxy_testkit::process::in_ci;
use cloudproxy_testkit::turn::{Conn, TurnClient, TIMEOUT};

const SECRET: &str = "ipv6-secret";

/// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.1) with family IPv6.
const REQUESTED_FAMILY_V6: Attr<'static> = Attr::Raw(0x0017, &[2, 0, 0, 0]);
/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.2) with family IPv6.
const ADDITIONAL_FAMILY_V6: Attr<'static> = Attr::Raw(0x8000, &[2, 0, 0, 0]);

/// `true` if `[::1]` can be bound. Otherwise: panics under CI, else prints a notice (skip).
fn require_ipv6_loopback(test: &str) -> bool {
    match UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) if in_ci() => panic!("{test}: cannot bind [::1] ({e}), and CI is set: failing"),
        Err(e) => {
            eprintln!();
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!! SKIPPED {test}: cannot bind [::1] ({e}).");
            eprintln!("!! This IPv6 test did NOT run. Under CI=true it would fail instead.");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!();
            false
        }
    }
}

fn relay(listen: &[SocketAddr], relay_ipv6: Option<Ipv6Addr>) -> Relay {
    let config = RelayConfig {
        server: ServerConfig {
            realm: "test.realm".into(),
            auth: AuthConfig {
                static_secret: Some(SECRET.as_bytes().to_vec()),
                app_keys: vec![],
            },
            peer_policy: PeerPolicy::new(
                ["127.0.0.0/8", "::1/128"]
                    .iter()
                    .map(|r| r.parse::<PeerRule>().unwrap()),
            ),
            relay_ipv4: Some(Ipv4Addr::LOCALHOST),
            relay_ipv6,
            relay_ports: 23000..=23999,
            ..ServerConfig::default()
        },
        udp: listen.to_vec(),
        tcp: listen.to_vec(),
        tls: vec![],
        metrics: None,
        shards: 2,
        stream_idle_timeout: Duration::from_secs(5),
        ..RelayConfig::default()
    };
    Relay::start(config).expect("relay starts")
}

fn v4_any() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn v6_any() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
}

/// A UDP connection from a client socket of the server's family (`Conn::udp` binds IPv4).
fn udp_conn(server: SocketAddr) -> Conn {
    let s = if server.is_ipv6() {
        UdpSocket::bind(v6_any())
    } else {
        UdpSocket::bind(v4_any())
    }
    .unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    Conn::Udp(s, server)
}

/// Binds `channel` to `peer` and echoes `n` ChannelData packets through the relay.
fn channel_echo(c: &mut TurnClient, channel: u16, peer: SocketAddr, n: usize) {
    let stream = c.conn.is_stream();
    let r = c.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(channel), Attr::PeerAddress(peer)],
    );
    assert!(r.success, "channel bind to {peer}: {:?}", r.error);
    for i in 0..n {
        let payload = format!("to {peer}, packet {i}");
        let msg = client::channel_data(channel, payload.as_bytes(), stream);
        c.conn.send(&msg);
        assert_eq!(c.conn.recv(), msg, "echo {i} from {peer}");
    }
}

/// A Send indication to `peer` (which has no channel) comes back as a Data indication from
/// `peer`, with XOR-PEER-ADDRESS in the peer's family.
fn send_indication_echo(c: &mut TurnClient, peer: SocketAddr) {
    let r = c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(peer)]);
    assert!(r.success, "permission for {peer}: {:?}", r.error);
    c.tid += 1;
    c.conn.send(&client::send_indication(
        TransactionId::from(c.tid),
        peer,
        b"via send indication",
    ));
    let back = client::parse(&c.conn.recv(), None).expect("a Data indication");
    assert!(back.is_indication, "{back:?}");
    assert_eq!(back.peer, Some(peer));
    assert_eq!(back.data.as_deref(), Some(&b"via send indication"[..]));
}

/// Echo peers on loopback: one of each family for channels, one of each for Send/Data
/// indications (a peer with a channel is answered with ChannelData instead).
struct Peers {
    v4: EchoPeer,
    v6: EchoPeer,
    v4_indications: EchoPeer,
    v6_indications: EchoPeer,
}

impl Peers {
    fn start() -> Self {
        Self {
            v4: EchoPeer::start("127.0.0.1:0").unwrap(),
            v6: EchoPeer::start("[::1]:0").unwrap(),
            v4_indications: EchoPeer::start("127.0.0.1:0").unwrap(),
            v6_indications: EchoPeer::start("[::1]:0").unwrap(),
        }
    }
}

/// REQUESTED-ADDRESS-FAMILY IPv6, over client transport `conn`.
fn ipv6_only_allocation(conn: Conn, peers: &Peers) {
    let (v4_peer, v6_peer) = (peers.v4.addr, peers.v6.addr);
    let mut c = TurnClient::with_secret(conn, SECRET);
    let r = c.transact(
        ALLOCATE,
        &[Attr::RequestedTransportUdp, REQUESTED_FAMILY_V6],
    );
    assert!(r.success, "allocate IPv6: {:?}", r.error);
    assert_eq!(r.integrity_ok, Some(true));
    assert_eq!(r.relayed.len(), 1, "{r:?}");
    let relayed = r.relayed[0];
    assert_eq!(relayed.ip(), Ipv6Addr::LOCALHOST, "{r:?}");
    assert_ne!(relayed.port(), 0);

    channel_echo(&mut c, 0x4000, v6_peer, 20);
    send_indication_echo(&mut c, peers.v6_indications.addr);

    // RFC 8656 §9.1 / §10.2: a peer of the other family on this allocation.
    let r = c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(v4_peer)]);
    assert_eq!(
        r.error.as_ref().map(|e| e.0),
        Some(443),
        "IPv4 permission on IPv6 allocation"
    );
    let r = c.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4001), Attr::PeerAddress(v4_peer)],
    );
    assert_eq!(
        r.error.as_ref().map(|e| e.0),
        Some(443),
        "IPv4 channel on IPv6 allocation"
    );

    // The 443s did not disturb the allocation.
    channel_echo(&mut c, 0x4000, v6_peer, 1);
    let r = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "release: {:?}", r.error);
}

/// ADDITIONAL-ADDRESS-FAMILY IPv6, over client transport `conn`.
fn dual_stack_allocation(conn: Conn, peers: &Peers) {
    let (v4_peer, v6_peer) = (peers.v4.addr, peers.v6.addr);
    let mut c = TurnClient::with_secret(conn, SECRET);
    let r = c.transact(
        ALLOCATE,
        &[Attr::RequestedTransportUdp, ADDITIONAL_FAMILY_V6],
    );
    assert!(r.success, "allocate dual-stack: {:?}", r.error);
    assert_eq!(r.relayed.len(), 2, "two XOR-RELAYED-ADDRESS: {r:?}");
    let v4 = r
        .relayed
        .iter()
        .find(|a| a.is_ipv4())
        .expect("an IPv4 relayed address");
    let v6 = r
        .relayed
        .iter()
        .find(|a| a.is_ipv6())
        .expect("an IPv6 relayed address");
    assert_eq!(v4.ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(v6.ip(), Ipv6Addr::LOCALHOST);

    channel_echo(&mut c, 0x4000, v4_peer, 10);
    channel_echo(&mut c, 0x4001, v6_peer, 10);
    // Interleaved, to show the two relay sockets work at the same time.
    let stream = c.conn.is_stream();
    for i in 0..10 {
        for (channel, peer) in [(0x4000, v4_peer), (0x4001, v6_peer)] {
            let msg = client::channel_data(channel, format!("{i} to {peer}").as_bytes(), stream);
            c.conn.send(&msg);
            assert_eq!(c.conn.recv(), msg, "interleaved echo {i} from {peer}");
        }
    }
    send_indication_echo(&mut c, peers.v4_indications.addr);
    send_indication_echo(&mut c, peers.v6_indications.addr);
    let r = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "release: {:?}", r.error);
}

#[test]
fn ipv6_relaying_over_ipv4_and_ipv6_listeners() {
    if !require_ipv6_loopback("ipv6_relaying_over_ipv4_and_ipv6_listeners") {
        return;
    }
    let relay = relay(&[v4_any(), v6_any()], Some(Ipv6Addr::LOCALHOST));
    let addrs = relay.local_addrs().clone();
    let udp4 = *addrs
        .udp
        .iter()
        .find(|a| a.is_ipv4())
        .expect("IPv4 UDP listener");
    let udp6 = *addrs
        .udp
        .iter()
        .find(|a| a.is_ipv6())
        .expect("IPv6 UDP listener");
    let tcp6 = *addrs
        .tcp
        .iter()
        .find(|a| a.is_ipv6())
        .expect("IPv6 TCP listener");
    let peers = Peers::start();

    // The family of the client's own connection does not decide the relayed family.
    ipv6_only_allocation(udp_conn(udp6), &peers);
    ipv6_only_allocation(udp_conn(udp4), &peers);
    ipv6_only_allocation(Conn::tcp(tcp6), &peers);

    dual_stack_allocation(udp_conn(udp4), &peers);
    dual_stack_allocation(udp_conn(udp6), &peers);
    dual_stack_allocation(Conn::tcp(tcp6), &peers);

    // A plain Allocate is still IPv4 only (RFC 8656 §7.2: IPv4 by default), and an IPv6 peer
    // on it is a family mismatch.
    let mut c = TurnClient::with_secret(udp_conn(udp6), SECRET);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate: {:?}", r.error);
    assert_eq!(r.relayed.len(), 1, "{r:?}");
    assert!(r.relayed[0].is_ipv4(), "{r:?}");
    let r = c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(peers.v6.addr)]);
    assert_eq!(
        r.error.as_ref().map(|e| e.0),
        Some(443),
        "IPv6 permission on IPv4 allocation"
    );
}

#[test]
fn ipv6_requested_without_ipv6_relay_address_is_440() {
    // Only IPv4 listeners and relay address: runs with or without IPv6 on the host.
    let relay = relay(&[v4_any()], None);
    let udp = relay.local_addrs().udp[0];
    let mut c = TurnClient::with_secret(udp_conn(udp), SECRET);
    let r = c.transact(
        ALLOCATE,
        &[Attr::RequestedTransportUdp, REQUESTED_FAMILY_V6],
    );
    assert_eq!(r.error.as_ref().map(|e| e.0), Some(440), "{r:?}");

    // ADDITIONAL-ADDRESS-FAMILY IPv6 is not an error: an IPv4 allocation, and the IPv6 part
    // refused (RFC 8656 §7.2 ADDRESS-ERROR-CODE); the IPv4 allocation works.
    let r = c.transact(
        ALLOCATE,
        &[Attr::RequestedTransportUdp, ADDITIONAL_FAMILY_V6],
    );
    assert!(
        r.success,
        "dual-stack request on an IPv4-only relay: {:?}",
        r.error
    );
    assert_eq!(r.relayed.len(), 1, "{r:?}");
    assert!(r.relayed[0].is_ipv4(), "{r:?}");
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    channel_echo(&mut c, 0x4000, peer.addr, 3);
}
