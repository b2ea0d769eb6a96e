//! A [`Server`] driven as the relay drives it, with clients that learn the REALM and NONCE from
//! 401 answers and sign their requests, so fuzz inputs get past authentication. Every answer
//! and every forwarded byte range is checked as it comes out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_proto::auth::{rest_password, rest_username};
use cloudproxy_proto::channel;
use cloudproxy_proto::client::{self, Attr, ClientAuth, TransactionId};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::server::SignalHandle;
use cloudproxy_proto::{
    AuthConfig, ClientAddr, Command, PeerAddr, RelayAddr, Server, ServerConfig, Shared, Transport,
    HEADROOM, TAILROOM,
};
use rand::SeedableRng;

/// Unix time the server starts at; credentials expire a day later.
pub const T0_UNIX: u64 = 1_900_000_000;
/// The static TURN REST secret.
pub const SECRET: &[u8] = b"fuzz-secret";
/// The server's REALM, which clients learn from its 401.
pub const REALM: &str = "fuzz";
/// Relayed ports: a small range, so allocations run out and are reused.
pub const RELAY_PORTS: std::ops::RangeInclusive<u16> = 50000..=50009;
/// Allocations in total (486 beyond).
pub const MAX_ALLOCATIONS: usize = 5;
/// Allocations one credential may hold (486 beyond).
pub const MAX_PER_USER: usize = 2;
/// Clients 0 and 1 on UDP, 2 on TCP, 3 on TLS. 0 and 2 share a credential.
pub const CLIENTS: usize = 4;

/// The transport address of client `i` (taken modulo [`CLIENTS`]): which transport it uses and which listener it reached.
pub fn client_addr(i: usize) -> ClientAddr {
    let transport = match i % CLIENTS {
        2 => Transport::Tcp,
        3 => Transport::Tls,
        _ => Transport::Udp,
    };
    let local_port = if transport == Transport::Udp {
        3478
    } else {
        5349
    };
    ClientAddr {
        transport,
        remote: SocketAddr::from(([192, 0, 2, 1], 40000 + (i % CLIENTS) as u16)),
        local: SocketAddr::from(([127, 0, 0, 1], local_port)),
    }
}

/// Peers: two allowed, the relay's own relayed address and a metadata address (denied
/// whatever the rules), and an allowed IPv6 one.
pub fn peer_addr(i: u8) -> SocketAddr {
    match i % 5 {
        0 => SocketAddr::from(([127, 0, 0, 1], 6000)),
        1 => SocketAddr::from(([127, 0, 0, 2], 6001)),
        2 => SocketAddr::from(([127, 0, 0, 1], 50001)),
        3 => SocketAddr::from(([169, 254, 169, 254], 80)),
        _ => "[::1]:6000".parse().expect("literal"),
    }
}

fn policy() -> PeerPolicy {
    let mut p = PeerPolicy::new(
        ["127.0.0.0/8", "::1/128", "169.254.0.0/16"]
            .iter()
            .map(|r| r.parse::<PeerRule>().expect("literal rule")),
    );
    p.set_own(
        ["127.0.0.1".parse().expect("literal")],
        vec![3478..=3478, 5349..=5349, RELAY_PORTS],
    );
    p
}

/// The username of client `i`'s credential.
pub fn username(i: usize) -> String {
    rest_username(T0_UNIX + 86_400, &format!("u{}", i % 2))
}

/// The server under fuzzing, its clock, its clients' credentials and what it asked the driver for.
pub struct World {
    /// The server under test.
    pub server: Server,
    /// The virtual clock, moved only by [`World::advance`].
    pub now: Instant,
    policy: PeerPolicy,
    /// Credentials once a 401 told the realm and nonce.
    pub auth: Vec<Option<ClientAuth>>,
    tid: u128,
    /// CLOUDPROXY-SIGNAL requests the server handed over, oldest first, with their path.
    pub signals: VecDeque<(SignalHandle, String)>,
    /// Whether relay sockets bind (a bind failure ends the allocation).
    pub bind_ok: bool,
    /// Every answer sent, in order (kept only when asked, for the signal target).
    pub keep_transmits: bool,
    /// The answers sent, with their client, when `keep_transmits` is set.
    pub transmits: Vec<(ClientAddr, Vec<u8>)>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A server configured with this module's constants and a seeded RNG; no client has authenticated yet.
    pub fn new() -> Self {
        let cfg = ServerConfig {
            realm: REALM.into(),
            auth: AuthConfig {
                static_secret: Some(SECRET.to_vec()),
                app_keys: vec![],
            },
            peer_policy: policy(),
            relay_ipv6: Some(std::net::Ipv6Addr::LOCALHOST),
            relay_ports: RELAY_PORTS,
            max_allocations: MAX_ALLOCATIONS,
            max_allocations_per_user: MAX_PER_USER,
            ..ServerConfig::default()
        };
        let now = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let shared = Shared::from_config(&cfg, &mut rng);
        Self {
            server: Server::new(cfg, shared, now, T0_UNIX, &mut rng),
            now,
            policy: policy(),
            auth: vec![None; CLIENTS],
            tid: 0,
            signals: VecDeque::new(),
            bind_ok: true,
            keep_transmits: false,
            transmits: Vec::new(),
        }
    }

    /// The next transaction id (one more than the last).
    pub fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId::from(self.tid)
    }

    /// One datagram (UDP) or the bytes of a stream read (TCP/TLS), which are cut into frames
    /// as the relay's read loop does; bytes after a framing error are dropped with the
    /// connection.
    pub fn input(&mut self, bytes: &[u8], client: usize) {
        let c = client_addr(client);
        if !c.transport.is_stream() {
            self.frame(bytes, c);
            return;
        }
        let mut start = 0;
        while let Ok(Some(len)) = channel::stream_frame_len(&bytes[start..]) {
            self.frame(&bytes[start..start + len], c);
            start += len;
        }
    }

    /// One datagram or complete frame.
    pub fn frame(&mut self, bytes: &[u8], c: ClientAddr) {
        if let Some(fwd) = self
            .server
            .handle_client_input(bytes, c, self.now)
            .forward()
        {
            assert!(fwd.range.start <= fwd.range.end && fwd.range.end <= bytes.len());
            assert!(
                self.policy.permits(fwd.peer.0.ip(), fwd.peer.0.port()),
                "forwarded to a peer the policy denies: {}",
                fwd.peer.0
            );
            assert_eq!(
                fwd.relay.0.is_ipv4(),
                fwd.peer.0.is_ipv4(),
                "relayed from the peer's family"
            );
            if let Some((_, len)) = channel::parse_header(bytes) {
                assert_eq!(fwd.range, 4..4 + len, "ChannelData forwards its payload");
            }
        }
        self.drain();
    }

    /// A datagram from `peer` to relayed port `port`, carrying `payload`.
    pub fn peer(&mut self, port: u16, v6: bool, peer: SocketAddr, payload: &[u8]) {
        let len = payload.len();
        let mut buf = vec![0u8; HEADROOM + len + TAILROOM];
        buf[HEADROOM..HEADROOM + len].copy_from_slice(payload);
        let relay = if v6 {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), port)
        } else {
            SocketAddr::from(([127, 0, 0, 1], port))
        };
        let Some((to, range)) = self.server.handle_peer_input(
            RelayAddr(relay),
            PeerAddr(peer),
            &mut buf,
            len,
            self.now,
        ) else {
            return;
        };
        assert!(range.end <= buf.len(), "the answer stays in the buffer");
        let client = (to.remote.port() - 40000) as usize;
        assert!(client < CLIENTS && to == client_addr(client));
        let out = &buf[range];
        match channel::parse_header(out) {
            Some((_, n)) => {
                assert_eq!(n, len);
                assert_eq!(&out[4..4 + n], payload);
                let pad = if to.transport.is_stream() {
                    channel::stream_padding(n)
                } else {
                    0
                };
                assert_eq!(out.len(), 4 + n + pad, "padded on streams only");
                if to.transport.is_stream() {
                    assert_eq!(channel::stream_frame_len(out), Ok(Some(out.len())));
                }
            }
            None => {
                let r = client::parse(out, None).expect("a Data indication is STUN");
                assert!(r.is_indication);
                assert_eq!(r.peer, Some(peer), "XOR-PEER-ADDRESS names the peer");
                assert_eq!(r.data.as_deref(), Some(payload));
            }
        }
    }

    /// Moves the clock `secs` seconds on, runs the server's timers and checks what comes out.
    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now);
        self.drain();
    }

    /// Runs the driver's side of commands and reads every answer as a client would.
    pub fn drain(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::BindRelay { allocation, .. } => {
                    self.server
                        .handle_relay_bound(allocation, self.bind_ok, self.now);
                }
                Command::Signal { request, path } => {
                    assert!(path.starts_with('/') && path.len() <= 256);
                    self.signals.push_back((request, path));
                }
                Command::Admit { .. } => unreachable!("no admission configured"),
                Command::CloseRelay { .. } => {}
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            let r = client::parse(&t.data, None).expect("every answer is STUN");
            if t.to.transport.is_stream() {
                assert_eq!(
                    channel::stream_frame_len(&t.data),
                    Ok(Some(t.data.len())),
                    "an answer on a stream is one frame"
                );
            }
            let i = (t.to.remote.port() - 40000) as usize;
            assert!(i < CLIENTS && t.to == client_addr(i));
            if let (Some(realm), Some(nonce)) = (&r.realm, &r.nonce) {
                let user = username(i);
                let pass = rest_password(SECRET, &user);
                self.auth[i] = Some(ClientAuth::new(&user, &pass, realm, nonce));
            }
            if self.keep_transmits {
                self.transmits.push((t.to, t.data));
            }
        }
        while self.server.poll_event().is_some() {}
        assert!(self.server.allocation_count() <= MAX_ALLOCATIONS);
    }

    /// Answers the oldest pending CLOUDPROXY-SIGNAL request.
    pub fn answer_signal(&mut self, status: u16, body: &[u8]) -> Option<(SignalHandle, String)> {
        let s = self.signals.pop_front()?;
        self.server.handle_signal_response(s.0, status, body);
        self.drain();
        Some(s)
    }

    /// A request of one of the kinds a TURN client sends, signed with what client `i` learned.
    pub fn request(&mut self, kind: u8, client: usize, arg: u16) -> Vec<u8> {
        use client::{ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
        let tid = self.next_tid();
        let peer = peer_addr(arg as u8);
        let auth = self.auth[client % CLIENTS].as_ref();
        match kind % 7 {
            0 => client::request(ALLOCATE, tid, &[Attr::RequestedTransportUdp], auth),
            1 => client::request(REFRESH, tid, &[Attr::Lifetime(u32::from(arg) % 4000)], auth),
            2 => client::request(CREATE_PERMISSION, tid, &[Attr::PeerAddress(peer)], auth),
            3 => client::request(
                CHANNEL_BIND,
                tid,
                &[
                    Attr::ChannelNumber(0x4000 + (arg >> 8) % 3),
                    Attr::PeerAddress(peer),
                ],
                auth,
            ),
            4 => client::send_indication(tid, peer, &[0xAB; 17]),
            // Dual-stack: an IPv6 relayed address besides the IPv4 one (RFC 8656 §7.2).
            5 => client::request(
                ALLOCATE,
                tid,
                &[
                    Attr::RequestedTransportUdp,
                    Attr::Raw(0x8000, &[0x02, 0, 0, 0]),
                ],
                auth,
            ),
            _ => client::request(BINDING, tid, &[], None),
        }
    }

    /// Sends `kind` requests for `client`, first the one that draws the 401 if it has no
    /// credential yet.
    pub fn send_request(&mut self, kind: u8, client: usize, arg: u16) {
        if self.auth[client % CLIENTS].is_none() && kind % 7 != 4 && kind % 7 != 6 {
            let bytes = self.request(kind, client, arg);
            self.frame_for(&bytes, client);
        }
        let bytes = self.request(kind, client, arg);
        self.frame_for(&bytes, client);
    }

    fn frame_for(&mut self, bytes: &[u8], client: usize) {
        self.frame(bytes, client_addr(client));
    }

    /// Past every lifetime nothing is left (allocations last at most 3600 s, reservations
    /// 30 s).
    pub fn finish(&mut self) {
        self.signals.clear();
        self.advance(4000);
        assert_eq!(self.server.allocation_count(), 0, "everything expired");
    }
}
