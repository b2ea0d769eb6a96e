//! The wire format: exact bytes, errors, and properties (decode never panics; encode then
//! decode gives the packet back; header helpers agree with the encoder).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cloudproxy_media::wire::{self, decode, EncodeError, ErrorCode, Packet, WireError};
use proptest::prelude::*;

fn encode(p: Packet<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    let n = p.encode_vec(&mut v).unwrap();
    assert_eq!(n, v.len());
    v
}

#[test]
fn exact_bytes() {
    assert_eq!(
        encode(Packet::Join {
            echo: true,
            token: "ab",
            cookie: None,
        }),
        [1, 1, 0, 2, b'a', b'b']
    );
    let cookie: [u8; wire::COOKIE_LEN] = std::array::from_fn(|i| i as u8 + 1);
    let mut join = vec![1, 3, 0, 1, b'a'];
    join.extend(cookie);
    assert_eq!(
        encode(Packet::Join {
            echo: true,
            token: "a",
            cookie: Some(cookie),
        }),
        join
    );
    let mut challenge = vec![0x0a];
    challenge.extend(cookie);
    assert_eq!(encode(Packet::Challenge(cookie)), challenge);
    assert_eq!(challenge.len(), wire::CHALLENGE_LEN);
    assert_eq!(
        encode(Packet::Joined {
            uid: 7,
            members: 2,
            addr: "192.0.2.1:4660".parse().unwrap()
        }),
        [2, 0, 0, 0, 7, 0, 2, 4, 192, 0, 2, 1, 0x12, 0x34]
    );
    let v6 = encode(Packet::Joined {
        uid: 1,
        members: 1,
        addr: "[2001:db8::1]:1".parse().unwrap(),
    });
    assert_eq!(v6.len(), 1 + 4 + 2 + 1 + 16 + 2);
    assert_eq!(v6[7], 6);
    assert_eq!(
        encode(Packet::Error {
            code: ErrorCode::UNAUTHORIZED,
            retryable: false,
            app_id: "a",
            message: "no",
        }),
        [3, 0x01, 0x91, 0, 0, 1, b'a', 0, 2, b'n', b'o']
    );
    assert_eq!(
        encode(Packet::Data {
            seq: 1,
            sent_micros: 2,
            payload: b"x"
        }),
        [4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, b'x']
    );
    assert_eq!(
        encode(Packet::Forwarded {
            from_uid: 9,
            seq: 1,
            sent_micros: 2,
            payload: b""
        }),
        [5, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    );
    assert_eq!(encode(Packet::Ping(0x0102)), [6, 0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(encode(Packet::Pong(1)), [7, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(encode(Packet::Leave), [8]);
    assert_eq!(encode(Packet::Left), [9]);
}

#[test]
fn errors_name_what_is_wrong() {
    assert_eq!(decode(&[]), Err(WireError::Empty));
    assert_eq!(decode(&[0x42]), Err(WireError::UnknownType(0x42)));
    assert_eq!(
        decode(&[1, 0, 0, 5, b'a']),
        Err(WireError::Truncated("JOIN token"))
    );
    assert_eq!(decode(&[1, 0, 0, 0, 0]), Err(WireError::Trailing("JOIN")));
    assert_eq!(
        decode(&[1, 0, 0, 1, 0xff]),
        Err(WireError::NotUtf8("JOIN token"))
    );
    assert_eq!(decode(&[2, 0, 0, 0, 1, 0, 1, 5]), Err(WireError::Family(5)));
    assert_eq!(
        decode(&[3, 1, 0x91, 2, 0, 0, 0, 0]),
        Err(WireError::Flag(2))
    );
    assert_eq!(decode(&[4, 0, 0]), Err(WireError::Truncated("DATA seq")));
    assert_eq!(decode(&[6, 0]), Err(WireError::Truncated("PING")));
    assert_eq!(decode(&[8, 0]), Err(WireError::Trailing("LEAVE")));
    assert_eq!(
        WireError::Truncated("JOIN token").to_string(),
        "datagram ends inside JOIN token"
    );
    // Unknown JOIN flag bits are ignored.
    assert_eq!(
        decode(&[1, 0xfc, 0, 0]),
        Ok(Packet::Join {
            echo: false,
            token: "",
            cookie: None,
        })
    );
    // The cookie flag promises a whole cookie, and nothing after it.
    assert_eq!(
        decode(&[1, 2, 0, 0, 1, 2, 3]),
        Err(WireError::Truncated("JOIN cookie"))
    );
    let mut join = vec![1, 2, 0, 0];
    join.extend([0; 17]);
    assert_eq!(decode(&join), Err(WireError::Trailing("JOIN")));
    assert_eq!(
        decode(&[0x0a; 16]),
        Err(WireError::Truncated("CHALLENGE cookie"))
    );
    assert_eq!(decode(&[0x0a; 18]), Err(WireError::Trailing("CHALLENGE")));
}

#[test]
fn encode_checks_sizes() {
    let mut small = [0u8; 4];
    assert_eq!(
        Packet::Ping(1).encode(&mut small),
        Err(EncodeError::BufferTooSmall { needed: 9 })
    );
    let long = "x".repeat(70_000);
    assert_eq!(
        Packet::Join {
            echo: false,
            token: &long,
            cookie: None,
        }
        .encoded_len(),
        Err(EncodeError::TooLong("JOIN token"))
    );
    assert!(wire::write_data_header(&mut small, 1, 1).is_err());
}

#[test]
fn forwarded_header_fits_over_data_header_with_headroom() {
    // DATA received HEADROOM bytes into a buffer becomes FORWARDED by writing the front.
    let mut buf = vec![0u8; wire::HEADROOM];
    buf.extend(encode(Packet::Data {
        seq: 77,
        sent_micros: 123_456,
        payload: b"media",
    }));
    wire::write_forwarded_header(&mut buf, 5, 77, 123_456).unwrap();
    assert_eq!(
        decode(&buf),
        Ok(Packet::Forwarded {
            from_uid: 5,
            seq: 77,
            sent_micros: 123_456,
            payload: b"media"
        })
    );
}

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9:#é\u{1F600} ]{0,40}").unwrap()
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)),
    ]
}

/// Owned inputs for every packet kind.
#[derive(Debug, Clone)]
enum Owned {
    Join(bool, String, Option<wire::Cookie>),
    Challenge(wire::Cookie),
    Joined(u32, u16, SocketAddr),
    Error(u16, bool, String, String),
    Data(u32, u64, Vec<u8>),
    Forwarded(u32, u32, u64, Vec<u8>),
    Ping(u64),
    Pong(u64),
    Leave,
    Left,
}

impl Owned {
    fn packet(&self) -> Packet<'_> {
        match self {
            Owned::Join(echo, token, cookie) => Packet::Join {
                echo: *echo,
                token,
                cookie: *cookie,
            },
            Owned::Challenge(c) => Packet::Challenge(*c),
            Owned::Joined(uid, members, addr) => Packet::Joined {
                uid: *uid,
                members: *members,
                addr: *addr,
            },
            Owned::Error(code, retryable, app_id, message) => Packet::Error {
                code: ErrorCode(*code),
                retryable: *retryable,
                app_id,
                message,
            },
            Owned::Data(seq, t, p) => Packet::Data {
                seq: *seq,
                sent_micros: *t,
                payload: p,
            },
            Owned::Forwarded(uid, seq, t, p) => Packet::Forwarded {
                from_uid: *uid,
                seq: *seq,
                sent_micros: *t,
                payload: p,
            },
            Owned::Ping(t) => Packet::Ping(*t),
            Owned::Pong(t) => Packet::Pong(*t),
            Owned::Leave => Packet::Leave,
            Owned::Left => Packet::Left,
        }
    }
}

fn owned() -> impl Strategy<Value = Owned> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (any::<bool>(), text(), any::<Option<wire::Cookie>>())
            .prop_map(|(e, t, c)| Owned::Join(e, t, c)),
        any::<wire::Cookie>().prop_map(Owned::Challenge),
        (any::<u32>(), any::<u16>(), addr()).prop_map(|(u, m, a)| Owned::Joined(u, m, a)),
        (any::<u16>(), any::<bool>(), text(), text())
            .prop_map(|(c, r, a, m)| Owned::Error(c, r, a, m)),
        (any::<u32>(), any::<u64>(), bytes()).prop_map(|(s, t, p)| Owned::Data(s, t, p)),
        (any::<u32>(), any::<u32>(), any::<u64>(), bytes())
            .prop_map(|(u, s, t, p)| Owned::Forwarded(u, s, t, p)),
        any::<u64>().prop_map(Owned::Ping),
        any::<u64>().prop_map(Owned::Pong),
        Just(Owned::Leave),
        Just(Owned::Left),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_near_valid_input(
        p in owned(),
        cut in 0usize..80,
        flip in any::<(usize, u8)>(),
    ) {
        let mut bytes = encode(p.packet());
        let len = bytes.len();
        bytes.truncate(len.saturating_sub(cut % (len + 1)));
        if !bytes.is_empty() {
            let i = flip.0 % bytes.len();
            bytes[i] ^= flip.1;
        }
        let _ = decode(&bytes);
    }

    #[test]
    fn encode_decode_round_trip(p in owned()) {
        let packet = p.packet();
        let bytes = encode(packet);
        prop_assert_eq!(bytes.len(), packet.encoded_len().unwrap());
        prop_assert_eq!(decode(&bytes), Ok(packet));
        // Into a slice: same bytes, and a slice one byte short is refused.
        let mut buf = vec![0u8; bytes.len()];
        prop_assert_eq!(packet.encode(&mut buf), Ok(bytes.len()));
        prop_assert_eq!(&buf, &bytes);
        let mut short = vec![0u8; bytes.len() - 1];
        prop_assert!(packet.encode(&mut short).is_err());
    }
}
