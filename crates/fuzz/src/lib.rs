//! # cloudproxy-fuzz: the bodies of the coverage-guided fuzz targets
//!
//! One function per decoder that faces the network or a user, each taking arbitrary bytes.
//! libFuzzer drives them from the separate `fuzz/` package (see its README section); the
//! `corpus` test of this crate replays every seed and every saved crash through the same
//! functions, so the corpus keeps being checked by `cargo test` without libFuzzer.
//!
//! A target never panics on any input; where the code makes a promise about its output (every
//! answer is STUN, ChannelData forwards exactly its payload, a decoded packet re-encodes to
//! itself, a token has one parse), the target asserts it, so a broken promise is a crash too.
//!
//! Stateful targets read their input as a script ([`input::Input`]): the first byte of each
//! step picks what happens (raw bytes from a client, a request the harness signs with the
//! credential the client learned from a 401, peer data, time passing...), the next bytes are
//! its arguments. Reads past the end yield zeros, so every byte string is a valid script.

pub mod input;
pub mod seeds;
pub mod world;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloudproxy_media::wire::{self, Packet};
use cloudproxy_media::{Endpoint, Limits, MediaServer};
use cloudproxy_proto::auth::{rest_password, Authenticator};
use cloudproxy_proto::channel::{self, FrameError};
use cloudproxy_proto::client::{self, Attr, ClientAuth};
use cloudproxy_proto::integrity::{KeyAlgorithm, LongTermKey};
use cloudproxy_proto::server::{ATTR_SIGNAL_PATH, MAX_SIGNAL_BODY, MAX_SIGNAL_PATH, SIGNAL};
use cloudproxy_proto::token::{self, Token};
use cloudproxy_proto::{AppKey, AuthConfig};
use stun_types::message::MessageClass;

use input::Input;
use world::{client_addr, peer_addr, World};

/// A target's body: arbitrary bytes in, a panic on a broken promise.
pub type Target = fn(&[u8]);

/// Every target, by the name its libFuzzer binary and corpus directory have.
pub const TARGETS: &[(&str, Target)] = &[
    ("stun_server", stun_server),
    ("stun_client", stun_client),
    ("channel_data", channel_data),
    ("stream_framer", stream_framer),
    ("tls_route", tls_route),
    ("media_wire", media_wire),
    ("media_server", media_server),
    ("token", token),
    ("signal", signal),
];

/// The TURN server (sans-IO [`cloudproxy_proto::Server`]) under a script of client input on
/// UDP, TCP and TLS, signed requests with fuzzed attributes, peer datagrams, time, relay bind
/// failures and signaling answers. After the script, time passes every lifetime and nothing
/// may be left.
pub fn stun_server(data: &[u8]) {
    let mut w = World::new();
    let mut d = Input::new(data);
    let mut steps = 0;
    while !d.is_empty() && steps < 64 {
        steps += 1;
        match d.u8() % 9 {
            0 => {
                let client = usize::from(d.u8());
                let bytes = d.blob(2048);
                w.input(bytes, client);
            }
            1 => {
                let (kind, client, arg) = (d.u8(), usize::from(d.u8()), d.u16());
                w.send_request(kind, client, arg);
            }
            2 => signed_message(&mut w, &mut d),
            3 => {
                let (kind, client, at, xor) = (d.u8(), usize::from(d.u8()), d.u16(), d.u8());
                let mut bytes = w.request(kind, client, 7);
                let i = usize::from(at) % bytes.len();
                bytes[i] ^= xor.max(1);
                w.input(&bytes, client);
            }
            4 => {
                let client = usize::from(d.u8());
                let number = 0x3FFE + u16::from(d.u8() % 8);
                let payload = d.blob(1500);
                let stream = client_addr(client).transport.is_stream();
                let bytes = client::channel_data(number, payload, stream);
                w.input(&bytes, client);
            }
            5 => {
                // One port below and above the range too.
                let port = 49999 + u16::from(d.u8() % 12);
                let v6 = d.u8() & 1 == 1;
                let peer = peer_addr(d.u8());
                let payload = d.blob(1500);
                w.peer(port, v6, peer, payload);
            }
            6 => {
                let secs = u64::from(d.u16() % 4000);
                w.advance(secs);
            }
            7 => {
                let status = d.u16();
                let body = d.blob(1500);
                w.answer_signal(status, body);
            }
            _ => w.bind_ok = !w.bind_ok,
        }
    }
    w.finish();
}

/// Fewer than `count_bound` attributes of fuzzed types, each value at most `max_len` bytes.
fn raw_attrs<'a>(d: &mut Input<'a>, count_bound: u8, max_len: usize) -> Vec<Attr<'a>> {
    let n = d.u8() % count_bound;
    (0..n)
        .map(|_| Attr::Raw(d.u16(), d.blob(max_len)))
        .collect()
}

/// A message the harness signs with client `i`'s credential (when it has one): fuzzed class,
/// method and attributes.
fn signed_message(w: &mut World, d: &mut Input<'_>) {
    let client = usize::from(d.u8());
    let class = match d.u8() % 4 {
        0 | 1 => MessageClass::Request,
        2 => MessageClass::Indication,
        _ => MessageClass::Success,
    };
    let method = client::Method::new(d.u16() & 0x0FFF);
    let attrs = raw_attrs(d, 6, 300);
    let tid = w.next_tid();
    let auth = w.auth[client % world::CLIENTS].clone();
    let bytes = client::build(class, method, tid, &attrs, None, auth.as_ref());
    w.input(&bytes, client);
}

/// The client side's reading of server answers ([`client::parse`]), without and with a key:
/// the key changes nothing but the integrity verdict.
pub fn stun_client(data: &[u8]) {
    let plain = client::parse(data, None);
    let key = LongTermKey::derive(KeyAlgorithm::Md5, "user", "realm", "pass");
    let keyed = client::parse(data, Some(&key));
    match (plain, keyed) {
        (Ok(p), Ok(mut k)) => {
            let mut tid = [0u8; 16];
            tid[4..].copy_from_slice(&data[8..20]);
            let tid = u128::from_be_bytes(tid);
            assert_eq!(p.transaction, tid);
            assert!(k.integrity_ok.is_some());
            k.integrity_ok = None;
            assert_eq!(p, k);
        }
        (Err(_), Err(_)) => {}
        (p, k) => panic!("the key changed whether it parses: {p:?} / {k:?}"),
    }
}

/// An allocation for a UDP and a TCP client, each with channel 0x4000 bound to peer 0 and a
/// permission (no channel) for peer 1. Built once: the data paths change no state but byte
/// counters, so executions stay independent.
struct ChannelWorld {
    w: World,
    /// The relayed port of client 0 (UDP) and client 2 (TCP).
    ports: [u16; 2],
}

impl ChannelWorld {
    fn new() -> Self {
        let mut w = World::new();
        w.keep_transmits = true;
        let mut ports = [0u16; 2];
        for (slot, client) in [0usize, 2].into_iter().enumerate() {
            w.send_request(0, client, 0);
            let relayed = w
                .transmits
                .iter()
                .filter_map(|(_, data)| client::parse(data, None).ok())
                .filter(|r| r.success && r.method == client::ALLOCATE.value())
                .flat_map(|r| r.relayed)
                .next_back()
                .expect("the allocation succeeded");
            ports[slot] = relayed.port();
            // Channel 0x4000 -> peer 0; a permission for peer 1.
            w.send_request(3, client, 0);
            w.send_request(2, client, 1);
        }
        assert_eq!(w.server.allocation_count(), 2);
        w.keep_transmits = false;
        w.transmits.clear();
        Self { w, ports }
    }
}

thread_local! {
    static CHANNEL_WORLD: RefCell<Option<ChannelWorld>> = const { RefCell::new(None) };
}

/// ChannelData: the header parser, and the server's data paths both ways. From a client,
/// ChannelData on the bound channel is forwarded as exactly its payload (over UDP, trailing
/// bytes are padding); from a peer, the payload comes back as ChannelData (padded on TCP) or,
/// without a channel, as a Data indication.
pub fn channel_data(data: &[u8]) {
    let mut d = Input::new(data);
    let sel = d.u8();
    let bytes = d.rest();
    let header = channel::parse_header(bytes);
    if let Some((number, len)) = header {
        assert!((channel::MIN_CHANNEL..=channel::MAX_CHANNEL).contains(&number));
        assert_eq!(len, usize::from(u16::from_be_bytes([bytes[2], bytes[3]])));
    } else {
        assert!(
            bytes.len() < 4
                || !(0x4000..=0x7FFE).contains(&u16::from_be_bytes([bytes[0], bytes[1]]))
        );
    }
    CHANNEL_WORLD.with(|cell| {
        let mut cell = cell.borrow_mut();
        let cw = cell.get_or_insert_with(ChannelWorld::new);
        let bound = world::peer_addr(0);
        match sel % 4 {
            0 | 1 => {
                // Only ChannelData: STUN could change the allocation's state.
                if !bytes.first().is_some_and(|&b| channel::is_channel_data(b)) {
                    return;
                }
                let c = client_addr(if sel % 4 == 1 { 2 } else { 0 });
                let frame = if c.transport.is_stream() {
                    match channel::stream_frame_len(bytes) {
                        Ok(Some(n)) => &bytes[..n],
                        _ => return,
                    }
                } else {
                    bytes
                };
                let fwd =
                    cw.w.server
                        .handle_client_input(frame, c, cw.w.now)
                        .forward();
                match header {
                    Some((0x4000, len)) if 4 + len <= frame.len() => {
                        let fwd = fwd.expect("ChannelData on a bound channel is forwarded");
                        assert_eq!(fwd.range, 4..4 + len);
                        assert_eq!(fwd.peer.0, bound);
                    }
                    _ => assert_eq!(fwd, None, "only the bound channel, only whole payloads"),
                }
            }
            2 => cw.w.peer(cw.ports[0], false, bound, bytes),
            _ => cw.w.peer(cw.ports[1], false, world::peer_addr(1), bytes),
        }
    });
}

/// The outcome of framing a stream: the frames, then either an error at an offset or the
/// bytes left waiting for more.
#[derive(Debug, PartialEq, Eq)]
struct Framing {
    frames: Vec<std::ops::Range<usize>>,
    error: Option<(usize, FrameError)>,
    waiting: usize,
}

fn frame_at_once(stream: &[u8]) -> Framing {
    let mut f = Framing {
        frames: Vec::new(),
        error: None,
        waiting: 0,
    };
    let mut start = 0;
    loop {
        match channel::stream_frame_len(&stream[start..]) {
            Ok(Some(n)) => {
                f.frames.push(start..start + n);
                start += n;
            }
            Ok(None) => break,
            Err(e) => {
                f.error = Some((start, e));
                return f;
            }
        }
    }
    f.waiting = stream.len() - start;
    f
}

/// As the relay's read loop: bytes arrive in chunks cut at `cuts`; frames are taken off the
/// front of the buffer after each read, the rest waits for the next one.
fn frame_in_chunks(stream: &[u8], cuts: &[usize]) -> Framing {
    let mut f = Framing {
        frames: Vec::new(),
        error: None,
        waiting: 0,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut consumed = 0; // stream offset of buf[0]
    let mut prev = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[prev..cut]);
        prev = cut;
        let mut start = 0;
        loop {
            match channel::stream_frame_len(&buf[start..]) {
                Ok(Some(n)) => {
                    assert!(n >= 4 && start + n <= buf.len());
                    f.frames.push(consumed + start..consumed + start + n);
                    start += n;
                }
                Ok(None) => break,
                Err(e) => {
                    f.error = Some((consumed + start, e));
                    return f;
                }
            }
        }
        buf.drain(..start);
        consumed += start;
    }
    f.waiting = buf.len();
    f
}

/// The stream framer ([`channel::stream_frame_len`]): a byte stream cut at arbitrary points
/// frames exactly as when it arrives at once, every frame has the size its header announces
/// (ChannelData padded to 4), and the frames then go to the server over TCP.
pub fn stream_framer(data: &[u8]) {
    let mut d = Input::new(data);
    let ncuts = usize::from(d.u8() % 16);
    let raw_cuts: Vec<u16> = (0..ncuts).map(|_| d.u16()).collect();
    let stream = d.rest();
    let mut cuts: Vec<usize> = raw_cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = frame_at_once(stream);
    for r in &whole.frames {
        let frame = &stream[r.clone()];
        let len = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
        match frame[0] >> 6 {
            0 => assert_eq!(frame.len(), 20 + len),
            1 => {
                assert_eq!(frame.len(), 4 + len + channel::stream_padding(len));
                assert_eq!(frame.len() % 4, 0);
            }
            _ => panic!("a frame starts with 00 or 01"),
        }
    }
    assert_eq!(frame_in_chunks(stream, &cuts), whole, "cut at {cuts:?}");
    if whole.frames.is_empty() {
        return;
    }
    let mut w = World::new();
    let tcp = client_addr(2);
    for r in whole.frames {
        w.frame(&stream[r], tcp);
    }
}

/// The TLS listener's first decision: rustls reads the ClientHello (as the relay's acceptor
/// does, with the relay's own server configuration offering `stun.turn` then `http/1.1`), and
/// the ALPN and SNI it yields route the connection to TURN or to the control plane's API.
pub fn tls_route(data: &[u8]) {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let identity = cloudproxy_relay::tls::TlsIdentity::SelfSigned {
            names: vec!["relay.example".into()],
        };
        let turn = cloudproxy_relay::tls::server_config(&identity).expect("self-signed config");
        cloudproxy_relay::tls::with_http(&turn)
    });
    const API_NAME: &str = "api.example";
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = data;
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let Ok(Some(accepted)) = acceptor.accept() else {
        return;
    };
    let hello = accepted.client_hello();
    let sni = hello.server_name().map(str::to_owned);
    let offered: Option<Vec<Vec<u8>>> = hello.alpn().map(|a| a.map(<[u8]>::to_vec).collect());
    let Ok(mut conn) = accepted.into_connection(config.clone()) else {
        return;
    };
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    if let Some(p) = &alpn {
        assert!(
            offered.as_ref().is_some_and(|o| o.contains(p)),
            "negotiated an ALPN the client did not offer"
        );
        assert!(config.alpn_protocols.contains(p));
        // TURN wins when the client offers both.
        if offered
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == b"stun.turn"))
        {
            assert_eq!(p, b"stun.turn");
        }
    }
    assert_eq!(conn.server_name(), sni.as_deref());
    let api = cloudproxy_relay::tls::wants_api(alpn.as_deref(), conn.server_name(), Some(API_NAME));
    assert_eq!(
        api,
        alpn.as_deref() == Some(cloudproxy_relay::tls::ALPN_HTTP1)
            || sni.as_deref() == Some(API_NAME)
    );
    assert!(!cloudproxy_relay::tls::wants_api(
        Some(b"stun.turn"),
        conn.server_name(),
        None
    ));
    // Whatever else the client sent after its hello.
    let _ = conn.process_new_packets();
}

/// The media wire format: a datagram that decodes re-encodes to itself (JOIN keeps only the
/// flag bits it knows) and decodes again to the same packet.
pub fn media_wire(data: &[u8]) {
    let Ok(p) = wire::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    let n = p.encode_vec(&mut out).expect("a decoded packet encodes");
    assert_eq!(n, out.len());
    assert_eq!(p.encoded_len(), Ok(n));
    assert_eq!(wire::decode(&out), Ok(p));
    match p {
        Packet::Join { .. } => {
            assert_eq!(out[1], data[1] & (wire::FLAG_ECHO | wire::FLAG_COOKIE));
            assert_eq!(out[2..], data[2..]);
        }
        _ => assert_eq!(out, data),
    }
}

const MEDIA_APP: &str = "app1";
const MEDIA_SECRET: &[u8] = b"media-secret";

/// The media service's state machine under datagrams from three sources: raw ones, JOINs with
/// tokens the harness mints (so members exist and DATA is forwarded), and time. Everything it
/// sends decodes and goes to a source that sent something.
pub fn media_server(data: &[u8]) {
    let auth = AuthConfig {
        static_secret: None,
        app_keys: vec![AppKey {
            app_id: MEDIA_APP.into(),
            key_id: "k1".into(),
            secret: MEDIA_SECRET.to_vec(),
            not_after: None,
        }],
    };
    let limits = Limits {
        member_timeout: Duration::from_secs(15),
        max_channels: 2,
        max_members_per_channel: 2,
        max_members: 3,
        ..Limits::default()
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let mut server = MediaServer::new(&auth, limits, now, world::T0_UNIX, &mut rng);
    let local = SocketAddr::from(([127, 0, 0, 1], 7000));
    let sources: [SocketAddr; 3] = [
        SocketAddr::from(([192, 0, 2, 1], 1000)),
        SocketAddr::from(([192, 0, 2, 2], 1000)),
        "[2001:db8::1]:1000".parse().expect("literal"),
    ];
    let mut d = Input::new(data);
    let mut steps = 0;
    let mut buf = Vec::new();
    // The last CHALLENGE each source got: a JOIN may echo it (and so become a member).
    let mut cookies: [Option<wire::Cookie>; 3] = [None; 3];
    while !d.is_empty() && steps < 64 {
        steps += 1;
        let op = d.u8();
        let source = usize::from(d.u8() % 3);
        let from = sources[source];
        buf.clear();
        buf.resize(wire::HEADROOM, 0);
        match op % 4 {
            0 | 1 => buf.extend_from_slice(d.blob(1500)),
            2 => {
                let channel = ["c1", "c2", "c3"][usize::from(d.u8() % 3)];
                let uid = u32::from(d.u8() % 4);
                let expiry = world::T0_UNIX + u64::from(d.u16());
                let flags = d.u8();
                let echo = flags & 1 == 1;
                let t = Token::mint(MEDIA_APP, "k1", MEDIA_SECRET, channel, uid, expiry)
                    .expect("valid parts");
                let token = t.encode();
                let join = Packet::Join {
                    echo,
                    token: &token,
                    cookie: if flags & 2 != 0 {
                        cookies[source]
                    } else {
                        None
                    },
                };
                join.encode_vec(&mut buf).expect("fits");
            }
            _ => {
                now += Duration::from_secs(u64::from(d.u8()));
                server.handle_timeout(now);
                continue;
            }
        }
        server.handle(&mut buf, local, from, now, &mut |t| {
            let Endpoint::Udp { remote, local: l } = t.to else {
                panic!("sent to a browser session: {:?}", t.to);
            };
            assert_eq!(l, local);
            let to = sources
                .iter()
                .position(|s| *s == remote)
                .unwrap_or_else(|| panic!("sent to {remote}"));
            match wire::decode(t.bytes) {
                Ok(Packet::Challenge(cookie)) => cookies[to] = Some(cookie),
                Ok(_) => {}
                Err(e) => panic!("the media service sent an undecodable datagram: {e}"),
            }
        });
    }
    assert!(server.stats().members <= 3);
}

/// Tokens: [`token::split`], [`token::claims`], [`Token::decode`] and [`token::verify`]. A
/// token has exactly one parse (it prints back to itself); a username signed with the right
/// key verifies exactly when its claims name that key and it has not expired; minting then
/// decoding gives back the parts.
pub fn token(data: &[u8]) {
    const NOW: u64 = world::T0_UNIX + 100;
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let key = |app: &str, id: &str, secret: &[u8], not_after| AppKey {
            app_id: app.into(),
            key_id: id.into(),
            secret: secret.to_vec(),
            not_after,
        };
        Authenticator::new(&AuthConfig {
            static_secret: Some(b"static".to_vec()),
            app_keys: vec![
                key("app1", "k1", b"s1", None),
                key("app1", "k2", b"s2", Some(NOW - 10)),
                key("app2", "k1", b"s3", None),
            ],
        })
    });
    let mut d = Input::new(data);
    let mode = d.u8();
    if mode % 3 == 2 {
        let mut part = || String::from_utf8_lossy(d.blob(80)).into_owned();
        let (app, key, channel) = (part(), part(), part());
        let secret = d.blob(16);
        let uid = u32::from(d.u16()) << 16 | u32::from(d.u16());
        let expiry = u64::from(d.u16()) * 1_000_000 + u64::from(d.u16());
        let Ok(t) = Token::mint(&app, &key, secret, &channel, uid, expiry) else {
            return;
        };
        let decoded = Token::decode(&t.encode()).expect("a minted token decodes");
        assert_eq!(decoded, t);
        let c = t.claims().expect("a minted token has claims");
        assert_eq!((c.app_id, c.key_id, c.channel), (&*app, &*key, &*channel));
        assert_eq!((c.uid, c.expiry), (uid, expiry));
        return;
    }
    let Ok(s) = std::str::from_utf8(d.rest()) else {
        return;
    };
    if mode % 3 == 1 {
        // `s` is a username, signed with app1's key k1.
        let password = rest_password(b"s1", s);
        let result = token::verify_credential(auth, s, &password, NOW);
        let expected = token::claims(s)
            .ok()
            .filter(|c| c.app_id == "app1" && c.key_id == "k1" && c.expiry >= NOW);
        assert_eq!(result.ok(), expected, "{s:?}");
        return;
    }
    if let Ok((u, p)) = token::split(s) {
        assert_eq!(format!("{u}#{p}"), s);
        assert!(!p.is_empty());
    }
    if let Ok(c) = token::claims(s) {
        let printed = format!(
            "{}:{}:{}:{}:{}",
            c.expiry, c.app_id, c.key_id, c.channel, c.uid
        );
        assert_eq!(printed, s, "one parse");
    }
    if let Ok(t) = Token::decode(s) {
        assert_eq!(t.encode(), s);
        if let Ok(c) = token::verify(auth, &t, NOW) {
            let secret: &[u8] = match (c.app_id, c.key_id) {
                ("app1", "k1") => b"s1",
                ("app2", "k1") => b"s3",
                other => panic!("verified under {other:?}"),
            };
            assert_eq!(t.password, rest_password(secret, &t.username));
        }
    }
}

/// The in-band signaling request (CLOUDPROXY-SIGNAL), reached through the server as a client
/// does: the 401 challenge, then a signed request with a fuzzed SIGNAL-PATH and extra
/// attributes, over UDP or TCP; then the driver's answer with a fuzzed HTTP status and body.
/// The path handed to the driver is the one sent, the answer is signed with the client's key
/// and carries the status (or the body) as promised.
pub fn signal(data: &[u8]) {
    let mut d = Input::new(data);
    let flags = d.u8();
    let client = if flags & 1 == 1 { 2 } else { 0 };
    let path = d.blob(MAX_SIGNAL_PATH + 40);
    let extra = raw_attrs(&mut d, 4, 64);
    let status = d.u16();
    let body = d.blob(MAX_SIGNAL_BODY + 200);

    let mut w = World::new();
    w.keep_transmits = true;
    let c = client_addr(client);
    let mut attrs = vec![Attr::Raw(ATTR_SIGNAL_PATH, path)];
    attrs.extend(extra.iter().copied());
    // The challenge.
    let tid = w.next_tid();
    let unsigned = client::build(MessageClass::Request, SIGNAL, tid, &attrs, None, None);
    w.input(&unsigned, client);
    let auth: Option<ClientAuth> = w.auth[client].clone();
    let Some(auth) = auth else {
        return; // e.g. an unknown comprehension-required attribute: 420 before any 401
    };
    let tid = w.next_tid();
    let signed = client::build(
        MessageClass::Request,
        SIGNAL,
        tid,
        &attrs,
        None,
        Some(&auth),
    );
    w.transmits.clear();
    w.input(&signed, client);
    let valid_path = std::str::from_utf8(path)
        .ok()
        .filter(|p| p.starts_with('/') && p.len() <= MAX_SIGNAL_PATH);
    let Some((_, sent_path)) = w.answer_signal(status, body) else {
        if extra.is_empty() && valid_path.is_some() {
            panic!("a signed request with a valid path reaches the driver");
        }
        return;
    };
    assert_eq!(
        Some(sent_path.as_str()),
        valid_path,
        "the path is the one sent"
    );
    let (to, answer) = w.transmits.last().expect("the request is answered");
    assert_eq!(*to, c);
    let r = client::parse(answer, Some(&auth.key)).expect("STUN");
    assert_eq!(r.transaction, u128::from(tid));
    assert_eq!(r.integrity_ok, Some(true), "signed with the client's key");
    if (200..300).contains(&status) {
        if body.len() > MAX_SIGNAL_BODY && !c.transport.is_stream() {
            assert_eq!(r.error.map(|e| e.0), Some(413));
        } else {
            assert!(r.success);
            assert_eq!(r.data.as_deref(), Some(body));
        }
    } else {
        let code = if (300..700).contains(&status) {
            status
        } else {
            500
        };
        assert_eq!(r.error.map(|e| e.0), Some(code));
    }
}
