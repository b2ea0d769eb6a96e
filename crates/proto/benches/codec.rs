//! Criterion microbenchmarks of the codec and the forwarding decision (performance issue):
//! parsing an authenticated Allocate, MESSAGE-INTEGRITY verification, the ChannelData and
//! Send indication forwarding decisions, and the peer → client header write (ChannelData and
//! Data indication).
//!
//! `cargo bench -p cloudproxy-proto --bench codec`. Each benchmark measures for 2 s.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_proto::auth::{rest_password, rest_username};
use cloudproxy_proto::client::{
    self, Attr, ClientAuth, TransactionId, ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION,
};
use cloudproxy_proto::integrity::{self, IntegrityKind};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::{
    AuthConfig, ClientAddr, ClientInput, Command, PeerAddr, RelayAddr, Server, ServerConfig,
    Shared, Transport, HEADROOM, TAILROOM,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use stun_types::attribute::{AttributeType, RawAttribute};
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_types::attribute::XorPeerAddress;
use turn_types::message::DATA;

const SECRET: &[u8] = b"bench-secret";
const T0_UNIX: u64 = 1_800_000_000;
const CHANNEL: u16 = 0x4001;
/// Payload bytes (the throughput benchmarks use 200).
const PAYLOAD: usize = 200;
const CHANNEL_PEER: u16 = 3480;
const PLAIN_PEER: u16 = 3481;

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn client_addr(port: u16) -> ClientAddr {
    ClientAddr {
        transport: Transport::Udp,
        remote: SocketAddr::from(([192, 0, 2, 10], port)),
        local: SocketAddr::from(([127, 0, 0, 1], 3478)),
    }
}

/// A server on a virtual clock with two UDP allocations: one with `CHANNEL` bound to the
/// channel peer, one with a permission for the plain peer only.
struct Fixture {
    server: Server,
    now: Instant,
    tid: u128,
    username: String,
    password: String,
    channel: (ClientAddr, SocketAddr),
    plain: (ClientAddr, SocketAddr),
    /// Credentials of the channel client, after its 401.
    auth: Option<ClientAuth>,
}

impl Fixture {
    fn new() -> Self {
        let cfg = ServerConfig {
            realm: "example.org".into(),
            auth: AuthConfig {
                static_secret: Some(SECRET.to_vec()),
                app_keys: vec![],
            },
            peer_policy: PeerPolicy::new(["127.0.0.0/8".parse::<PeerRule>().unwrap()]),
            relay_ports: 50000..=50099,
            ..ServerConfig::default()
        };
        let now = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let shared = Shared::from_config(&cfg, &mut rng);
        let server = Server::new(cfg, shared, now, T0_UNIX, &mut rng);
        let username = rest_username(T0_UNIX + 86_400, "alice");
        let password = rest_password(SECRET, &username);
        let unset = (client_addr(0), peer(0));
        let mut f = Self {
            server,
            now,
            tid: 1,
            username,
            password,
            channel: unset,
            plain: unset,
            auth: None,
        };
        let (auth, c) = f.allocate(client_addr(40000));
        f.authed(
            c.0,
            &auth,
            CHANNEL_BIND,
            &[
                Attr::ChannelNumber(CHANNEL),
                Attr::PeerAddress(peer(CHANNEL_PEER)),
            ],
        );
        f.channel = c;
        f.auth = Some(auth);
        let (auth, p) = f.allocate(client_addr(40001));
        f.authed(
            p.0,
            &auth,
            CREATE_PERMISSION,
            &[Attr::PeerAddress(peer(PLAIN_PEER))],
        );
        f.plain = p;
        f
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId::from(self.tid)
    }

    fn exchange(
        &mut self,
        client: ClientAddr,
        bytes: &[u8],
        auth: Option<&ClientAuth>,
    ) -> client::Response {
        assert!(self.server.handle_client_input(bytes, client, self.now) == ClientInput::Handled);
        while let Some(c) = self.server.poll_command() {
            if let Command::BindRelay { allocation, .. } = c {
                self.server.handle_relay_bound(allocation, true, self.now);
            }
        }
        while self.server.poll_event().is_some() {}
        let t = self.server.poll_transmit().expect("a response");
        client::parse(&t.data, auth.map(|a| &a.key)).unwrap()
    }

    fn allocate(&mut self, client: ClientAddr) -> (ClientAuth, (ClientAddr, SocketAddr)) {
        let tid = self.next_tid();
        let req = client::request(ALLOCATE, tid, &[Attr::RequestedTransportUdp], None);
        let r = self.exchange(client, &req, None);
        let auth = ClientAuth::new(
            &self.username,
            &self.password,
            r.realm.as_deref().unwrap(),
            r.nonce.as_deref().unwrap(),
        );
        let r = self.authed(client, &auth, ALLOCATE, &[Attr::RequestedTransportUdp]);
        (auth, (client, r.relayed[0]))
    }

    fn authed(
        &mut self,
        client: ClientAddr,
        auth: &ClientAuth,
        method: client::Method,
        attrs: &[Attr],
    ) -> client::Response {
        let tid = self.next_tid();
        let req = client::request(method, tid, attrs, Some(auth));
        let r = self.exchange(client, &req, Some(auth));
        assert!(r.success, "{method:?}: {:?}", r.error);
        r
    }
}

fn codec(c: &mut Criterion) {
    let mut f = Fixture::new();
    let auth = f.auth.clone().expect("credentials");
    let tid = f.next_tid();
    // What a client sends: REQUESTED-TRANSPORT, USERNAME, REALM, NONCE, MESSAGE-INTEGRITY,
    // FINGERPRINT.
    let allocate = client::request(
        ALLOCATE,
        tid,
        &[Attr::RequestedTransportUdp, Attr::Lifetime(600)],
        Some(&auth),
    );
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));

    g.bench_function("parse_authenticated_allocate", |b| {
        b.iter(|| Message::from_bytes(black_box(&allocate)).is_ok())
    });

    let msg = Message::from_bytes(&allocate).unwrap();
    let (offset, raw) = msg
        .raw_attribute_and_offset(AttributeType::new(0x0008))
        .expect("MESSAGE-INTEGRITY");
    let mac = raw.value.to_vec();
    assert!(integrity::verify(
        IntegrityKind::Sha1,
        &auth.key,
        &allocate,
        offset,
        &mac
    ));
    g.bench_function("message_integrity_verify_sha1", |b| {
        b.iter(|| {
            integrity::verify(
                IntegrityKind::Sha1,
                black_box(&auth.key),
                black_box(&allocate),
                offset,
                black_box(&mac),
            )
        })
    });

    let (client, relay) = f.channel;
    let now = f.now;
    let frame = client::channel_data(CHANNEL, &[0xAB; PAYLOAD], false);
    assert!(f
        .server
        .handle_client_input(&frame, client, now)
        .forward()
        .is_some());
    g.bench_function("channel_data_client_to_peer", |b| {
        b.iter(|| {
            f.server
                .handle_client_input(black_box(&frame), client, now)
                .forward()
        })
    });

    let mut buf = vec![0u8; HEADROOM + PAYLOAD + TAILROOM];
    let (relay_addr, from) = (RelayAddr(relay), PeerAddr(peer(CHANNEL_PEER)));
    assert!(f
        .server
        .handle_peer_input(relay_addr, from, &mut buf, PAYLOAD, now)
        .is_some());
    g.bench_function("peer_to_client_channel_data_header", |b| {
        b.iter(|| {
            f.server
                .handle_peer_input(relay_addr, from, black_box(&mut buf), PAYLOAD, now)
        })
    });

    let (plain_client, plain_relay) = f.plain;
    let tid = f.next_tid();
    let send = client::send_indication(tid, peer(PLAIN_PEER), &[0xCD; PAYLOAD]);
    assert!(f
        .server
        .handle_client_input(&send, plain_client, now)
        .forward()
        .is_some());
    g.bench_function("send_indication_decode_and_forward", |b| {
        b.iter(|| {
            f.server
                .handle_client_input(black_box(&send), plain_client, now)
                .forward()
        })
    });

    let (relay_addr, from) = (RelayAddr(plain_relay), PeerAddr(peer(PLAIN_PEER)));
    assert!(f
        .server
        .handle_peer_input(relay_addr, from, &mut buf, PAYLOAD, now)
        .is_some());
    g.bench_function("data_indication_build_in_place", |b| {
        b.iter(|| {
            f.server
                .handle_peer_input(relay_addr, from, black_box(&mut buf), PAYLOAD, now)
        })
    });

    // For comparison: the same Data indication built with stun-types' Vec writer (a copy of
    // the payload into a fresh Vec), which the server avoids.
    let payload = [0xEF; PAYLOAD];
    let peer_addr = peer(PLAIN_PEER);
    g.bench_function("data_indication_build_stun_types_vec", |b| {
        b.iter(|| {
            let tid = TransactionId::from(0x1234_5678_u128);
            let mut w = Message::builder(
                MessageType::from_class_method(MessageClass::Indication, DATA),
                tid,
                MessageWriteVec::new(),
            );
            let _ = w.add_attribute(&XorPeerAddress::new(black_box(peer_addr), tid));
            let _ = w.add_attribute(&RawAttribute::new(
                AttributeType::new(0x0013),
                black_box(&payload),
            ));
            w.finish()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

// `criterion_group!` generates an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    use super::*;

    criterion_group! {
    name = benches;
    config = config();
    targets = codec
    }
}
criterion_main!(group::benches);
