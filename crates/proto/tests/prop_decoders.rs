//! Property tests for every decoder that reads bytes or text an attacker or operator controls:
//! ChannelData framing, peer rules, TURN REST usernames, nonces, and stun-types' message parser.
//!
//! Two kinds of property: "never panics on arbitrary input" (the fuzzing half), and round trips
//! or exact answers on inputs the test builds itself (the half that can catch a wrong answer).
//!
//! The property test for the server state machine lives in `crates/proto/tests/server_prop.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cloudproxy_proto::auth::{rest_password, rest_username, Authenticator, NonceError, NonceKey};
use cloudproxy_proto::channel::{
    is_channel_data, parse_header, stream_frame_len, stream_padding, write_header, FrameError,
    MAX_CHANNEL, MIN_CHANNEL,
};
use cloudproxy_proto::policy::PeerRule;
use cloudproxy_proto::{AppKey, AuthConfig};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use stun_types::message::Message;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

// ---------------------------------------------------------------- ChannelData framing

fn channel_number() -> impl Strategy<Value = u16> {
    MIN_CHANNEL..=MAX_CHANNEL
}

/// A ChannelData frame as sent on a stream transport: header, data, padding to 4 bytes.
fn stream_channel_frame(number: u16, data: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; 4 + data.len() + stream_padding(data.len())];
    write_header(&mut frame, number, data.len() as u16);
    frame[4..4 + data.len()].copy_from_slice(data);
    frame
}

/// A STUN message with `body_len` bytes of (arbitrary) attribute space.
fn stun_frame(method_bits: u16, tid: [u8; 12], body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(20 + body.len());
    frame.extend_from_slice(&(method_bits & 0x3fff).to_be_bytes());
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(&MAGIC_COOKIE);
    frame.extend_from_slice(&tid);
    frame.extend_from_slice(body);
    frame
}

proptest! {
    #[test]
    fn channel_header_round_trips(number in channel_number(), len in any::<u16>(),
                                  tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut buf = vec![0u8; 4];
        buf.extend_from_slice(&tail);
        write_header(&mut buf, number, len);
        prop_assert_eq!(parse_header(&buf), Some((number, usize::from(len))));
        prop_assert!(is_channel_data(buf[0]));
    }

    #[test]
    fn channel_header_rejects_numbers_outside_the_range(number in any::<u16>(), len in any::<u16>()) {
        prop_assume!(!(MIN_CHANNEL..=MAX_CHANNEL).contains(&number));
        let mut buf = [0u8; 4];
        write_header(&mut buf, number, len);
        prop_assert_eq!(parse_header(&buf), None);
    }

    #[test]
    fn parse_header_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..16)) {
        match parse_header(&buf) {
            None => prop_assert!(
                buf.len() < 4
                    || !(MIN_CHANNEL..=MAX_CHANNEL)
                        .contains(&u16::from_be_bytes([buf[0], buf[1]]))
            ),
            Some((number, len)) => {
                prop_assert!(buf.len() >= 4);
                prop_assert!((MIN_CHANNEL..=MAX_CHANNEL).contains(&number));
                prop_assert_eq!(len, usize::from(u16::from_be_bytes([buf[2], buf[3]])));
            }
        }
    }

    #[test]
    fn stream_padding_aligns_to_four(len in 0usize..=70_000) {
        let pad = stream_padding(len);
        prop_assert!(pad < 4);
        prop_assert_eq!((len + pad) % 4, 0);
    }

    #[test]
    fn stream_frame_len_never_panics_and_stays_in_bounds(
        buf in proptest::collection::vec(any::<u8>(), 0..96)
    ) {
        match stream_frame_len(&buf) {
            Ok(None) => {}
            Ok(Some(n)) => {
                prop_assert!(n <= buf.len(), "frame length {} beyond the {} bytes held", n, buf.len());
                let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                match buf[0] >> 6 {
                    0 => {
                        prop_assert_eq!(n, 20 + len);
                        prop_assert!(n <= usize::from(u16::MAX) + 20);
                    }
                    1 => {
                        prop_assert!(is_channel_data(buf[0]));
                        prop_assert_eq!(n, 4 + len + stream_padding(len));
                        prop_assert!(n <= 4 + usize::from(u16::MAX) + 3);
                    }
                    _ => prop_assert!(false, "top bits 1x accepted as a frame"),
                }
            }
            Err(FrameError::NotTurn) => prop_assert!(
                buf[0] >> 6 >= 2 || !is_channel_data(buf[0])
            ),
            Err(FrameError::BadStunLength) => {
                prop_assert_eq!(buf[0] >> 6, 0);
                prop_assert_ne!(u16::from_be_bytes([buf[2], buf[3]]) % 4, 0);
            }
        }
    }

    /// Large headers with little data: the length must be reported as incomplete, not trusted.
    #[test]
    fn stream_frame_len_waits_for_announced_bytes(first in any::<u8>(), second in any::<u8>(),
                                                  len in any::<u16>(), have in 0usize..64) {
        let mut buf = vec![first, second];
        buf.extend_from_slice(&len.to_be_bytes());
        buf.resize(4 + have, 0xAB);
        if let Ok(Some(n)) = stream_frame_len(&buf) {
            prop_assert!(n <= buf.len());
        }
    }

    #[test]
    fn stream_frame_len_finds_built_channel_frames(
        number in channel_number(),
        data in proptest::collection::vec(any::<u8>(), 0..600),
        trailing in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let frame = stream_channel_frame(number, &data);
        let built = frame.len();
        prop_assert_eq!(built % 4, 0);
        let mut stream = frame;
        stream.extend_from_slice(&trailing);
        prop_assert_eq!(stream_frame_len(&stream), Ok(Some(built)));
        // Every strict prefix is incomplete, never an error nor a shorter frame.
        for cut in [0, 1, 3, 4, built / 2, built - 1] {
            if cut < built {
                prop_assert_eq!(stream_frame_len(&stream[..cut]), Ok(None), "prefix of {}", cut);
            }
        }
        prop_assert_eq!(parse_header(&stream), Some((number, data.len())));
    }

    #[test]
    fn stream_frame_len_finds_large_channel_frames(number in channel_number(),
                                                   len in 60_000u16..=u16::MAX) {
        let data = vec![0x5a; usize::from(len)];
        let frame = stream_channel_frame(number, &data);
        prop_assert_eq!(stream_frame_len(&frame), Ok(Some(frame.len())));
        prop_assert_eq!(stream_frame_len(&frame[..frame.len() - 1]), Ok(None));
    }

    #[test]
    fn stream_frame_len_finds_built_stun_messages(
        method in any::<u16>(),
        tid in any::<[u8; 12]>(),
        words in proptest::collection::vec(any::<[u8; 4]>(), 0..64),
        trailing in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let body: Vec<u8> = words.concat();
        let frame = stun_frame(method, tid, &body);
        let built = frame.len();
        let mut stream = frame;
        stream.extend_from_slice(&trailing);
        prop_assert_eq!(stream_frame_len(&stream), Ok(Some(built)));
        for cut in [0, 2, 4, 19, built - 1] {
            if cut < built {
                prop_assert_eq!(stream_frame_len(&stream[..cut]), Ok(None), "prefix of {}", cut);
            }
        }
    }
}

// ---------------------------------------------------------------- peer rules

fn ipv4_net() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
        IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(a), p)
                .expect("prefix <= 32")
                .trunc(),
        )
    })
}

fn ipv6_net() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, p)| {
        IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(a), p)
                .expect("prefix <= 128")
                .trunc(),
        )
    })
}

fn port_range() -> impl Strategy<Value = std::ops::RangeInclusive<u16>> {
    prop_oneof![
        Just(1..=65535),
        (1u16..=65535).prop_map(|p| p..=p),
        (1u16..=65535, 1u16..=65535).prop_map(|(a, b)| a.min(b)..=a.max(b)),
    ]
}

fn peer_rule() -> impl Strategy<Value = PeerRule> {
    (prop_oneof![ipv4_net(), ipv6_net()], port_range())
        .prop_map(|(net, ports)| PeerRule { net, ports })
}

/// Text that looks like a rule often enough to reach the port and bracket branches.
fn rule_like_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        r"\[?[0-9a-fA-F:.]{0,40}\]?(/[0-9]{0,4})?(:[0-9]{0,6}(-[0-9]{0,6})?)?",
    )
    .expect("valid regex")
}

proptest! {
    #[test]
    fn peer_rule_parse_never_panics(s in any::<String>()) {
        if let Ok(rule) = s.parse::<PeerRule>() {
            prop_assert!(*rule.ports.start() >= 1);
            prop_assert!(rule.ports.start() <= rule.ports.end());
        }
    }

    #[test]
    fn peer_rule_parse_never_panics_on_rule_like_text(s in rule_like_text()) {
        if let Ok(rule) = s.parse::<PeerRule>() {
            prop_assert!(*rule.ports.start() >= 1);
            prop_assert!(rule.ports.start() <= rule.ports.end());
            // Whatever was accepted prints to something that parses back to the same rule.
            let printed = rule.to_string();
            prop_assert_eq!(printed.parse::<PeerRule>(), Ok(rule), "printed as {:?}", printed);
        }
    }

    /// `Display` is what `--allow-peer` values and config dumps print; it must parse back.
    #[test]
    fn peer_rule_display_round_trips(rule in peer_rule()) {
        let printed = rule.to_string();
        prop_assert_eq!(printed.parse::<PeerRule>(), Ok(rule), "printed as {:?}", printed);
    }
}

// ---------------------------------------------------------------- TURN REST credentials, nonces

fn authenticator() -> Authenticator {
    Authenticator::new(&AuthConfig {
        static_secret: Some(b"static-secret".to_vec()),
        app_keys: vec![
            AppKey {
                app_id: "app".into(),
                key_id: "k1".into(),
                secret: b"app-secret-1".to_vec(),
                not_after: Some(1_500),
            },
            AppKey {
                app_id: "app".into(),
                key_id: "k2".into(),
                secret: b"app-secret-2".to_vec(),
                not_after: None,
            },
        ],
    })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
    ]
}

/// Usernames shaped like `<expiry>:<id>` with odd ids, plus pure noise.
fn username_like_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::string::string_regex(r"[+-]?[0-9]{0,22}(:[a-z0-9:]{0,12})?")
            .expect("valid regex"),
        proptest::string::string_regex(r"[0-9]{1,12}:app(:k[0-9]{0,2}(:.{0,6})?)?")
            .expect("valid regex"),
    ]
}

proptest! {
    #[test]
    fn authenticator_never_panics(username in username_like_text(), now in any::<u64>()) {
        let auth = authenticator();
        if let Ok((password, identity)) = auth.password(&username, now) {
            let (expiry, id) = username.split_once(':').expect("accepted usernames have a colon");
            prop_assert!(expiry.parse::<u64>().expect("accepted expiry is a number") >= now);
            prop_assert_eq!(identity.id, id);
            // base64 of a 20-byte HMAC-SHA1.
            prop_assert_eq!(password.len(), 28);
        }
    }

    #[test]
    fn static_secret_credentials_are_accepted_until_expiry(
        expiry in 0u64..=u64::MAX / 2,
        id in "[a-z0-9]{1,16}",
        age in 0u64..1_000,
    ) {
        prop_assume!(id != "app");
        let auth = authenticator();
        let username = rest_username(expiry, &id);
        let (password, identity) = auth.password(&username, expiry.saturating_sub(age))
            .expect("fresh static credential");
        prop_assert_eq!(password, rest_password(b"static-secret", &username));
        prop_assert_eq!(identity.app_id, None);
        prop_assert!(auth.password(&username, expiry + 1).is_err());
    }

    #[test]
    fn nonce_check_never_panics(nonce in any::<String>(), client in socket_addr(), now in any::<u64>()) {
        let key = NonceKey::new([3; 32]);
        let _ = key.check(&nonce, &client, now);
    }

    /// Nonces with our prefix and the right length, but arbitrary (possibly non-hex,
    /// possibly multi-byte) characters: the slicing must stay on char boundaries.
    #[test]
    fn nonce_check_never_panics_on_near_misses(
        body in proptest::string::string_regex(r"[0-9a-fA-F+\-é]{36,42}").expect("valid regex"),
        client in socket_addr(),
        now in any::<u64>(),
    ) {
        let key = NonceKey::new([3; 32]);
        let nonce = format!("obMatJos2gAAA{body}");
        let _ = key.check(&nonce, &client, now);
    }

    #[test]
    fn minted_nonces_check_out_for_their_client_only(
        // Nonce expiries are 32-bit Unix seconds (good until 2106).
        expiry in 0..=u64::from(u32::MAX),
        client in socket_addr(),
        other in socket_addr(),
        before in any::<u64>(),
        features in any::<bool>(),
    ) {
        let key = NonceKey::new([9; 32]);
        let nonce = key.mint(expiry, &client, features);
        let now = expiry.saturating_sub(before % 10_000);
        prop_assert_eq!(key.check(&nonce, &client, now), Ok(()));
        prop_assert_eq!(key.check(&nonce, &client, expiry + 1), Err(NonceError::Stale));
        if other != client {
            prop_assert_eq!(key.check(&nonce, &other, now), Err(NonceError::Invalid));
        }
        prop_assert_eq!(NonceKey::new([8; 32]).check(&nonce, &client, now), Err(NonceError::Invalid));
    }
}

// ---------------------------------------------------------------- STUN messages (stun-types)

/// Walks everything a handler would look at on a parsed message.
fn touch(msg: &Message<'_>, len: usize) {
    let _ = (
        msg.get_type(),
        msg.transaction_id(),
        msg.class(),
        msg.method(),
    );
    for (offset, attr) in msg.iter_attributes() {
        assert!(offset >= 20 && offset + 4 + attr.value.len() <= len);
    }
}

proptest! {
    #[test]
    fn stun_from_bytes_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(msg) = Message::from_bytes(&buf) {
            touch(&msg, buf.len());
        }
    }

    /// A valid header in front of arbitrary attribute bytes, so the attribute walk is reached.
    #[test]
    fn stun_from_bytes_never_panics_past_the_header(
        method in any::<u16>(),
        tid in any::<[u8; 12]>(),
        words in proptest::collection::vec(any::<[u8; 4]>(), 0..48),
        extra in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        let body = words.concat();
        let mut buf = stun_frame(method, tid, &body);
        buf.extend_from_slice(&extra);
        if let Ok(msg) = Message::from_bytes(&buf) {
            touch(&msg, buf.len());
        }
    }

    /// Attributes with plausible types (the ones TURN reads) and arbitrary lengths and values.
    #[test]
    fn stun_from_bytes_never_panics_on_turn_attributes(
        method in any::<u16>(),
        attrs in proptest::collection::vec(
            (
                prop_oneof![
                    Just(0x0006u16), Just(0x0008), Just(0x000C), Just(0x000D), Just(0x0012),
                    Just(0x0013), Just(0x0014), Just(0x0015), Just(0x0016), Just(0x0017),
                    Just(0x0019), Just(0x001C), Just(0x001D), Just(0x001E), Just(0x0020),
                    Just(0x8000), Just(0x8028), Just(0x8022), any::<u16>(),
                ],
                any::<u16>(),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            0..8,
        ),
    ) {
        let mut body = Vec::new();
        for (ty, len, value) in attrs {
            body.extend_from_slice(&ty.to_be_bytes());
            // Half of the time the length is honest, so parsing gets past this attribute.
            let len = if len % 2 == 0 { value.len() as u16 } else { len };
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let buf = stun_frame(method, [7; 12], &body);
        if let Ok(msg) = Message::from_bytes(&buf) {
            touch(&msg, buf.len());
        }
    }
}
