//! The sans-IO data path allocates nothing (performance issue: "no per-packet allocation").
//!
//! A counting global allocator counts every allocation and reallocation made on a thread while
//! that thread has counting switched on. Each test sets up a [`Server`] on a virtual clock
//! (allocations, permissions and channels made through real, authenticated TURN requests),
//! warms the path up, then relays 100,000 packets through it with counting on and asserts that
//! nothing was allocated. A control test proves the counter sees a `Vec::with_capacity(1)`.
//!
//! Measurement windows are serialised by a lock (`cloudproxy_testkit::alloc`), so parallel
//! tests cannot add to each other's counts. Set `NO_ALLOC_BACKTRACE=1` to print a backtrace of
//! the first allocations seen in a window.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{self, Attr, ClientAuth, ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::{
    ClientAddr, ClientInput, Command, PeerAddr, RelayAddr, Server, ServerConfig, Transport,
    HEADROOM, TAILROOM,
};
use cloudproxy_testkit::alloc::{count_on_this_thread, CountingAllocator};

mod common;

use common::{client_addr, rest_credentials, static_secret, Tids};

// ---------------------------------------------------------------------------------------------
// The counting allocator (the workspace's test kit)

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` with counting on for this thread and returns the allocations it made.
fn count_allocations(f: impl FnOnce()) -> u64 {
    count_on_this_thread(f).0
}

// ---------------------------------------------------------------------------------------------
// A server with allocations set up through real requests

const PACKETS: usize = 100_000;
const WARM_UP: usize = 1_000;
const SECRET: &[u8] = b"no-alloc-secret";
const T0_UNIX: u64 = 1_800_000_000;
const CHANNEL: u16 = 0x4001;
/// The largest payload the tests send.
const MAX_PAYLOAD: usize = 1_200;

/// Payload sizes cycle through every remainder mod 4, so stream padding of 0..=3 bytes and
/// Data indication padding are all exercised; 160 B (audio) and 1,200 B (video) included.
fn payload_len(i: usize) -> usize {
    const SIZES: [usize; 8] = [160, 161, 162, 163, 1_200, 1_001, 57, 4];
    SIZES[i % SIZES.len()]
}

struct Setup {
    server: Server,
    now: Instant,
    tids: Tids,
    username: String,
    password: String,
}

/// One client of the server: its 5-tuple and the relayed address it got.
#[derive(Clone, Copy)]
struct Allocated {
    client: ClientAddr,
    relay: SocketAddr,
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Peer of the allocation with a channel.
const CHANNEL_PEER: u16 = 3480;
/// Peer of the allocation without a channel (permission only).
const PLAIN_PEER: u16 = 3481;

impl Setup {
    fn new() -> Self {
        let cfg = ServerConfig {
            realm: "example.org".into(),
            auth: static_secret(SECRET),
            peer_policy: PeerPolicy::new(["127.0.0.0/8".parse::<PeerRule>().unwrap()]),
            relay_ports: 50000..=50099,
            ..ServerConfig::default()
        };
        let (server, now) = common::server(cfg, T0_UNIX, 7);
        let (username, password) = rest_credentials(SECRET, T0_UNIX + 86_400, "alice");
        Self {
            server,
            now,
            tids: Tids::after(1),
            username,
            password,
        }
    }

    /// Sends a request from `client`, carries out relay binds, returns the one response.
    fn exchange(
        &mut self,
        client: ClientAddr,
        bytes: &[u8],
        key: Option<&ClientAuth>,
    ) -> client::Response {
        assert!(self.server.handle_client_input(bytes, client, self.now) == ClientInput::Handled);
        while let Some(c) = self.server.poll_command() {
            if let Command::BindRelay { allocation, .. } = c {
                self.server.handle_relay_bound(allocation, true, self.now);
            }
        }
        while self.server.poll_event().is_some() {}
        let t = self.server.poll_transmit().expect("a response");
        assert_eq!(t.to, client);
        assert!(self.server.poll_transmit().is_none());
        client::parse(&t.data, key.map(|a| &a.key)).unwrap()
    }

    /// Allocates for `client` (answering the 401) and returns the credentials and relay.
    fn allocate(&mut self, client: ClientAddr) -> (ClientAuth, Allocated) {
        let tid = self.tids.next_id();
        let req = client::request(ALLOCATE, tid, &[Attr::RequestedTransportUdp], None);
        let r = self.exchange(client, &req, None);
        assert_eq!(r.error.as_ref().map(|e| e.0), Some(401));
        let auth = ClientAuth::new(
            &self.username,
            &self.password,
            r.realm.as_deref().unwrap(),
            r.nonce.as_deref().unwrap(),
        );
        let r = self.authed(client, &auth, ALLOCATE, &[Attr::RequestedTransportUdp]);
        (
            auth,
            Allocated {
                client,
                relay: r.relayed[0],
            },
        )
    }

    fn authed(
        &mut self,
        client: ClientAddr,
        auth: &ClientAuth,
        method: client::Method,
        attrs: &[Attr],
    ) -> client::Response {
        let tid = self.tids.next_id();
        let req = client::request(method, tid, attrs, Some(auth));
        let r = self.exchange(client, &req, Some(auth));
        assert!(r.success, "{method:?} failed: {:?}", r.error);
        assert_eq!(r.integrity_ok, Some(true));
        r
    }

    /// An allocation with `CHANNEL` bound to the channel peer.
    fn with_channel(&mut self, transport: Transport, port: u16) -> Allocated {
        let (auth, a) = self.allocate(client_addr(transport, port));
        self.authed(
            a.client,
            &auth,
            CHANNEL_BIND,
            &[
                Attr::ChannelNumber(CHANNEL),
                Attr::PeerAddress(peer(CHANNEL_PEER)),
            ],
        );
        a
    }

    /// An allocation with only a permission for the plain peer (Send/Data indications).
    fn with_permission(&mut self, port: u16) -> Allocated {
        let (auth, a) = self.allocate(client_addr(Transport::Udp, port));
        self.authed(
            a.client,
            &auth,
            CREATE_PERMISSION,
            &[Attr::PeerAddress(peer(PLAIN_PEER))],
        );
        a
    }
}

/// The whole set-up the brief asks for: a UDP client with a channel, a UDP client with only a
/// permission, and a TCP client with a channel.
struct World {
    s: Setup,
    udp: Allocated,
    plain: Allocated,
    tcp: Allocated,
}

fn world() -> World {
    let mut s = Setup::new();
    let udp = s.with_channel(Transport::Udp, 40000);
    let plain = s.with_permission(40001);
    let tcp = s.with_channel(Transport::Tcp, 40002);
    assert_eq!(s.server.allocation_count(), 3);
    World { s, udp, plain, tcp }
}

// ---------------------------------------------------------------------------------------------
// The paths

/// Client → peer, ChannelData: `n` frames through `handle_client_input`. Returns bytes
/// forwarded.
fn client_channel_data(w: &mut World, a: Allocated, frames: &[Vec<u8>], n: usize) -> usize {
    let mut total = 0;
    for i in 0..n {
        let frame = &frames[i % frames.len()];
        let fwd =
            w.s.server
                .handle_client_input(black_box(frame), a.client, w.s.now)
                .forward()
                .expect("ChannelData forwarded");
        assert_eq!(fwd.peer, PeerAddr(peer(CHANNEL_PEER)));
        assert_eq!(fwd.relay, RelayAddr(a.relay));
        assert_eq!(fwd.range.start, 4);
        total += black_box(fwd.range).len();
    }
    total
}

/// Peer → client: `n` datagrams received `HEADROOM` into `buf` on `a`'s relay from `from`.
/// Checks the first bytes of what is to be sent: a ChannelData header (padded on streams) or a
/// Data indication. Returns bytes to send.
fn peer_to_client(w: &mut World, a: Allocated, from: u16, buf: &mut [u8], n: usize) -> usize {
    let stream = a.client.transport.is_stream();
    let mut total = 0;
    for i in 0..n {
        let len = payload_len(i);
        buf[HEADROOM] = i as u8;
        let (to, range) =
            w.s.server
                .handle_peer_input(
                    RelayAddr(a.relay),
                    PeerAddr(peer(from)),
                    black_box(&mut *buf),
                    len,
                    w.s.now,
                )
                .expect("relayed to the client");
        assert_eq!(to, a.client);
        let out = &buf[range.clone()];
        if from == CHANNEL_PEER {
            assert_eq!(range.start, HEADROOM - 4);
            assert_eq!(u16::from_be_bytes([out[0], out[1]]), CHANNEL);
            assert_eq!(u16::from_be_bytes([out[2], out[3]]) as usize, len);
            let pad = if stream { (4 - len % 4) % 4 } else { 0 };
            assert_eq!(out.len(), 4 + len + pad);
            assert_eq!(out[4], i as u8);
        } else {
            // Data indication: class indication, method Data (0x0017), then XOR-PEER-ADDRESS.
            assert_eq!(&out[..2], &[0x00, 0x17]);
            assert_eq!(out.len() % 4, 0);
            assert_eq!(&out[20..22], &[0x00, 0x12]);
        }
        total += out.len();
    }
    total
}

/// Client → peer, Send indication: `n` through `handle_client_input`.
fn client_send_indication(w: &mut World, a: Allocated, msgs: &[Vec<u8>], n: usize) -> usize {
    let mut total = 0;
    for i in 0..n {
        let msg = &msgs[i % msgs.len()];
        let fwd =
            w.s.server
                .handle_client_input(black_box(msg), a.client, w.s.now)
                .forward()
                .expect("Send indication forwarded");
        assert_eq!(fwd.peer, PeerAddr(peer(PLAIN_PEER)));
        assert_eq!(fwd.relay, RelayAddr(a.relay));
        assert_eq!(fwd.range.len(), payload_len(i % msgs.len()));
        total += fwd.range.len();
    }
    total
}

/// Frames built before the window: one per payload size.
fn channel_frames(stream: bool) -> Vec<Vec<u8>> {
    (0..8)
        .map(|i| client::channel_data(CHANNEL, &vec![0xAB; payload_len(i)], stream))
        .collect()
}

fn send_indications(w: &mut World) -> Vec<Vec<u8>> {
    (0..8)
        .map(|i| {
            let tid = w.s.tids.next_id();
            client::send_indication(tid, peer(PLAIN_PEER), &vec![0xCD; payload_len(i)])
        })
        .collect()
}

fn peer_buffer() -> Vec<u8> {
    vec![0u8; HEADROOM + MAX_PAYLOAD + TAILROOM]
}

/// Warms up, counts `PACKETS` through `run`, prints and asserts zero.
fn assert_no_alloc(name: &str, mut run: impl FnMut(usize) -> usize) {
    black_box(run(WARM_UP));
    let mut bytes = 0;
    let n = count_allocations(|| bytes = run(PACKETS));
    println!(
        "{name}: {n} allocations over {PACKETS} packets ({:.4} per packet; {bytes} bytes out)",
        n as f64 / PACKETS as f64
    );
    assert_eq!(n, 0, "{name} allocated {n} times over {PACKETS} packets");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn the_counter_counts() {
    let n = count_allocations(|| {
        black_box(Vec::<u8>::with_capacity(1));
    });
    assert_eq!(
        n, 1,
        "a Vec::with_capacity(1) in the window must be counted"
    );
    let n = count_allocations(|| {
        let mut v = black_box(Vec::<u8>::with_capacity(1));
        v.extend_from_slice(black_box(&[1, 2, 3, 4, 5, 6, 7, 8, 9]));
        black_box(v);
    });
    assert_eq!(n, 2, "a reallocation must be counted too");
    // The window's own opening and closing allocate nothing.
    assert_eq!(
        count_allocations(|| {}),
        0,
        "an empty window counts nothing"
    );
}

#[test]
fn channel_data_client_to_peer_does_not_allocate() {
    let mut w = world();
    let a = w.udp;
    let frames = channel_frames(false);
    assert_no_alloc("ChannelData client->peer (UDP)", |n| {
        client_channel_data(&mut w, a, &frames, n)
    });
}

#[test]
fn channel_data_client_to_peer_over_tcp_does_not_allocate() {
    let mut w = world();
    let a = w.tcp;
    let frames = channel_frames(true);
    assert_no_alloc("ChannelData client->peer (TCP, padded frames)", |n| {
        client_channel_data(&mut w, a, &frames, n)
    });
}

#[test]
fn peer_to_client_channel_data_does_not_allocate() {
    let mut w = world();
    let a = w.udp;
    let mut buf = peer_buffer();
    assert_no_alloc("peer->client ChannelData into headroom (UDP)", |n| {
        peer_to_client(&mut w, a, CHANNEL_PEER, &mut buf, n)
    });
}

#[test]
fn peer_to_client_channel_data_over_tcp_does_not_allocate() {
    let mut w = world();
    let a = w.tcp;
    let mut buf = peer_buffer();
    assert_no_alloc(
        "peer->client ChannelData into headroom (TCP, padded)",
        |n| peer_to_client(&mut w, a, CHANNEL_PEER, &mut buf, n),
    );
}

#[test]
fn peer_to_client_data_indication_does_not_allocate() {
    let mut w = world();
    let a = w.plain;
    let mut buf = peer_buffer();
    assert_no_alloc("peer->client Data indication (no channel)", |n| {
        peer_to_client(&mut w, a, PLAIN_PEER, &mut buf, n)
    });
}

#[test]
fn send_indication_client_to_peer_does_not_allocate() {
    let mut w = world();
    let a = w.plain;
    let msgs = send_indications(&mut w);
    assert_no_alloc("Send indication client->peer", |n| {
        client_send_indication(&mut w, a, &msgs, n)
    });
}

#[test]
fn handle_timeout_with_nothing_due_does_not_allocate() {
    let mut w = world();
    let now = w.s.now;
    let due =
        w.s.server
            .poll_timeout()
            .expect("allocations have deadlines");
    assert!(due > now + Duration::from_secs(60));
    assert_no_alloc("handle_timeout with nothing due", |n| {
        for i in 0..n {
            // Time moves, but never up to a deadline.
            let t = now + Duration::from_millis((i % 1_000) as u64);
            w.s.server.handle_timeout(black_box(t));
            black_box(w.s.server.poll_timeout());
        }
        0
    });
    assert_eq!(w.s.server.allocation_count(), 3);
}

#[test]
fn all_paths_interleaved_do_not_allocate() {
    // The paths one after the other on one server, as a shard would see them.
    let mut w = world();
    let (udp, plain, tcp) = (w.udp, w.plain, w.tcp);
    let udp_frames = channel_frames(false);
    let tcp_frames = channel_frames(true);
    let sends = send_indications(&mut w);
    let mut buf = peer_buffer();
    assert_no_alloc("all paths interleaved", |n| {
        let mut total = 0;
        for i in 0..n {
            total += match i % 6 {
                0 => client_channel_data(&mut w, udp, &udp_frames, 1),
                1 => client_channel_data(&mut w, tcp, &tcp_frames, 1),
                2 => peer_to_client(&mut w, udp, CHANNEL_PEER, &mut buf, 1),
                3 => peer_to_client(&mut w, tcp, CHANNEL_PEER, &mut buf, 1),
                4 => peer_to_client(&mut w, plain, PLAIN_PEER, &mut buf, 1),
                _ => client_send_indication(&mut w, plain, &sends, 1),
            };
            if i % 64 == 0 {
                let now = w.s.now;
                w.s.server.handle_timeout(now);
            }
        }
        total
    });
}
