//! The seed corpus: real messages made by the code itself (a client's Allocate, ChannelBind and
//! ChannelData, the server's answers, rustls ClientHellos, media packets, minted tokens), laid
//! out as each target reads its input. `cargo test -p cloudproxy-fuzz -- --ignored
//! write_seeds` writes them to `fuzz/seeds/<target>/`; the RFC 5769 vectors there were copied
//! from `crates/proto/tests/rfc5769.rs` once.

use std::net::SocketAddr;
use std::sync::Arc;

use cloudproxy_media::wire::Packet;
use cloudproxy_proto::client::{self, Attr, TransactionId, ALLOCATE, BINDING, CHANNEL_BIND};
use cloudproxy_proto::server::{ATTR_SIGNAL_PATH, SIGNAL};
use cloudproxy_proto::token::Token;

use crate::input::Script;
use crate::world::{self, World};

/// `(target, file name, bytes)`.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    stun_server(&mut out);
    stun_client(&mut out);
    channel_data(&mut out);
    stream_framer(&mut out);
    tls_route(&mut out);
    media(&mut out);
    token(&mut out);
    signal(&mut out);
    out
}

fn seed(out: &mut Vec<Seed>, target: &'static str, name: &str, bytes: Vec<u8>) {
    out.push((target, name.to_owned(), bytes));
}

/// Script steps of [`crate::stun_server`].
fn request(s: Script, kind: u8, client: u8, arg: u16) -> Script {
    s.u8(1).u8(kind).u8(client).u16(arg)
}

fn stun_server(out: &mut Vec<Seed>) {
    for (name, client) in [("relay_udp", 0u8), ("relay_tcp", 2), ("relay_tls", 3)] {
        let mut s = Script::default();
        s = request(s, 0, client, 0); // Allocate (after the 401)
        s = request(s, 3, client, 0); // ChannelBind 0x4000 -> peer 0
        s = request(s, 2, client, 1); // CreatePermission peer 1
        s = s.u8(4).u8(client).u8(2).blob(b"hello over a channel");
        s = request(s, 4, client, 1); // Send indication
        for port in 0..12 {
            s = s.u8(5).u8(port).u8(0).u8(0).blob(b"from the peer");
        }
        s = s.u8(6).u16(290);
        s = request(s, 1, client, 600); // Refresh
        s = request(s, 1, client, 0); // Refresh 0: delete
        seed(out, "stun_server", name, s.0);
    }
    let mut s = request(Script::default(), 5, 1, 0); // dual-stack Allocate
    s = request(s, 3, 1, 4); // ChannelBind to the IPv6 peer
    s = s.u8(5).u8(1).u8(1).u8(4).blob(b"v6");
    seed(out, "stun_server", "dual_stack", s.0);
    let s = request(Script::default().u8(8), 0, 0, 0);
    seed(out, "stun_server", "bind_fails", s.0);
    let mut s = request(Script::default(), 0, 0, 0);
    for _ in 0..3 {
        s = request(s, 0, 1, 0);
    }
    seed(out, "stun_server", "quota", s.0);
    // CLOUDPROXY-SIGNAL through the fuzzed-message step, then the driver's answer.
    let path = b"/v1/allowlist/japan?format=csv";
    let s = request(Script::default(), 6, 0, 0); // Binding
    let s = request(s, 0, 0, 0)
        .u8(2)
        .u8(0)
        .u8(0)
        .u16(SIGNAL.value())
        .u8(1)
        .u16(ATTR_SIGNAL_PATH)
        .blob(path)
        .u8(7)
        .u16(200)
        .blob(b"203.0.113.0/24\n");
    seed(out, "stun_server", "signal", s.0);
    // A bare Allocate and a Binding as raw datagrams.
    let tid = TransactionId::from(0x1234u128);
    let alloc = client::request(ALLOCATE, tid, &[Attr::RequestedTransportUdp], None);
    let binding = client::request(BINDING, tid, &[], None);
    let s = Script::default()
        .u8(0)
        .u8(0)
        .blob(&alloc)
        .u8(0)
        .u8(2)
        .blob(&binding);
    seed(out, "stun_server", "raw_requests", s.0);
}

/// Real answers of the server, as a client receives them.
fn server_answers() -> Vec<Vec<u8>> {
    let mut w = World::new();
    w.keep_transmits = true;
    for kind in [6, 0, 3, 2] {
        w.send_request(kind, 0, 0);
    }
    w.send_request(0, 2, 0);
    w.input(
        &client::request(
            client::REFRESH,
            TransactionId::from(9u128),
            &[Attr::Raw(0x7777, b"x")],
            None,
        ),
        1,
    );
    w.transmits.iter().map(|(_, d)| d.clone()).collect()
}

fn stun_client(out: &mut Vec<Seed>) {
    for (i, a) in server_answers().into_iter().enumerate() {
        seed(out, "stun_client", &format!("answer_{i}"), a);
    }
}

fn channel_data(out: &mut Vec<Seed>) {
    let udp = client::channel_data(0x4000, b"hello", false);
    let tcp = client::channel_data(0x4000, b"hello", true);
    let other = client::channel_data(0x4001, b"unbound", false);
    for (name, sel, bytes) in [
        ("client_udp", 0u8, &udp[..]),
        ("client_tcp", 1, &tcp),
        ("client_unbound", 0, &other),
        ("peer_channel", 2, b"payload from peer 0"),
        ("peer_indication", 3, b"payload from peer 1"),
    ] {
        seed(out, "channel_data", name, [&[sel][..], bytes].concat());
    }
}

fn stream_framer(out: &mut Vec<Seed>) {
    let tid = TransactionId::from(0x55u128);
    let alloc = client::request(ALLOCATE, tid, &[Attr::RequestedTransportUdp], None);
    let bind = client::request(
        CHANNEL_BIND,
        tid,
        &[
            Attr::ChannelNumber(0x4000),
            Attr::PeerAddress(SocketAddr::from(([127, 0, 0, 1], 6000))),
        ],
        None,
    );
    let data = client::channel_data(0x4000, b"odd", true);
    let stream = [&alloc[..], &bind, &data, &alloc[..7]].concat();
    let s = Script::default()
        .u8(3)
        .u16(3)
        .u16(25)
        .u16(90)
        .bytes(&stream);
    seed(out, "stream_framer", "allocate_bind_data", s.0);
    let s = Script::default().u8(0).bytes(&alloc);
    seed(out, "stream_framer", "allocate", s.0);
}

/// ClientHellos rustls sends with these ALPN protocols and server name.
fn client_hello(alpn: &[&[u8]], name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("a name");
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("a client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("to a Vec");
    hello
}

fn tls_route(out: &mut Vec<Seed>) {
    for (file, alpn, name) in [
        ("turn", &[&b"stun.turn"[..]][..], "relay.example"),
        ("http", &[&b"http/1.1"[..]][..], "relay.example"),
        ("api_sni", &[][..], "api.example"),
        (
            "both",
            &[&b"http/1.1"[..], &b"stun.turn"[..]][..],
            "api.example",
        ),
        ("no_sni", &[][..], "127.0.0.1"),
        ("h2_only", &[&b"h2"[..]][..], "relay.example"),
    ] {
        seed(out, "tls_route", file, client_hello(alpn, name));
    }
}

/// Script steps of [`crate::media_server`]: a JOIN to channel c1 with a token the harness mints
/// for `uid` (valid an hour; `flags` bit 0 asks for echo), sent from source `source`.
fn media_join(s: Script, source: u8, uid: u8, flags: u8) -> Script {
    s.u8(2).u8(source).u8(0).u8(uid).u16(3600).u8(flags)
}

/// Script steps of [`crate::media_server`]: a datagram as it is, from source `source`.
fn media_datagram(s: Script, source: u8, bytes: &[u8]) -> Script {
    s.u8(0).u8(source).blob(bytes)
}

fn media(out: &mut Vec<Seed>) {
    let token = Token::mint(
        "app1",
        "k1",
        b"media-secret",
        "c1",
        1,
        world::T0_UNIX + 3600,
    )
    .expect("valid parts")
    .encode();
    let packets = [
        (
            "join",
            Packet::Join {
                echo: true,
                token: &token,
                cookie: None,
            },
        ),
        (
            "join_with_cookie",
            Packet::Join {
                echo: false,
                token: &token,
                cookie: Some([7; 16]),
            },
        ),
        ("challenge", Packet::Challenge([9; 16])),
        (
            "joined_v4",
            Packet::Joined {
                uid: 1,
                members: 2,
                addr: SocketAddr::from(([192, 0, 2, 1], 1000)),
            },
        ),
        (
            "joined_v6",
            Packet::Joined {
                uid: 1,
                members: 2,
                addr: "[2001:db8::1]:1000".parse().expect("literal"),
            },
        ),
        (
            "error",
            Packet::Error {
                code: cloudproxy_media::wire::ErrorCode::FULL,
                retryable: true,
                app_id: "app1",
                message: "channel is full",
            },
        ),
        (
            "data",
            Packet::Data {
                seq: 7,
                sent_micros: 123_456,
                payload: b"media",
            },
        ),
        (
            "forwarded",
            Packet::Forwarded {
                from_uid: 2,
                seq: 7,
                sent_micros: 123_456,
                payload: b"media",
            },
        ),
        ("ping", Packet::Ping(42)),
        ("pong", Packet::Pong(42)),
        ("leave", Packet::Leave),
        ("left", Packet::Left),
    ];
    let mut encoded = Vec::new();
    for (name, p) in packets {
        let mut b = Vec::new();
        p.encode_vec(&mut b).expect("encodes");
        seed(out, "media_wire", name, b.clone());
        encoded.push((name, b));
    }
    let find = |n: &str| {
        encoded
            .iter()
            .find(|(x, _)| *x == n)
            .map(|(_, b)| b.clone())
            .expect("made above")
    };
    // Two members join c1 (harness-minted tokens), exchange DATA, ping, time passes, one leaves.
    let mut s = Script::default();
    s = media_join(s, 0, 1, 1); // source 0, uid 1, echo
    s = media_join(s, 1, 2, 0); // source 1, uid 2
    s = media_datagram(s, 0, &find("data"));
    s = media_datagram(s, 1, &find("ping"));
    s = media_datagram(s, 2, &find("join"));
    s = s.u8(3).u8(0).u8(10); // 10 s pass
    s = media_datagram(s, 1, &find("data"));
    s = media_datagram(s, 0, &find("leave"));
    s = s.u8(3).u8(0).u8(30); // 30 s pass
    seed(out, "media_server", "two_members", s.0);
}

fn token(out: &mut Vec<Seed>) {
    let t = Token::mint("app1", "k1", b"s1", "room-1", 42, world::T0_UNIX + 3600).expect("valid");
    seed(
        out,
        "token",
        "minted",
        [&[0u8][..], t.encode().as_bytes()].concat(),
    );
    let retired =
        Token::mint("app1", "k2", b"s2", "room-1", 42, world::T0_UNIX + 3600).expect("valid");
    seed(
        out,
        "token",
        "retired_key",
        [&[0u8][..], retired.encode().as_bytes()].concat(),
    );
    seed(
        out,
        "token",
        "username",
        [&[1u8][..], t.username.as_bytes()].concat(),
    );
    let s = Script::default()
        .u8(2)
        .blob(b"app1")
        .blob(b"k1")
        .blob(b"room.1_x-y")
        .blob(b"secret")
        .u16(0)
        .u16(7)
        .u16(1900)
        .u16(3600);
    seed(out, "token", "mint", s.0);
}

fn signal(out: &mut Vec<Seed>) {
    let path = b"/v1/allowlist/japan?format=csv";
    for (name, flags, status, body) in [
        ("udp_ok", 0u8, 200u16, &b"203.0.113.0/24\n"[..]),
        ("tcp_not_found", 1, 404, b"Not Found"),
        ("udp_too_large", 0, 200, &[b'x'; 1200][..]),
    ] {
        let s = Script::default()
            .u8(flags)
            .blob(path)
            .u8(0)
            .u16(status)
            .blob(body);
        seed(out, "signal", name, s.0);
    }
}
