//! Property tests over the server state machine: arbitrary interleavings of valid requests,
//! mutated requests, garbage, peer data and time never panic, every answer is well-formed STUN,
//! limits hold, and once time has moved past every lifetime nothing is left.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{
    self, Attr, ClientAuth, ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMISSION, REFRESH,
};
use cloudproxy_proto::policy::PeerPolicy;
use cloudproxy_proto::{
    ClientAddr, Command, PeerAddr, RelayAddr, Server, ServerConfig, Transport, HEADROOM, TAILROOM,
};
use proptest::prelude::*;

mod common;

use common::{rest_credentials, static_secret, Tids};

const T0_UNIX: u64 = 1_900_000_000;

#[derive(Debug, Clone)]
enum Op {
    Garbage(Vec<u8>),
    Request {
        kind: u8,
        client: u8,
        arg: u16,
    },
    Mutated {
        kind: u8,
        client: u8,
        at: usize,
        xor: u8,
    },
    ChannelData {
        client: u8,
        number: u16,
        len: u8,
    },
    Peer {
        port: u16,
        peer: u8,
        len: u8,
    },
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120).prop_map(Op::Garbage),
        (0u8..6, 0u8..3, any::<u16>()).prop_map(|(kind, client, arg)| Op::Request {
            kind,
            client,
            arg
        }),
        (0u8..6, 0u8..3, any::<usize>(), 1u8..=255).prop_map(|(kind, client, at, xor)| {
            Op::Mutated {
                kind,
                client,
                at,
                xor,
            }
        }),
        (0u8..3, 0x3FFEu16..0x4004, any::<u8>()).prop_map(|(client, number, len)| {
            Op::ChannelData {
                client,
                number,
                len,
            }
        }),
        (50000u16..50010, 0u8..3, any::<u8>()).prop_map(|(port, peer, len)| Op::Peer {
            port,
            peer,
            len
        }),
        (0u16..2000).prop_map(Op::Advance),
    ]
}

/// Client `i`'s 5-tuple: clients 0 and 1 on UDP, client 2 on TCP.
fn nth_client(i: u8) -> ClientAddr {
    let transport = if i == 2 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    common::client_addr(transport, 40000 + i as u16)
}

fn peer_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6000 + i as u16))
}

struct World {
    server: Server,
    now: Instant,
    auth: Vec<Option<ClientAuth>>,
    tids: Tids,
}

impl World {
    fn new() -> Self {
        let cfg = ServerConfig {
            realm: "r".into(),
            auth: static_secret(b"k"),
            peer_policy: PeerPolicy::new(["127.0.0.0/8".parse().unwrap()]),
            relay_ports: 50000..=50009,
            max_allocations_per_user: 2,
            max_allocations: 5,
            ..ServerConfig::default()
        };
        let (server, now) = common::server(cfg, T0_UNIX, 3);
        Self {
            server,
            now,
            auth: vec![None, None, None],
            tids: Tids::after(0),
        }
    }

    fn request_bytes(&mut self, kind: u8, client: u8, arg: u16) -> Vec<u8> {
        let tid = self.tids.next_id();
        let peer = peer_addr((arg % 3) as u8);
        let auth = self.auth[client as usize].as_ref();
        match kind {
            0 => client::request(ALLOCATE, tid, &[Attr::RequestedTransportUdp], auth),
            1 => client::request(REFRESH, tid, &[Attr::Lifetime(arg as u32 % 700)], auth),
            2 => client::request(CREATE_PERMISSION, tid, &[Attr::PeerAddress(peer)], auth),
            3 => client::request(
                CHANNEL_BIND,
                tid,
                &[
                    Attr::ChannelNumber(0x4000 + arg % 3),
                    Attr::PeerAddress(peer),
                ],
                auth,
            ),
            4 => client::send_indication(tid, peer, &[0xAB; 17]),
            _ => client::request(BINDING, tid, &[], None),
        }
    }

    fn input(&mut self, bytes: &[u8], client: u8) {
        let c = nth_client(client);
        if let Some(fwd) = self
            .server
            .handle_client_input(bytes, c, self.now)
            .forward()
        {
            assert!(fwd.range.end <= bytes.len());
            assert!(
                cloudproxy_proto::policy::PeerPolicy::new(["127.0.0.0/8".parse().unwrap()])
                    .permits(fwd.peer.0.ip(), fwd.peer.0.port())
            );
        }
        self.drain(true);
    }

    fn drain(&mut self, bind_ok: bool) {
        while let Some(cmd) = self.server.poll_command() {
            if let Command::BindRelay { allocation, .. } = cmd {
                self.server
                    .handle_relay_bound(allocation, bind_ok, self.now);
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            let r = client::parse(&t.data, None).expect("every answer is STUN");
            // Learn realm and nonce as a client would.
            if let (Some(realm), Some(nonce)) = (r.realm, r.nonce) {
                let i = (t.to.remote.port() - 40000) as usize;
                let (user, pass) =
                    rest_credentials(b"k", T0_UNIX + 100_000, &format!("u{}", i % 2));
                self.auth[i] = Some(ClientAuth::new(&user, &pass, &realm, &nonce));
            }
        }
        while self.server.poll_event().is_some() {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_keeps_the_server_consistent(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        for op in ops {
            match op {
                Op::Garbage(bytes) => w.input(&bytes, 0),
                Op::Request { kind, client, arg } => {
                    let bytes = w.request_bytes(kind, client, arg);
                    w.input(&bytes, client);
                }
                Op::Mutated { kind, client, at, xor } => {
                    let mut bytes = w.request_bytes(kind, client, 7);
                    let i = at % bytes.len();
                    bytes[i] ^= xor;
                    w.input(&bytes, client);
                }
                Op::ChannelData { client, number, len } => {
                    let bytes = client::channel_data(number, &vec![1u8; len as usize], false);
                    w.input(&bytes, client);
                }
                Op::Peer { port, peer, len } => {
                    let len = len as usize;
                    let mut buf = vec![0u8; HEADROOM + len + TAILROOM];
                    let relay = RelayAddr(SocketAddr::from(([127, 0, 0, 1], port)));
                    if let Some((to, range)) =
                        w.server.handle_peer_input(relay, PeerAddr(peer_addr(peer)), &mut buf, len, w.now)
                    {
                        prop_assert!(range.end <= buf.len());
                        prop_assert!((40000..40003).contains(&to.remote.port()));
                    }
                }
                Op::Advance(secs) => {
                    w.now += Duration::from_secs(secs as u64);
                    w.server.handle_timeout(w.now);
                    w.drain(true);
                }
            }
            prop_assert!(w.server.allocation_count() <= 5, "total cap holds");
        }
        // Past every lifetime (max allocation 3600 s, reservations 30 s), nothing is left.
        w.now += Duration::from_secs(4000);
        w.server.handle_timeout(w.now);
        w.drain(true);
        prop_assert_eq!(w.server.allocation_count(), 0);
    }
}

/// The generator's requests do reach the allocation logic: the challenge then a signed
/// Allocate make an allocation, and a peer packet comes back after a ChannelBind.
#[test]
fn the_world_allocates_and_relays() {
    let mut w = World::new();
    for kind in [0, 0, 3] {
        let bytes = w.request_bytes(kind, 0, 0);
        w.input(&bytes, 0);
    }
    assert_eq!(w.server.allocation_count(), 1);
    let mut hit = false;
    for port in 50000..=50009 {
        let mut buf = vec![0u8; HEADROOM + 4 + TAILROOM];
        let relay = RelayAddr(SocketAddr::from(([127, 0, 0, 1], port)));
        hit |= w
            .server
            .handle_peer_input(relay, PeerAddr(peer_addr(0)), &mut buf, 4, w.now)
            .is_some();
    }
    assert!(hit, "the bound peer reaches the client");
}
