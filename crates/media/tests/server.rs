//! The sans-IO server on a virtual clock: joining, forwarding, echo, keepalive and timeout,
//! leave, re-join, limits, refusals with the right app id, garbage; the JOIN challenge (return
//! routability), one member per (channel, uid), and the JOIN rate limits.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_media::wire::{decode, Cookie, ErrorCode, Packet, CHALLENGE_LEN, HEADROOM};
use cloudproxy_media::{Endpoint, JoinRate, Limits, MediaServer, Transmit};
use cloudproxy_proto::{AppKey, AuthConfig};
use cloudproxy_testkit::apps::App;
use proptest::prelude::*;

mod common;

use common::{APP, APP2};

const T0: u64 = 1_700_000_000;

/// Tokens here expire an hour after the virtual clock's start.
const EXPIRY: u64 = T0 + 3600;

fn auth() -> AuthConfig {
    AuthConfig {
        static_secret: Some(b"static".to_vec()),
        app_keys: vec![
            APP.key(),
            AppKey {
                not_after: Some(T0 + 5),
                ..RETIRED.key()
            },
            APP2.key(),
        ],
    }
}

/// `app1`'s retired key, which expires five seconds after the clock's start.
const RETIRED: App = App {
    key_id: "old",
    secret: b"secret0",
    ..APP
};

fn good(channel: &str, uid: u32) -> String {
    APP.token_until(channel, uid, EXPIRY)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

const LOCAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);

struct Harness {
    server: MediaServer,
    now: Instant,
}

/// What the server sent in reply to one datagram: `(to, bytes)`.
type Sent = Vec<(SocketAddr, Vec<u8>)>;

impl Harness {
    fn new(limits: Limits) -> Self {
        let now = Instant::now();
        Self {
            server: MediaServer::new(&auth(), limits, now, T0, &mut rng()),
            now,
        }
    }

    /// A server whose JOIN rates never bind: for tests of everything else that join in loops.
    fn unlimited(limits: Limits) -> Self {
        let unlimited = JoinRate {
            burst: u32::MAX,
            interval: Duration::from_millis(1),
        };
        Self::new(Limits {
            joins_per_source: unlimited,
            joins_per_token: unlimited,
            ..limits
        })
    }

    fn raw(&mut self, from: SocketAddr, bytes: &[u8]) -> Sent {
        let mut buf = vec![0u8; HEADROOM];
        buf.extend_from_slice(bytes);
        let mut sent = Vec::new();
        self.server
            .handle(&mut buf, LOCAL, from, self.now, &mut |t: Transmit<'_>| {
                let Endpoint::Udp { remote, local } = t.to else {
                    panic!("no browser member here: {:?}", t.to);
                };
                assert_eq!(local, LOCAL);
                sent.push((remote, t.bytes.to_vec()));
            });
        sent
    }

    fn send(&mut self, from: SocketAddr, p: Packet<'_>) -> Sent {
        let mut v = Vec::new();
        p.encode_vec(&mut v).unwrap();
        self.raw(from, &v)
    }

    /// One JOIN, as sent.
    fn join_once(
        &mut self,
        from: SocketAddr,
        token: &str,
        echo: bool,
        cookie: Option<Cookie>,
    ) -> Sent {
        self.send(
            from,
            Packet::Join {
                echo,
                token,
                cookie,
            },
        )
    }

    /// A whole join as a client does it: JOIN, and if a CHALLENGE comes back, JOIN with its
    /// cookie. The reply to the last JOIN.
    fn join(&mut self, from: SocketAddr, token: &str, echo: bool) -> Sent {
        let sent = self.join_once(from, token, echo, None);
        match challenge(&sent) {
            Some(c) => self.join_once(from, token, echo, Some(c)),
            None => sent,
        }
    }

    fn data(&mut self, from: SocketAddr, seq: u32, payload: &[u8]) -> Sent {
        self.send(
            from,
            Packet::Data {
                seq,
                sent_micros: 99,
                payload,
            },
        )
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
    }
}

fn rng() -> rand::rngs::StdRng {
    rand::SeedableRng::seed_from_u64(15)
}

/// The cookie, if the one reply is a CHALLENGE.
fn challenge(sent: &Sent) -> Option<Cookie> {
    match sent.as_slice() {
        [(_, bytes)] => match decode(bytes) {
            Ok(Packet::Challenge(c)) => Some(c),
            _ => None,
        },
        _ => None,
    }
}

/// The one reply, decoded.
fn only(sent: &Sent) -> (SocketAddr, Packet<'_>) {
    assert_eq!(sent.len(), 1, "{sent:?}");
    (sent[0].0, decode(&sent[0].1).unwrap())
}

fn error(sent: &Sent) -> (ErrorCode, bool, String, String) {
    match only(sent).1 {
        Packet::Error {
            code,
            retryable,
            app_id,
            message,
        } => (code, retryable, app_id.into(), message.into()),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[test]
fn members_receive_each_others_data() {
    let mut h = Harness::new(Limits::default());
    let (a, b, c) = (addr(1), addr(2), addr(3));
    let sent = h.join(a, &good("room", 10), false);
    assert_eq!(
        only(&sent),
        (
            a,
            Packet::Joined {
                uid: 10,
                members: 1,
                addr: a
            }
        )
    );
    let sent = h.join(b, &good("room", 20), false);
    assert!(matches!(
        only(&sent).1,
        Packet::Joined {
            uid: 20,
            members: 2,
            ..
        }
    ));
    // Another channel of the same app, and the same channel name of another app.
    h.join(c, &good("other", 30), false);
    h.join(addr(4), &APP2.token_until("room", 40, EXPIRY), false);
    assert_eq!(h.server.channel_size("app1", "room"), 2);
    assert_eq!(h.server.stats().channels, 3);

    let sent = h.data(a, 1, b"hello");
    assert_eq!(
        only(&sent),
        (
            b,
            Packet::Forwarded {
                from_uid: 10,
                seq: 1,
                sent_micros: 99,
                payload: b"hello"
            }
        )
    );
    let sent = h.data(b, 7, b"");
    assert!(matches!(only(&sent), (to, Packet::Forwarded { from_uid: 20, seq: 7, .. }) if to == a));
    // Alone in its channel: nobody to send to.
    assert!(h.data(c, 1, b"x").is_empty());
    assert_eq!(h.server.stats().forwarded, 2);
}

#[test]
fn echo_sends_my_own_data_back() {
    let mut h = Harness::new(Limits::default());
    h.join(addr(1), &good("room", 1), true);
    h.join(addr(2), &good("room", 2), false);
    let mut to: Vec<SocketAddr> = h.data(addr(1), 1, b"x").into_iter().map(|s| s.0).collect();
    to.sort();
    assert_eq!(to, [addr(1), addr(2)]);
    assert_eq!(h.data(addr(2), 1, b"x").len(), 1);
    // Re-joining the same channel without echo turns it off.
    h.join(addr(1), &good("room", 1), false);
    assert_eq!(h.data(addr(1), 2, b"x").len(), 1);
}

#[test]
fn data_or_ping_before_join_is_404_and_never_amplified() {
    let mut h = Harness::new(Limits::default());
    let sent = h.data(addr(1), 1, &[0; 40]);
    let (code, retryable, app, msg) = error(&sent);
    assert_eq!(
        (code, retryable, app.as_str()),
        (ErrorCode::NOT_JOINED, true, "")
    );
    assert_eq!(msg, "not joined");
    // PING is 9 bytes: the ERROR stays within 3 times that.
    let sent = h.send(addr(1), Packet::Ping(5));
    assert!(sent[0].1.len() <= 27);
    assert_eq!(error(&sent).3, "not joined");
    assert_eq!(error(&sent).0, ErrorCode::NOT_JOINED);
    // LEAVE from a stranger: LEFT (1 byte), idempotent.
    assert_eq!(only(&h.send(addr(1), Packet::Leave)).1, Packet::Left);
}

#[test]
fn ping_answers_pong_and_keeps_a_member_in() {
    let mut h = Harness::new(Limits::default());
    h.join(addr(1), &good("room", 1), false);
    h.join(addr(2), &good("room", 2), false);
    for _ in 0..4 {
        h.advance(Duration::from_secs(10));
        assert_eq!(only(&h.send(addr(1), Packet::Ping(3))).1, Packet::Pong(3));
        h.data(addr(2), 1, b"keepalive by data");
    }
    assert_eq!(h.server.stats().members, 2);
    // addr(2) goes silent; addr(1) keeps pinging.
    h.advance(Duration::from_secs(10));
    h.send(addr(1), Packet::Ping(3));
    h.advance(Duration::from_secs(6));
    assert!(h.server.is_member(addr(1)));
    assert!(!h.server.is_member(addr(2)));
    assert_eq!(h.server.stats().timeouts, 1);
    assert_eq!(
        error(&h.data(addr(2), 1, &[0; 40])).0,
        ErrorCode::NOT_JOINED
    );
    h.advance(Duration::from_secs(16));
    assert_eq!(h.server.stats().members, 0);
    assert_eq!(h.server.stats().channels, 0);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn leave_and_rejoin_elsewhere() {
    let mut h = Harness::unlimited(Limits::default());
    h.join(addr(1), &good("a", 1), false);
    h.join(addr(2), &good("a", 2), false);
    // Re-join into channel b: leaves a.
    h.join(addr(1), &good("b", 1), false);
    assert_eq!(h.server.channel_size("app1", "a"), 1);
    assert_eq!(h.server.channel_size("app1", "b"), 1);
    assert!(h.data(addr(2), 1, b"x").is_empty());
    assert_eq!(only(&h.send(addr(2), Packet::Leave)).1, Packet::Left);
    assert!(!h.server.is_member(addr(2)));
    assert_eq!(h.server.stats().channels, 1);
    // Many join/leave cycles do not pile up timers.
    for i in 0..1_000 {
        h.join(addr(3), &good("c", i), false);
        h.send(addr(3), Packet::Leave);
    }
    assert_eq!(h.server.stats().members, 1);
}

#[test]
fn bad_tokens_get_401_naming_the_app() {
    let mut h = Harness::new(Limits::default());
    let cases = [
        (
            App {
                secret: b"wrong",
                ..APP
            }
            .token_until("room", 1, EXPIRY),
            "app1",
            "wrong signature",
        ),
        (
            App {
                key_id: "k9",
                ..APP2
            }
            .token_until("room", 1, EXPIRY),
            "app2",
            "key id",
        ),
        (RETIRED.token_until("room", 1, EXPIRY), "", ""),
        (
            App {
                id: "ghost",
                key_id: "k1",
                secret: b"static",
            }
            .token_until("room", 1, EXPIRY),
            "ghost",
            "does not know",
        ),
        (
            APP2.token_until("room", 1, T0 - 1),
            "app2",
            "token for app 'app2' expired",
        ),
        (
            "not a token at all, just text".into(),
            "",
            "token is malformed",
        ),
    ];
    for (tok, app, text) in &cases {
        let sent = h.join(addr(1), tok, false);
        if app.is_empty() && text.is_empty() {
            // The old key is still in its grace period.
            assert!(matches!(only(&sent).1, Packet::Joined { .. }));
            h.send(addr(1), Packet::Leave);
            continue;
        }
        let (code, retryable, got_app, msg) = error(&sent);
        assert_eq!(code, ErrorCode::UNAUTHORIZED, "{tok}");
        assert!(!retryable);
        assert_eq!(got_app, *app, "{tok}: {msg}");
        assert!(msg.contains(text), "{tok}: {msg}");
    }
    // The virtual clock moves token and key expiry: after the grace period the old key fails.
    h.advance(Duration::from_secs(10));
    let (code, _, app, msg) = error(&h.join(addr(1), &cases[2].0, false));
    assert_eq!((code, app.as_str()), (ErrorCode::UNAUTHORIZED, "app1"));
    assert!(msg.contains("retired"), "{msg}");
    assert_eq!(h.server.stats().members, 0);
}

#[test]
fn limits_answer_503_and_leave_state_unchanged() {
    let mut h = Harness::new(Limits {
        max_channels: 2,
        max_members_per_channel: 2,
        max_members: 3,
        ..Limits::default()
    });
    h.join(addr(1), &good("a", 1), false);
    h.join(addr(2), &good("a", 2), false);
    let (code, retryable, app, msg) = error(&h.join(addr(3), &good("a", 3), false));
    assert_eq!(
        (code, retryable, app.as_str()),
        (ErrorCode::FULL, true, "app1")
    );
    assert_eq!(msg, "channel 'a' of app 'app1' is full (2 members)");
    h.join(addr(3), &good("b", 3), false);
    let (code, _, _, msg) = error(&h.join(addr(4), &good("c", 4), false));
    assert_eq!(
        (code, msg.as_str()),
        (ErrorCode::FULL, "service full (3 members)")
    );
    // A member may move to a new channel when its old one disappears with it...
    h.join(addr(3), &good("c", 3), false);
    assert_eq!(h.server.channel_size("app1", "c"), 1);
    // ...but not to a third channel while its old one stays.
    let (_, _, _, msg) = error(&h.join(addr(2), &good("d", 2), false));
    assert_eq!(msg, "service full (2 channels)");
    assert_eq!(h.server.channel_size("app1", "a"), 2);
    assert_eq!(h.server.stats().members, 3);
}

#[test]
fn garbage_is_dropped_or_answered_400() {
    let mut h = Harness::new(Limits::default());
    h.join(addr(1), &good("room", 1), false);
    h.join(addr(2), &good("room", 2), false);
    // Unknown types and service-to-client types: no reply.
    for bytes in [
        &[][..],
        &[0xff, 1, 2, 3],
        &[0x02, 0, 0],
        &[0x07; 9],
        &[0x09],
        &[0x16, 3, 1],
        &[0x0a; 17],
    ] {
        assert!(h.raw(addr(9), bytes).is_empty(), "{bytes:?}");
        assert!(h.raw(addr(1), bytes).is_empty(), "{bytes:?}");
    }
    // A malformed JOIN big enough for an answer: 400 saying what is wrong.
    let mut join = vec![1, 0, 0, 200];
    join.extend([b'x'; 40]);
    let (code, retryable, _, msg) = error(&h.raw(addr(9), &join));
    assert_eq!((code, retryable), (ErrorCode::MALFORMED, false));
    assert_eq!(msg, "malformed packet: datagram ends inside JOIN token");
    // Too small to answer without amplification: dropped.
    assert!(h.raw(addr(9), &[4, 0]).is_empty());
    let (_, _, _, msg) = error(&h.raw(addr(9), &[4, 0, 0, 0, 0, 0]));
    assert_eq!(msg, "malformed ");
    // Members are undisturbed.
    assert_eq!(h.data(addr(1), 1, b"still here").len(), 1);
}

#[test]
fn joined_reports_ipv4_mapped_sources_as_ipv4() {
    let mut h = Harness::new(Limits::default());
    let mapped: SocketAddr = "[::ffff:192.0.2.7]:5000".parse().unwrap();
    let sent = h.join(mapped, &good("room", 1), false);
    assert_eq!(sent[0].0, mapped);
    match only(&sent).1 {
        Packet::Joined { addr, .. } => assert_eq!(addr, "192.0.2.7:5000".parse().unwrap()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_join_becomes_a_member_only_by_echoing_its_cookie_from_the_same_address() {
    let mut h = Harness::new(Limits::default());
    let (me, victim) = (addr(1), addr(2));
    let tok = good("room", 1);
    let first = h.join_once(me, &tok, false, None);
    let cookie = challenge(&first).expect("a first JOIN is answered with a CHALLENGE");
    let (to, bytes) = &first[0];
    assert_eq!(*to, me);
    assert_eq!(bytes.len(), CHALLENGE_LEN);
    // No state: no member, no timer, no channel.
    let s = h.server.stats();
    assert_eq!((s.members, s.channels, s.joins, s.challenges), (0, 0, 0, 1));
    assert_eq!(h.server.poll_timeout(), None);

    // The cookie is bound to the address: echoed from elsewhere, a fresh CHALLENGE for that
    // address, and no membership.
    let elsewhere = h.join_once(victim, &tok, false, Some(cookie));
    assert_ne!(challenge(&elsewhere), None);
    assert_ne!(challenge(&elsewhere), Some(cookie));
    assert!(!h.server.is_member(victim));
    // ...and to the token: another uid's token with my cookie is challenged too.
    let other = h.join_once(me, &good("room", 2), false, Some(cookie));
    assert_ne!(challenge(&other), None);
    // A cookie of the right length but made up.
    assert_ne!(
        challenge(&h.join_once(me, &tok, false, Some([7; 16]))),
        None
    );
    assert_eq!(h.server.stats().bad_cookies, 3);
    assert_eq!(h.server.stats().members, 0);

    // Echoed from the address it was sent to: JOINED.
    let sent = h.join_once(me, &tok, false, Some(cookie));
    assert!(matches!(
        only(&sent).1,
        Packet::Joined {
            uid: 1,
            members: 1,
            ..
        }
    ));
    assert!(h.server.is_member(me));

    // A spoofed JOIN claiming the victim's address, with a valid token: the victim gets one
    // CHALLENGE (no larger than the JOIN), and no media.
    let spoofed = h.join_once(victim, &good("room", 3), false, None);
    assert_eq!(spoofed.len(), 1);
    assert_eq!(spoofed[0].0, victim);
    assert!(spoofed[0].1.len() <= 1 + 1 + 2 + good("room", 3).len());
    assert!(
        h.data(me, 1, b"media").is_empty(),
        "nobody else is a member"
    );
    assert!(!h.server.is_member(victim));
}

#[test]
fn a_cookie_verifies_in_its_time_slot_and_the_next_only() {
    let mut h = Harness::new(Limits::default());
    let tok = good("room", 1);
    // Slots are 10 s from the server's start: a cookie from t = 0 is good until t = 20 s.
    let cookie = challenge(&h.join_once(addr(1), &tok, false, None)).unwrap();
    h.advance(Duration::from_millis(19_900));
    let sent = h.join_once(addr(1), &tok, false, Some(cookie));
    assert!(matches!(only(&sent).1, Packet::Joined { .. }), "{sent:?}");
    h.send(addr(1), Packet::Leave);
    h.advance(Duration::from_millis(100));
    // t = 20 s: two slots on, stale. A fresh CHALLENGE, whose cookie works.
    let sent = h.join_once(addr(1), &tok, false, Some(cookie));
    let fresh = challenge(&sent).expect("a stale cookie earns a fresh CHALLENGE");
    assert!(!h.server.is_member(addr(1)));
    let sent = h.join_once(addr(1), &tok, false, Some(fresh));
    assert!(matches!(only(&sent).1, Packet::Joined { .. }));
}

#[test]
fn one_token_from_a_hundred_ports_holds_one_seat() {
    // Two seats per channel: before, a token took every seat it had ports for.
    let mut h = Harness::new(Limits {
        max_members_per_channel: 2,
        ..Limits::default()
    });
    let tok = good("room", 1);
    for port in 1..=100 {
        let sent = h.join(addr(port), &tok, false);
        assert!(
            matches!(
                only(&sent).1,
                Packet::Joined {
                    uid: 1,
                    members: 1,
                    ..
                }
            ),
            "port {port}: {sent:?}"
        );
        // Two JOINs per join, one join per 500 ms: within the per-token rate (10/s).
        h.advance(Duration::from_millis(500));
    }
    assert_eq!(h.server.channel_size("app1", "room"), 1);
    assert_eq!(h.server.stats().members, 1);
    assert_eq!(h.server.stats().replaced, 99);
    // The seat is the latest address's; the replaced ones get 404 and no media.
    assert!(h.server.is_member(addr(100)));
    assert_eq!(
        error(&h.data(addr(7), 1, &[0; 20])).0,
        ErrorCode::NOT_JOINED
    );
    // Another user still joins, and media goes between the two members only.
    let sent = h.join(addr(200), &good("room", 2), false);
    assert!(matches!(
        only(&sent).1,
        Packet::Joined {
            uid: 2,
            members: 2,
            ..
        }
    ));
    let to: Vec<SocketAddr> = h.data(addr(200), 1, b"x").iter().map(|s| s.0).collect();
    assert_eq!(to, [addr(100)]);
    // A replaced address that says LEAVE does not take the seat with it.
    h.send(addr(7), Packet::Leave);
    assert_eq!(h.server.channel_size("app1", "room"), 2);
    // The full channel still takes uid 1 from a new address (its own seat), not uid 3.
    assert!(matches!(
        only(&h.join(addr(300), &tok, false)).1,
        Packet::Joined { members: 2, .. }
    ));
    assert_eq!(
        error(&h.join(addr(301), &good("room", 3), false)).0,
        ErrorCode::FULL
    );
    assert_eq!(h.server.stats().members, 2);
}

#[test]
fn a_member_joining_with_another_uids_token_takes_that_uids_seat() {
    let mut h = Harness::new(Limits::default());
    h.join(addr(1), &good("room", 1), false);
    h.join(addr(2), &good("room", 2), false);
    // addr(1) re-joins the same channel as uid 2: addr(2) loses the seat of uid 2.
    assert!(matches!(
        only(&h.join(addr(1), &good("room", 2), false)).1,
        Packet::Joined {
            uid: 2,
            members: 1,
            ..
        }
    ));
    assert!(!h.server.is_member(addr(2)));
    // uid 1 is free again: addr(3) takes it without displacing addr(1).
    h.join(addr(3), &good("room", 1), false);
    assert_eq!(h.server.channel_size("app1", "room"), 2);
    assert_eq!(h.server.stats().replaced, 1);
}

#[test]
fn join_rates_per_source_and_per_token() {
    let mut h = Harness::new(Limits::default());
    // Per source: 10 JOINs at once, then one per 200 ms; over it, silence.
    let tok = good("room", 1);
    for i in 0..10 {
        assert!(challenge(&h.join_once(addr(1), &good("r", i), false, None)).is_some());
    }
    assert!(h.join_once(addr(1), &tok, false, None).is_empty());
    assert_eq!(h.server.stats().rate_limited, 1);
    // Another port of the same host has its own budget (relayed clients share the relay's IP).
    assert!(challenge(&h.join_once(addr(2), &tok, false, None)).is_some());
    h.advance(Duration::from_millis(200));
    assert!(challenge(&h.join_once(addr(1), &tok, false, None)).is_some());
    assert!(h.join_once(addr(1), &tok, false, None).is_empty());

    // Per token identity (app, channel, uid): 20 at once, from any sources, then 10/s.
    let busy = good("busy", 9);
    let mut answered = 0;
    for port in 100..130 {
        answered += usize::from(challenge(&h.join_once(addr(port), &busy, false, None)).is_some());
    }
    assert_eq!(answered, 20);
    // Another identity is unaffected, from the same sources.
    assert!(challenge(&h.join_once(addr(100), &good("busy", 10), false, None)).is_some());
    assert_eq!(h.server.stats().rate_limited, 2 + 10);
    h.advance(Duration::from_millis(100));
    assert!(challenge(&h.join_once(addr(130), &busy, false, None)).is_some());
    assert!(h.join_once(addr(131), &busy, false, None).is_empty());
    h.advance(Duration::from_secs(1));
    let sent = h.join(addr(140), &busy, false);
    assert!(matches!(only(&sent).1, Packet::Joined { uid: 9, .. }));
}

#[derive(Debug, Clone)]
enum Op {
    Join(u16, u8, bool),
    Data(u16, usize),
    Ping(u16),
    Leave(u16),
    Garbage(u16, Vec<u8>),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u16..8, 0u8..4, any::<bool>()).prop_map(|(a, c, e)| Op::Join(a, c, e)),
        (0u16..8, 0usize..64).prop_map(|(a, n)| Op::Data(a, n)),
        (0u16..8).prop_map(Op::Ping),
        (0u16..8).prop_map(Op::Leave),
        (0u16..8, proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(a, b)| Op::Garbage(a, b)),
        (0u64..20_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any sequence: no panic, replies to non-members never larger than the request, limits
    /// hold, forwarding reaches exactly the channel's other members.
    #[test]
    fn state_machine_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let limits = Limits { max_channels: 3, max_members_per_channel: 3, max_members: 6, ..Limits::default() };
        let mut h = Harness::new(limits);
        for op in ops {
            let (from, request, sent) = match op {
                Op::Join(a, c, echo) => {
                    // Both JOINs of the handshake, each checked as a request of its own.
                    let t = good(&format!("c{c}"), u32::from(a));
                    let mut v = Vec::new();
                    Packet::Join { echo, token: &t, cookie: None }.encode_vec(&mut v).unwrap();
                    let before = h.server.stats();
                    let sent = h.raw(addr(a), &v);
                    // A JOIN without a cookie changes nothing and gets at most a CHALLENGE (or
                    // a 401/503 within the amplification limit, checked below for the second).
                    prop_assert_eq!(h.server.stats().members, before.members);
                    prop_assert_eq!(h.server.stats().joins, before.joins);
                    for (_, b) in &sent {
                        prop_assert!(b.len() <= v.len());
                        prop_assert_eq!(b.len(), CHALLENGE_LEN);
                    }
                    match challenge(&sent) {
                        Some(cookie) => {
                            Packet::Join { echo, token: &t, cookie: Some(cookie) }.encode_vec(&mut v).unwrap();
                            (addr(a), v.clone(), h.raw(addr(a), &v))
                        }
                        None => (addr(a), v, sent),
                    }
                }
                Op::Data(a, n) => {
                    let mut v = Vec::new();
                    Packet::Data { seq: 1, sent_micros: 2, payload: &vec![7; n] }.encode_vec(&mut v).unwrap();
                    (addr(a), v.clone(), h.raw(addr(a), &v))
                }
                Op::Ping(a) => (addr(a), vec![6; 9], h.raw(addr(a), &[6; 9])),
                Op::Leave(a) => (addr(a), vec![8], h.raw(addr(a), &[8])),
                Op::Garbage(a, b) => (addr(a), b.clone(), h.raw(addr(a), &b)),
                Op::Advance(ms) => {
                    h.advance(Duration::from_millis(ms));
                    continue;
                }
            };
            let mut recipients: Vec<SocketAddr> = sent
                .iter()
                .filter(|(_, b)| b[0] == cloudproxy_media::wire::FORWARDED)
                .map(|(to, _)| *to)
                .collect();
            prop_assert!(recipients.len() <= 3);
            prop_assert!(recipients.iter().all(|r| h.server.is_member(*r)));
            recipients.sort();
            recipients.dedup();
            prop_assert_eq!(recipients.len(), sent.iter().filter(|(_, b)| b[0] == 5).count());
            for (to, bytes) in &sent {
                let reply = decode(bytes);
                prop_assert!(reply.is_ok(), "undecodable reply {bytes:?}");
                if !matches!(reply, Ok(Packet::Forwarded { .. })) {
                    prop_assert_eq!(*to, from);
                    if !matches!(reply, Ok(Packet::Error { .. })) {
                        prop_assert!(bytes.len() <= request.len());
                    }
                }
                if matches!(reply, Ok(Packet::Error { .. })) {
                    prop_assert!(bytes.len() <= 3 * request.len());
                }
            }
            let s = h.server.stats();
            prop_assert!(s.members <= 6 && s.channels <= 3);
            for c in 0..4 {
                let size = h.server.channel_size("app1", &format!("c{c}"));
                prop_assert!(size <= 3);
            }
        }
    }
}
