//! Scenario tests of the sans-IO server on a virtual clock: no sockets, no sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_proto::admission::{Access, AppAccess, Mode, Pool, Verdict};
use cloudproxy_proto::auth::rest_password;
use cloudproxy_proto::client::{
    self, Attr, ClientAuth, Response, ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMISSION, REFRESH,
};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::server::AuthFailure;
use cloudproxy_proto::{
    AuthConfig, BoundChannel, ClientAddr, ClientInput, Command, Event, PeerAddr, RelayAddr, Server,
    ServerConfig, Transport, HEADROOM, TAILROOM,
};
use stun_types::message::TransactionId;

mod common;

use common::{client_addr, rest_credentials, static_secret, Tids};

const SECRET: &[u8] = b"s3cret";
const T0_UNIX: u64 = 1_800_000_000;

struct Harness {
    server: Server,
    now: Instant,
    client: ClientAddr,
    tids: Tids,
    auth: Option<ClientAuth>,
    username: String,
    password: String,
    /// Commands the server issued, in order.
    seen: Vec<Command>,
    /// The answer to give to `Command::Admit` (none: leave it waiting).
    verdict: Option<Verdict>,
}

fn config(rules: &[&str]) -> ServerConfig {
    ServerConfig {
        realm: "example.org".into(),
        auth: static_secret(SECRET),
        peer_policy: PeerPolicy::new(rules.iter().map(|r| r.parse::<PeerRule>().unwrap())),
        relay_ports: 50000..=50009,
        max_allocations_per_user: 3,
        ..ServerConfig::default()
    }
}

impl Harness {
    fn new(cfg: ServerConfig) -> Self {
        let (server, now) = common::server(cfg, T0_UNIX, 7);
        let (username, password) = rest_credentials(SECRET, T0_UNIX + 86_400, "alice");
        Self {
            server,
            now,
            client: client_addr(Transport::Udp, 40000),
            tids: Tids::after(1),
            auth: None,
            username,
            password,
            seen: Vec::new(),
            verdict: None,
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now);
    }

    /// Sends bytes, executes bind commands successfully, returns the one response.
    fn exchange(&mut self, bytes: &[u8]) -> Response {
        assert!(
            self.server
                .handle_client_input(bytes, self.client, self.now)
                == ClientInput::Handled
        );
        self.run_commands(true);
        let t = self.server.poll_transmit().expect("a response");
        assert_eq!(t.to, self.client);
        assert!(self.server.poll_transmit().is_none());
        client::parse(&t.data, self.auth.as_ref().map(|a| &a.key)).unwrap()
    }

    fn run_commands(&mut self, ok: bool) -> Vec<Command> {
        let mut seen = vec![];
        while let Some(c) = self.server.poll_command() {
            match &c {
                Command::BindRelay { allocation, .. } => {
                    self.server.handle_relay_bound(*allocation, ok, self.now);
                }
                Command::Admit { allocation, .. } => {
                    if let Some(v) = self.verdict.clone() {
                        assert!(self.server.handle_admission(*allocation, v, self.now));
                    }
                }
                Command::CloseRelay { .. } | Command::Signal { .. } => {}
            }
            seen.push(c);
        }
        self.seen.extend(seen.iter().cloned());
        seen
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    /// Does the 401 dance and returns the authenticated request's response.
    fn authed(&mut self, method: stun_types::message::Method, attrs: &[Attr]) -> Response {
        if self.auth.is_none() {
            let tid = self.tids.next_id();
            let r = self.exchange(&client::request(
                ALLOCATE,
                tid,
                &[Attr::RequestedTransportUdp],
                None,
            ));
            assert_eq!(r.error.as_ref().unwrap().0, 401);
            self.auth = Some(ClientAuth::new(
                &self.username,
                &self.password,
                r.realm.as_deref().unwrap(),
                r.nonce.as_deref().unwrap(),
            ));
        }
        let tid = self.tids.next_id();
        let req = client::request(method, tid, attrs, self.auth.as_ref());
        let r = self.exchange(&req);
        if r.error.as_ref().is_some_and(|e| e.0 == 438) {
            // Stale nonce: retry once with the fresh one, as a client does (RFC 8489 §9.2.5).
            self.auth.as_mut().unwrap().nonce = r.nonce.clone().unwrap();
            let tid = self.tids.next_id();
            let req = client::request(method, tid, attrs, self.auth.as_ref());
            return self.exchange(&req);
        }
        r
    }

    /// Moves to another client address; nonces are bound to the address, so a new one is due.
    fn move_to(&mut self, port: u16) {
        self.client = client_addr(Transport::Udp, port);
        self.auth = None;
    }

    fn allocate(&mut self) -> SocketAddr {
        let r = self.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
        assert!(r.success, "allocate failed: {:?}", r.error);
        assert_eq!(r.integrity_ok, Some(true));
        assert_eq!(r.lifetime, Some(600));
        assert_eq!(r.mapped, Some(self.client.remote));
        r.relayed[0]
    }

    /// Binds channel `number` to the peer (which grants or refreshes its permission too);
    /// asserts success.
    fn bind_channel(&mut self, number: u16) -> Response {
        let r = self.authed(
            CHANNEL_BIND,
            &[Attr::ChannelNumber(number), Attr::PeerAddress(peer())],
        );
        assert!(r.success, "{:?}", r.error);
        r
    }

    fn peer_packet(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
        let (to, range) = self.server.handle_peer_input(
            RelayAddr(relay),
            PeerAddr(peer),
            &mut buf,
            payload.len(),
            self.now,
        )?;
        assert_eq!(to, self.client);
        Some(buf[range].to_vec())
    }
}

const PEER: &str = "127.0.0.1:3480";

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

#[test]
fn binding_reflects_the_client_address() {
    let mut h = Harness::new(config(&[]));
    let tid = h.tids.next_id();
    let r = h.exchange(&client::request(BINDING, tid, &[], None));
    assert!(r.success);
    assert_eq!(r.mapped, Some(h.client.remote));
}

#[test]
fn unauthenticated_allocate_is_challenged_and_leaves_no_state() {
    let mut h = Harness::new(config(&[]));
    for i in 0..100u16 {
        h.client = client_addr(Transport::Udp, 20000 + i);
        let tid = h.tids.next_id();
        let r = h.exchange(&client::request(
            ALLOCATE,
            tid,
            &[Attr::RequestedTransportUdp],
            None,
        ));
        assert_eq!(r.error.unwrap().0, 401);
        assert_eq!(r.realm.as_deref(), Some("example.org"));
        assert!(r.nonce.unwrap().starts_with("obMatJos2"));
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(
        h.server.poll_timeout(),
        None,
        "no timers for unauthenticated clients"
    );
}

#[test]
fn allocate_succeeds_and_a_retransmission_gets_the_same_answer() {
    let mut h = Harness::new(config(&[]));
    let relay = h.allocate();
    assert!((50000..=50009).contains(&relay.port()));
    let created = h
        .events()
        .iter()
        .filter(|e| matches!(e, Event::AllocationCreated { .. }))
        .count();
    assert_eq!(created, 1);
    // Same transaction id again: success again, no new allocation.
    let tid = TransactionId::from(h.tids.last);
    let again = h.exchange(&client::request(
        ALLOCATE,
        tid,
        &[Attr::RequestedTransportUdp],
        h.auth.as_ref(),
    ));
    assert!(again.success);
    assert_eq!(again.relayed[0], relay);
    // A new transaction on the same 5-tuple: 437.
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.unwrap().0, 437);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn wrong_password_and_expired_credentials_get_401() {
    let mut h = Harness::new(config(&[]));
    h.password = "not-the-password".into();
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.unwrap().0, 401);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AuthFailed {
            reason: AuthFailure::BadIntegrity,
            ..
        }
    )));

    let mut h = Harness::new(config(&[]));
    (h.username, h.password) = rest_credentials(SECRET, T0_UNIX - 1, "alice");
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.unwrap().0, 401);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn credentials_expire_on_the_virtual_clock() {
    let mut h = Harness::new(config(&[]));
    (h.username, h.password) = rest_credentials(SECRET, T0_UNIX + 100, "alice");
    h.allocate();
    h.advance(101);
    let r = h.authed(REFRESH, &[Attr::Lifetime(600)]);
    let code = r.error.unwrap().0;
    // The nonce is still fresh, so the refusal is the credential: 401.
    assert_eq!(code, 401);
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let mut h = Harness::new(config(&[]));
    h.allocate();
    h.advance(599);
    assert!(h.authed(REFRESH, &[]).success, "nonce still fresh at 599 s");
    h.advance(2);
    let tid = h.tids.next_id();
    let r = h.exchange(&client::request(REFRESH, tid, &[], h.auth.as_ref()));
    assert_eq!(r.error.as_ref().unwrap().0, 438);
    let fresh = r.nonce.unwrap();
    assert_ne!(Some(&fresh), h.auth.as_ref().map(|a| &a.nonce));
    h.auth.as_mut().unwrap().nonce = fresh;
    let tid = h.tids.next_id();
    let r = h.exchange(&client::request(REFRESH, tid, &[], h.auth.as_ref()));
    assert!(r.success, "{:?}", r.error);
}

#[test]
fn default_policy_denies_loopback_peers_with_403() {
    let mut h = Harness::new(config(&[]));
    h.allocate();
    let r = h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(peer())]);
    assert_eq!(r.error.unwrap().0, 403);
    let r = h.authed(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4000), Attr::PeerAddress(peer())],
    );
    assert_eq!(r.error.unwrap().0, 403);
    for meta in ["169.254.169.254:80", "0.0.0.0:80", "[::ffff:127.0.0.1]:80"] {
        let r = h.authed(
            CREATE_PERMISSION,
            &[Attr::PeerAddress(meta.parse().unwrap())],
        );
        assert!(matches!(r.error.unwrap().0, 403 | 443), "{meta}");
    }
}

#[test]
fn channel_data_flows_both_ways_with_an_allowed_peer() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    let relay = h.allocate();
    let r = h.bind_channel(0x4001);
    assert_eq!(r.integrity_ok, Some(true));
    let frame = client::channel_data(0x4001, b"hello", false);
    let fwd = h
        .server
        .handle_client_input(&frame, h.client, h.now)
        .forward()
        .expect("forwarded");
    assert_eq!(fwd.peer.0, peer());
    assert_eq!(fwd.relay.0, relay);
    assert_eq!(&frame[fwd.range], b"hello");
    let back = h
        .peer_packet(relay, peer(), b"world")
        .expect("relayed to client");
    assert_eq!(back, client::channel_data(0x4001, b"world", false));
    // An unknown peer without permission is dropped.
    assert!(h
        .peer_packet(relay, "127.0.0.2:9".parse().unwrap(), b"x")
        .is_none());
}

#[test]
fn send_and_data_indications_without_a_channel() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    let relay = h.allocate();
    let tid = h.tids.next_id();
    let send = client::send_indication(tid, peer(), b"abc");
    // No permission yet: dropped.
    assert!(h.server.handle_client_input(&send, h.client, h.now) == ClientInput::Dropped);
    let r = h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(peer())]);
    assert!(r.success);
    let fwd = h
        .server
        .handle_client_input(&send, h.client, h.now)
        .forward()
        .expect("forwarded");
    assert_eq!(&send[fwd.range], b"abc");
    let back = h.peer_packet(relay, peer(), b"hello").unwrap();
    let ind = client::parse(&back, None).unwrap();
    assert!(ind.is_indication);
    assert_eq!(ind.peer, Some(peer()));
    assert_eq!(ind.data.as_deref(), Some(&b"hello"[..]));
}

#[test]
fn permissions_channels_and_allocations_expire_and_refresh_keeps_them() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    let relay = h.allocate();
    h.bind_channel(0x4000);
    // Permission lasts 300 s.
    h.advance(299);
    assert!(h.peer_packet(relay, peer(), b"a").is_some());
    h.advance(2);
    assert!(
        h.peer_packet(relay, peer(), b"a").is_none(),
        "permission expired at 300 s"
    );
    // Re-binding refreshes both channel and permission.
    h.bind_channel(0x4000);
    assert!(h.peer_packet(relay, peer(), b"a").is_some());
    // Refresh keeps the allocation past its 600 s.
    let r = h.authed(REFRESH, &[Attr::Lifetime(600)]);
    assert!(r.success);
    h.advance(500);
    assert_eq!(h.server.allocation_count(), 1);
    // Channel (bound at t=301 for 600 s) still live at t=801 only if its permission was
    // refreshed; keep it alive with CreatePermission, then let the channel lapse.
    assert!(
        h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(peer())])
            .success
    );
    assert!(h.authed(REFRESH, &[Attr::Lifetime(600)]).success);
    h.advance(150); // t = 951: channel bound at 301 expired at 901
    let out = h.peer_packet(relay, peer(), b"z").unwrap();
    assert!(
        client::parse(&out, None).unwrap().is_indication,
        "expired channel: Data indication"
    );
    // Without refresh the allocation dies 600 s after the last refresh (t=801+600).
    h.advance(3600);
    assert_eq!(h.server.allocation_count(), 0);
    h.run_commands(true);
    assert!(h
        .seen
        .iter()
        .any(|c| matches!(c, Command::CloseRelay { v4: Some(a), .. } if *a == relay)));
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::AllocationDeleted { .. })));
}

#[test]
fn refresh_with_lifetime_zero_deletes() {
    let mut h = Harness::new(config(&[]));
    h.allocate();
    let r = h.authed(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success);
    assert_eq!(r.lifetime, Some(0));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h
        .seen
        .iter()
        .any(|c| matches!(c, Command::CloseRelay { .. })));
    let r = h.authed(REFRESH, &[]);
    assert_eq!(r.error.unwrap().0, 437);
}

#[test]
fn lifetimes_are_clamped_to_default_and_max() {
    let mut h = Harness::new(config(&[]));
    h.allocate();
    assert_eq!(h.authed(REFRESH, &[Attr::Lifetime(10)]).lifetime, Some(600));
    assert_eq!(
        h.authed(REFRESH, &[Attr::Lifetime(100_000)]).lifetime,
        Some(3600)
    );
    assert_eq!(
        h.authed(REFRESH, &[Attr::Lifetime(1200)]).lifetime,
        Some(1200)
    );
}

#[test]
fn error_codes_where_they_apply() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    // 420 with UNKNOWN-ATTRIBUTES
    let r = h.authed(
        ALLOCATE,
        &[Attr::RequestedTransportUdp, Attr::Raw(0x0031, b"abcd")],
    );
    assert_eq!(r.error.unwrap().0, 420);
    assert_eq!(r.unknown_attributes, vec![0x0031]);
    // 400 without REQUESTED-TRANSPORT
    assert_eq!(h.authed(ALLOCATE, &[]).error.unwrap().0, 400);
    // 442 for TCP
    assert_eq!(
        h.authed(ALLOCATE, &[Attr::Raw(0x0019, &[6, 0, 0, 0])])
            .error
            .unwrap()
            .0,
        442
    );
    // 440 for IPv6 when the relay has none
    let r = h.authed(
        ALLOCATE,
        &[
            Attr::RequestedTransportUdp,
            Attr::Raw(0x0017, &[2, 0, 0, 0]),
        ],
    );
    assert_eq!(r.error.unwrap().0, 440);
    // 437 before an allocation exists
    assert_eq!(
        h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(peer())])
            .error
            .unwrap()
            .0,
        437
    );
    h.allocate();
    // 443: an IPv6 peer on an IPv4 allocation
    let r = h.authed(
        CREATE_PERMISSION,
        &[Attr::PeerAddress("[2001:db8::1]:5".parse().unwrap())],
    );
    assert_eq!(r.error.unwrap().0, 443);
    // 400: bad channel numbers, rebinding a number to another peer
    let r = h.authed(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x3FFF), Attr::PeerAddress(peer())],
    );
    assert_eq!(r.error.unwrap().0, 400);
    h.bind_channel(0x4000);
    let r = h.authed(
        CHANNEL_BIND,
        &[
            Attr::ChannelNumber(0x4000),
            Attr::PeerAddress("127.0.0.1:9".parse().unwrap()),
        ],
    );
    assert_eq!(r.error.unwrap().0, 400);
    let r = h.authed(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4001), Attr::PeerAddress(peer())],
    );
    assert_eq!(r.error.unwrap().0, 400);
    // 441: same 5-tuple, another username
    let (other, pw) = rest_credentials(SECRET, T0_UNIX + 86_400, "mallory");
    let a = h.auth.clone().unwrap();
    h.auth = Some(ClientAuth::new(&other, &pw, &a.realm, &a.nonce));
    assert_eq!(h.authed(REFRESH, &[]).error.unwrap().0, 441);
}

#[test]
fn quota_and_capacity_answer_486_and_508() {
    let mut h = Harness::new(config(&[]));
    for i in 0..3 {
        h.move_to(30000 + i);
        h.allocate();
    }
    h.move_to(30010);
    assert_eq!(
        h.authed(ALLOCATE, &[Attr::RequestedTransportUdp])
            .error
            .unwrap()
            .0,
        486
    );
    // Other users fill the remaining 7 ports, then 508.
    for i in 0..7u16 {
        (h.username, h.password) = rest_credentials(SECRET, T0_UNIX + 86_400, &format!("user{i}"));
        h.move_to(31000 + i);
        h.allocate();
    }
    (h.username, h.password) = rest_credentials(SECRET, T0_UNIX + 86_400, "late");
    h.move_to(32000);
    assert_eq!(
        h.authed(ALLOCATE, &[Attr::RequestedTransportUdp])
            .error
            .unwrap()
            .0,
        508
    );
}

#[test]
fn a_failed_relay_bind_retries_another_port_then_gives_508() {
    let mut h = Harness::new(config(&[]));
    let _ = h.authed(BINDING, &[]); // get a nonce
    let tid = h.tids.next_id();
    let req = client::request(
        ALLOCATE,
        tid,
        &[Attr::RequestedTransportUdp],
        h.auth.as_ref(),
    );
    assert!(h.server.handle_client_input(&req, h.client, h.now) == ClientInput::Handled);
    let cmds = h.run_commands(false);
    assert_eq!(cmds.len(), 5, "first try plus four retries");
    let r = client::parse(&h.server.poll_transmit().unwrap().data, None).unwrap();
    assert_eq!(r.error.unwrap().0, 508);
    assert_eq!(h.server.allocation_count(), 0);
    // Ports and quota were given back: a later allocation works.
    h.allocate();
}

#[test]
fn draining_refuses_new_allocations_only() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    let relay = h.allocate();
    h.bind_channel(0x4000);
    h.server.set_draining(true);
    h.move_to(45000);
    assert_eq!(
        h.authed(ALLOCATE, &[Attr::RequestedTransportUdp])
            .error
            .unwrap()
            .0,
        508
    );
    h.client = client_addr(Transport::Udp, 40000);
    assert!(h.peer_packet(relay, peer(), b"still flowing").is_some());
}

#[test]
fn garbage_and_malformed_messages_are_dropped_silently() {
    let mut h = Harness::new(config(&[]));
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff",
        b"\x40\x00\x00\x10abc",
        &[0u8; 20],
    ] {
        assert!(h
            .server
            .handle_client_input(junk, h.client, h.now)
            .forward()
            .is_none());
    }
    // A request header with a broken attribute: 400.
    let tid = h.tids.next_id();
    let mut req = client::request(BINDING, tid, &[], None);
    req[3] += 4; // claims 4 more bytes
    req.extend_from_slice(&[0x80, 0x22, 0x00, 0x08]);
    assert!(h.server.handle_client_input(&req, h.client, h.now) == ClientInput::Handled);
    // Malformed: no answer at all (it would be a free reflection), but counted.
    assert!(h.server.poll_transmit().is_none());
    assert!(h.events().contains(&Event::MalformedDropped));
}

#[test]
fn even_port_with_reservation_then_allocate_with_the_token() {
    let mut h = Harness::new(config(&[]));
    let r = h.authed(
        ALLOCATE,
        &[Attr::RequestedTransportUdp, Attr::Raw(0x0018, &[0x80])],
    );
    assert!(r.success, "{:?}", r.error);
    let rtp = r.relayed[0].port();
    assert_eq!(rtp % 2, 0, "EVEN-PORT gives an even port");
    let token = r.reservation_token.expect("a RESERVATION-TOKEN");
    // A second client takes the reserved port with the token.
    h.move_to(41000);
    let r = h.authed(
        ALLOCATE,
        &[
            Attr::RequestedTransportUdp,
            Attr::Raw(0x0022, &token.to_be_bytes()),
        ],
    );
    assert!(r.success, "{:?}", r.error);
    assert_eq!(r.relayed[0].port(), rtp + 1);
    // The token is single use.
    h.move_to(41001);
    let r = h.authed(
        ALLOCATE,
        &[
            Attr::RequestedTransportUdp,
            Attr::Raw(0x0022, &token.to_be_bytes()),
        ],
    );
    assert_eq!(r.error.unwrap().0, 508);
    // RESERVATION-TOKEN with EVEN-PORT is a bad request.
    let r = h.authed(
        ALLOCATE,
        &[
            Attr::RequestedTransportUdp,
            Attr::Raw(0x0018, &[0]),
            Attr::Raw(0x0022, &[0; 8]),
        ],
    );
    assert_eq!(r.error.unwrap().0, 400);
}

#[test]
fn unused_reservations_expire_and_free_the_port() {
    let mut cfg = config(&[]);
    cfg.relay_ports = 50000..=50001;
    let mut h = Harness::new(cfg);
    let r = h.authed(
        ALLOCATE,
        &[Attr::RequestedTransportUdp, Attr::Raw(0x0018, &[0x80])],
    );
    assert!(r.success);
    h.move_to(41000);
    assert_eq!(
        h.authed(ALLOCATE, &[Attr::RequestedTransportUdp])
            .error
            .unwrap()
            .0,
        508,
        "held"
    );
    h.advance(31);
    assert!(
        h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]).success,
        "released after 30 s"
    );
}

#[test]
fn refusals_of_app_credentials_name_the_app() {
    let mut cfg = config(&[]);
    cfg.auth = AuthConfig {
        static_secret: None,
        app_keys: vec![cloudproxy_proto::AppKey {
            app_id: "app1".into(),
            key_id: "k1".into(),
            secret: b"app-secret".to_vec(),
            not_after: None,
        }],
    };
    let cases = [
        (
            "app1:k1:room:7",
            b"wrong".as_slice(),
            "Unauthorized: app 'app1': wrong password (forged credential or wrong secret)",
        ),
        (
            "app1:k9:room:7",
            b"app-secret".as_slice(),
            "Unauthorized: app 'app1': application has no key with this key id",
        ),
        (
            "app2:k1:room:7",
            b"app-secret".as_slice(),
            "Unauthorized: unknown app 'app2'",
        ),
    ];
    for (id, secret, want) in cases {
        let mut h = Harness::new(cfg.clone());
        (h.username, h.password) = rest_credentials(secret, T0_UNIX + 60, id);
        let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
        assert_eq!(r.error.unwrap(), (401, want.to_owned()), "{id}");
    }
    let mut h = Harness::new(cfg);
    (h.username, h.password) = rest_credentials(b"app-secret", T0_UNIX - 5, "app1:k1:room:7");
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(
        r.error.unwrap().1,
        "Unauthorized: app 'app1': credential expired"
    );
}

/// A static-pool relay governed by a control plane, with app1's key; the client uses
/// `transport` and a credential for channel `room`, user `7`.
fn governed(transport: Transport, access: &[(&str, AppAccess)]) -> Harness {
    let mut cfg = config(&["127.0.0.1/32"]);
    cfg.admission = Some(Pool::Static);
    cfg.auth = AuthConfig {
        static_secret: Some(SECRET.to_vec()),
        app_keys: vec![cloudproxy_proto::AppKey {
            app_id: "app1".into(),
            key_id: "k1".into(),
            secret: b"app-secret".to_vec(),
            not_after: None,
        }],
    };
    let mut h = Harness::new(cfg);
    h.client.transport = transport;
    (h.username, h.password) = rest_credentials(b"app-secret", T0_UNIX + 600, "app1:k1:room:7");
    let access: Access = access.iter().map(|(a, x)| (a.to_string(), *x)).collect();
    h.server.set_access(access);
    h
}

const TCP_ONLY: AppAccess = AppAccess {
    force_udp: false,
    force_tcp: true,
};

#[test]
fn admission_refuses_apps_not_enabled_for_the_mode_with_403() {
    // Enabled for Force TCP only: a UDP client (Force UDP) is refused, naming the mode.
    let mut h = governed(Transport::Udp, &[("app1", TCP_ONLY)]);
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(
        r.error.unwrap(),
        (403, cloudproxy_proto::admission::NOT_ENABLED_UDP.into())
    );
    assert!(!h.seen.iter().any(|c| matches!(c, Command::Admit { .. })));
    // Not in the table at all (suspended, deleted): 403 too.
    let mut h = governed(Transport::Tls, &[]);
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.unwrap().0, 403);
    // The operator's static secret is not an app's: no admission.
    let mut h = governed(Transport::Udp, &[]);
    (h.username, h.password) = rest_credentials(SECRET, T0_UNIX + 600, "ops");
    h.allocate();
}

#[test]
fn admission_waits_for_the_verdict_and_meters_the_allocation() {
    let mut h = governed(Transport::Tls, &[("app1", TCP_ONLY)]);
    h.verdict = Some(Verdict::Refused {
        code: 486,
        reason: "Allocation Quota Reached: channel 'room' is full".into(),
    });
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(
        r.error.unwrap(),
        (
            486,
            "Allocation Quota Reached: channel 'room' is full".into()
        )
    );
    let admit = h.seen.iter().find_map(|c| match c {
        Command::Admit { request, .. } => Some(request.clone()),
        _ => None,
    });
    let admit = admit.expect("an Admit command");
    assert_eq!(
        (
            admit.app_id.as_str(),
            admit.mode,
            admit.channel.as_str(),
            admit.user.as_str()
        ),
        ("app1", Mode::ForceTcp, "room", "7")
    );
    assert_eq!(h.server.allocation_count(), 0, "a refusal leaves nothing");
    assert!(!h
        .seen
        .iter()
        .any(|c| matches!(c, Command::BindRelay { .. })));

    // Granted: the relay socket is bound only now, and the allocation is metered.
    h.verdict = Some(Verdict::Granted { account: 42 });
    let relay = h.allocate();
    let r = h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(peer())]);
    assert!(r.success);
    assert!(h.peer_packet(relay, peer(), &[7u8; 100]).is_some());
    let mut usage = vec![];
    h.server.drain_usage(|a, b| usage.push((a, b)));
    assert_eq!(usage, [(42, 100)]);
    h.server
        .drain_usage(|_, _| panic!("counts reset after a drain"));
    assert!(h.peer_packet(relay, peer(), &[7u8; 30]).is_some());
    h.events();
    // Force TCP disabled at the next sync: the allocation ends, its account closes with the
    // bytes not yet drained.
    h.server.set_access(Access::new());
    assert_eq!(h.server.allocation_count(), 0);
    let events = h.events();
    assert!(
        events.contains(&Event::AccountClosed {
            account: 42,
            bytes: 30
        }),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: cloudproxy_proto::server::DeleteReason::Revoked,
            ..
        }
    )));
}

#[test]
fn a_verdict_for_an_allocation_that_expired_meanwhile_is_refused() {
    let mut h = governed(Transport::Tls, &[("app1", TCP_ONLY)]);
    // A first refused Allocate gets the client its nonce.
    h.verdict = Some(Verdict::Refused {
        code: 486,
        reason: "full".into(),
    });
    assert_eq!(
        h.authed(ALLOCATE, &[Attr::RequestedTransportUdp])
            .error
            .unwrap()
            .0,
        486
    );
    // The next one waits for a verdict that does not come in time.
    h.verdict = None;
    h.seen.clear();
    let tid = h.tids.next_id();
    let req = client::request(
        ALLOCATE,
        tid,
        &[Attr::RequestedTransportUdp],
        h.auth.as_ref(),
    );
    assert!(h.server.handle_client_input(&req, h.client, h.now) == ClientInput::Handled);
    h.run_commands(true);
    assert!(
        h.server.poll_transmit().is_none(),
        "no answer before the verdict"
    );
    let handle = h.seen.iter().find_map(|c| match c {
        Command::Admit { allocation, .. } => Some(*allocation),
        _ => None,
    });
    let handle = handle.expect("waiting for admission");
    h.advance(3600);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(!h
        .server
        .handle_admission(handle, Verdict::Granted { account: 1 }, h.now));
    assert!(h
        .events()
        .iter()
        .all(|e| !matches!(e, Event::AccountClosed { .. })));
}

#[test]
fn permissions_per_allocation_are_capped_with_508() {
    let mut h = Harness::new(config(&["0.0.0.0/0"]));
    h.allocate();
    for i in 0..cloudproxy_proto::grants::MAX_ENTRIES {
        let ip = std::net::Ipv4Addr::new(198, 51, (i / 250) as u8, (i % 250) as u8 + 1);
        let peer = SocketAddr::new(ip.into(), 1000 + i as u16);
        assert!(
            h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(peer)])
                .success,
            "{i}"
        );
    }
    let one_more = SocketAddr::from(([203, 0, 113, 1], 5000));
    let r = h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(one_more)]);
    assert_eq!(r.error.unwrap().0, 508);
    // Refreshing an existing one still works.
    let again = SocketAddr::from(([198, 51, 0, 1], 5000));
    assert!(
        h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(again)])
            .success
    );
}

#[test]
fn signal_requests_are_authenticated_then_handed_to_the_driver() {
    use cloudproxy_proto::server::{ATTR_SIGNAL_PATH, SIGNAL};
    let mut h = Harness::new(config(&[]));
    let path = b"/v1/allowlist/japan";
    // First the 401 dance (authed does it with an Allocate), then the signed request.
    let _ = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    let tid = h.tids.next_id();
    let req = client::request(
        SIGNAL,
        tid,
        &[Attr::Raw(ATTR_SIGNAL_PATH, path)],
        h.auth.as_ref(),
    );
    assert!(h.server.handle_client_input(&req, h.client, h.now) == ClientInput::Handled);
    assert!(h.server.poll_transmit().is_none(), "waits for the driver");
    let cmd = h.server.poll_command().expect("a Signal command");
    let Command::Signal { request, path: p } = cmd else {
        panic!("{cmd:?}")
    };
    assert_eq!(p, "/v1/allowlist/japan");
    h.server
        .handle_signal_response(request, 200, b"{\"rows\":[]}");
    let t = h.server.poll_transmit().unwrap();
    let r = client::parse(&t.data, h.auth.as_ref().map(|a| &a.key)).unwrap();
    assert!(r.success, "{r:?}");
    assert_eq!(r.integrity_ok, Some(true));
    assert_eq!(r.data.as_deref(), Some(b"{\"rows\":[]}".as_slice()));
    // A second answer for the same handle is ignored; errors carry the status.
    h.server.handle_signal_response(request, 200, b"again");
    assert!(h.server.poll_transmit().is_none());
    let tid = h.tids.next_id();
    let req = client::request(
        SIGNAL,
        tid,
        &[Attr::Raw(ATTR_SIGNAL_PATH, path)],
        h.auth.as_ref(),
    );
    h.server
        .handle_client_input(&req, h.client, h.now)
        .forward();
    let Some(Command::Signal { request, .. }) = h.server.poll_command() else {
        panic!()
    };
    h.server
        .handle_signal_response(request, 404, b"Not Found: region 'mars'");
    let t = h.server.poll_transmit().unwrap();
    let r = client::parse(&t.data, h.auth.as_ref().map(|a| &a.key)).unwrap();
    assert_eq!(r.error, Some((404, "Not Found: region 'mars'".into())));
    // Unsigned: challenged, nothing handed on.
    let tid = h.tids.next_id();
    let req = client::request(SIGNAL, tid, &[Attr::Raw(ATTR_SIGNAL_PATH, path)], None);
    h.server
        .handle_client_input(&req, h.client, h.now)
        .forward();
    assert!(h.server.poll_command().is_none());
    let t = h.server.poll_transmit().unwrap();
    assert_eq!(client::parse(&t.data, None).unwrap().error.unwrap().0, 401);
}

#[test]
fn a_reconfigured_policy_ends_relaying_to_denied_peers_but_keeps_the_allocation() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    let relay = h.allocate();
    h.bind_channel(0x4001);
    let frame = client::channel_data(0x4001, b"hello", false);
    assert!(h
        .server
        .handle_client_input(&frame, h.client, h.now)
        .forward()
        .is_some());

    // The operator narrows the policy: nothing flows either way, the allocation stays.
    let auth = config(&[]).auth;
    let narrowed = PeerPolicy::new(["10.0.0.0/8".parse::<PeerRule>().unwrap()]);
    assert_eq!(h.server.reconfigure(&auth, narrowed, 100, 3, h.now), 2);
    assert!(h.server.handle_client_input(&frame, h.client, h.now) == ClientInput::Dropped);
    assert!(h.peer_packet(relay, peer(), b"world").is_none());
    assert_eq!(h.server.allocation_count(), 1);
    let r = h.authed(REFRESH, &[Attr::Lifetime(600)]);
    assert!(r.success, "{:?}", r.error);
    // The channel number stays reserved to its peer (RFC 8656 §12): rebinding it to the same
    // peer is a refresh, which the narrowed policy refuses.
    let r = h.authed(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4001), Attr::PeerAddress(peer())],
    );
    assert_eq!(r.error.map(|e| e.0), Some(403));

    // Widened again: a refresh of the binding brings the flow back.
    let widened = PeerPolicy::new(["127.0.0.0/8".parse::<PeerRule>().unwrap()]);
    assert_eq!(h.server.reconfigure(&auth, widened, 100, 3, h.now), 0);
    h.bind_channel(0x4001);
    assert!(h
        .server
        .handle_client_input(&frame, h.client, h.now)
        .forward()
        .is_some());
}

#[test]
fn a_reconfigured_secret_authenticates_new_credentials_only() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    h.allocate();
    let auth = static_secret(b"rotated");
    h.server
        .reconfigure(&auth, config(&["127.0.0.0/8"]).peer_policy, 100, 3, h.now);
    assert_eq!(h.server.allocation_count(), 1, "no allocation ends");
    // The old credential no longer authenticates a new allocation elsewhere.
    h.move_to(40001);
    let r = h.authed(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.map(|e| e.0), Some(401));
    h.move_to(40002);
    h.password = rest_password(b"rotated", &h.username);
    h.allocate();
}

/// The bytes of the one answer to `req` from a fresh address, if any.
fn answer(h: &mut Harness, req: &[u8]) -> Option<Vec<u8>> {
    h.move_to(41000 + (h.tids.last % 1000) as u16);
    assert!(h.server.handle_client_input(req, h.client, h.now) == ClientInput::Handled);
    h.run_commands(true);
    let t = h.server.poll_transmit();
    assert!(h.server.poll_transmit().is_none());
    t.map(|t| t.data)
}

/// A request with `attrs` raw (type, value) attributes appended, lengths fixed up.
fn raw_request(
    method: stun_types::message::Method,
    tid: TransactionId,
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    // The header alone (client::request adds a FINGERPRINT).
    let mut req = client::request(method, tid, &[], None)[..20].to_vec();
    for (t, v) in attrs {
        req.extend_from_slice(&t.to_be_bytes());
        req.extend_from_slice(&(v.len() as u16).to_be_bytes());
        req.extend_from_slice(v);
        req.resize(req.len().div_ceil(4) * 4, 0);
    }
    let len = (req.len() - 20) as u16;
    req[2..4].copy_from_slice(&len.to_be_bytes());
    req
}

#[test]
fn no_unauthenticated_answer_is_more_than_four_times_its_request() {
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    // A bare 20-byte Allocate: the 401 drops the optional password-algorithms offer to fit.
    let tid = h.tids.next_id();
    let bare = raw_request(ALLOCATE, tid, &[]);
    assert_eq!(bare.len(), 20);
    let a = answer(&mut h, &bare).expect("challenged");
    let r = client::parse(&a, None).unwrap();
    assert_eq!(r.error.as_ref().unwrap().0, 401);
    assert!(r.realm.is_some() && r.nonce.is_some());
    assert!(a.len() <= 4 * bare.len(), "401: {} bytes for 20", a.len());

    // A real client's first Allocate (REQUESTED-TRANSPORT): the offer fits, and the answer
    // still authenticates end to end.
    let tid = h.tids.next_id();
    let first = client::request(ALLOCATE, tid, &[Attr::RequestedTransportUdp], None);
    let a = answer(&mut h, &first).expect("challenged");
    let r = client::parse(&a, None).unwrap();
    assert!(r.nonce.as_deref().unwrap().starts_with("obMatJos2"));
    assert!(
        a.len() <= 4 * first.len(),
        "401: {} bytes for {}",
        a.len(),
        first.len()
    );
    h.auth = None;
    h.allocate();

    // A Binding gets its mapped address, small.
    let tid = h.tids.next_id();
    let binding = client::request(BINDING, tid, &[], None);
    let a = answer(&mut h, &binding).expect("a Binding answer");
    assert!(a.len() <= 4 * binding.len(), "Binding: {} bytes", a.len());

    // 1,000 unknown comprehension-required attributes, the same one and all different:
    // each listed once, at most 16, within 4x.
    for distinct in [false, true] {
        let values: Vec<(u16, &[u8])> = (0..1000u16)
            .map(|i| (if distinct { 0x4000 + i } else { 0x4000 }, &b""[..]))
            .collect();
        let tid = h.tids.next_id();
        let req = raw_request(ALLOCATE, tid, &values);
        let a = answer(&mut h, &req).expect("a 420");
        let r = client::parse(&a, None).unwrap();
        assert_eq!(r.error.as_ref().unwrap().0, 420);
        assert!(
            a.len() <= 4 * req.len(),
            "420: {} bytes for {}",
            a.len(),
            req.len()
        );
        let listed = (a.len() - 20 - 8 - "Unknown Attribute".len().div_ceil(4) * 4 - 4) / 2;
        assert!(listed <= if distinct { 16 } else { 2 }, "{listed} listed");
    }
    // The smallest request with one unknown attribute also fits.
    let tid = h.tids.next_id();
    let req = raw_request(ALLOCATE, tid, &[(0x4000, b"")]);
    let a = answer(&mut h, &req).expect("a 420");
    assert!(
        a.len() <= 4 * req.len(),
        "420: {} bytes for {}",
        a.len(),
        req.len()
    );
}

#[test]
fn an_answer_that_would_amplify_is_not_sent() {
    // A realm so long that even the smallest 401 is more than 4x a bare Allocate.
    let mut cfg = config(&["127.0.0.0/8"]);
    cfg.realm = "r".repeat(100);
    let mut h = Harness::new(cfg);
    let tid = h.tids.next_id();
    let bare = raw_request(ALLOCATE, tid, &[]);
    assert!(answer(&mut h, &bare).is_none());
    assert!(h.events().contains(&Event::ReflectionSuppressed));
    // A larger request earns its (larger) challenge.
    let tid = h.tids.next_id();
    let first = client::request(
        ALLOCATE,
        tid,
        &[
            Attr::RequestedTransportUdp,
            Attr::Lifetime(600),
            Attr::Lifetime(600),
        ],
        None,
    );
    let a = answer(&mut h, &first).expect("challenged");
    assert_eq!(client::parse(&a, None).unwrap().error.unwrap().0, 401);
    assert!(a.len() <= 4 * first.len());
}

/// The channel events a kernel fast path follows: usable (with until when) on every bind and
/// permission refresh, ended on reservation end, policy stop and allocation end; none unless
/// asked for.
#[test]
fn channel_events_follow_each_binding_from_bind_to_end() {
    let channel_events = |h: &mut Harness| -> Vec<Event> {
        h.events()
            .into_iter()
            .filter(|e| matches!(e, Event::ChannelUsable { .. } | Event::ChannelEnded { .. }))
            .collect()
    };
    // Off by default: nothing.
    let mut h = Harness::new(config(&["127.0.0.0/8"]));
    h.allocate();
    let bind = [Attr::ChannelNumber(0x4000), Attr::PeerAddress(peer())];
    assert!(h.authed(CHANNEL_BIND, &bind).success);
    assert!(channel_events(&mut h).is_empty());

    let mut cfg = config(&["127.0.0.0/8"]);
    cfg.channel_events = true;
    let lifetimes = cfg.lifetimes;
    let mut h = Harness::new(cfg);
    let relay = h.allocate();
    let _ = channel_events(&mut h);
    let bound_at = h.now;
    assert!(h.authed(CHANNEL_BIND, &bind).success);
    // Usable until the permission's end (300 s), which comes before the binding's (600 s).
    let usable = |until| Event::ChannelUsable {
        channel: BoundChannel {
            client: h_client(),
            relay: RelayAddr(relay),
            peer: PeerAddr(peer()),
            number: 0x4000,
        },
        until,
        account: None,
    };
    assert_eq!(
        channel_events(&mut h),
        vec![usable(bound_at + lifetimes.permission)]
    );
    // A CreatePermission 100 s later extends it.
    h.advance(100);
    let r = h.authed(CREATE_PERMISSION, &[Attr::PeerAddress(peer())]);
    assert!(r.success);
    assert_eq!(
        channel_events(&mut h),
        vec![usable(h.now + lifetimes.permission)]
    );
    // A ChannelBind refresh 400 s in: until the permission again (it is now the earlier).
    h.advance(300);
    assert!(h.authed(CHANNEL_BIND, &bind).success);
    let refreshed_at = h.now;
    assert_eq!(
        channel_events(&mut h),
        vec![usable(refreshed_at + lifetimes.permission)]
    );
    let ended = Event::ChannelEnded {
        channel: BoundChannel {
            client: h_client(),
            relay: RelayAddr(relay),
            peer: PeerAddr(peer()),
            number: 0x4000,
        },
        account: None,
    };
    // The allocation ends (Refresh 0): the binding ends, before the allocation does.
    let r = h.authed(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success);
    let events = h.events();
    let ended_at = events
        .iter()
        .position(|e| *e == ended)
        .expect("ChannelEnded");
    let deleted_at = events
        .iter()
        .position(|e| matches!(e, Event::AllocationDeleted { .. }))
        .expect("AllocationDeleted");
    assert!(ended_at < deleted_at, "{events:?}");

    // Reservation over (binding 600 s + 300 s cooldown, no refresh): ended.
    let relay = {
        h.move_to(45001);
        h.allocate()
    };
    assert!(h.authed(CHANNEL_BIND, &bind).success);
    let _ = channel_events(&mut h);
    // The allocation is kept alive past the binding's reservation.
    h.advance(500);
    assert!(h.authed(REFRESH, &[Attr::Lifetime(600)]).success);
    assert!(
        channel_events(&mut h).is_empty(),
        "a Refresh moves no binding"
    );
    h.advance(lifetimes.channel.as_secs() + lifetimes.channel_cooldown.as_secs() + 1 - 500);
    assert_eq!(h.server.allocation_count(), 1);
    let ended_here = |relay| Event::ChannelEnded {
        channel: BoundChannel {
            client: client_addr(Transport::Udp, 45001),
            relay: RelayAddr(relay),
            peer: PeerAddr(peer()),
            number: 0x4000,
        },
        account: None,
    };
    let ev = channel_events(&mut h);
    assert_eq!(ev, vec![ended_here(relay)], "{ev:?}");

    // The operator narrows the peer policy: a live binding ends at once.
    h.move_to(45002);
    let relay = h.allocate();
    assert!(h.authed(CHANNEL_BIND, &bind).success);
    let _ = channel_events(&mut h);
    let auth = config(&[]).auth;
    let narrowed = PeerPolicy::new(["10.0.0.0/8".parse::<PeerRule>().unwrap()]);
    h.server.reconfigure(&auth, narrowed, 100, 3, h.now);
    let ev = channel_events(&mut h);
    assert_eq!(
        ev,
        vec![Event::ChannelEnded {
            channel: BoundChannel {
                client: client_addr(Transport::Udp, 45002),
                relay: RelayAddr(relay),
                peer: PeerAddr(peer()),
                number: 0x4000,
            },
            account: None,
        }],
        "{ev:?}"
    );
}

fn h_client() -> ClientAddr {
    client_addr(Transport::Udp, 40000)
}
