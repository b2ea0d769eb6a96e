//! RFC 5769 test vectors (STUN sample messages), checked with stun-types' parser and with our own
//! MESSAGE-INTEGRITY and FINGERPRINT code in `cloudproxy_proto::integrity`.
//!
//! The bytes are those of RFC 5769 §2.1–§2.4, laid out as in the RFC (one 32-bit word a line);
//! they agree byte for byte with the copies in stun-types' and coturn's own test suites.
//! Every vector is self-checking: a mistyped byte breaks its HMAC or CRC.

use std::net::SocketAddr;

use cloudproxy_proto::integrity::{
    compute, fingerprint, verify, IntegrityKind, KeyAlgorithm, LongTermKey,
};
use stun_types::attribute::{
    AttributeStaticType, Fingerprint, MessageIntegrity, Nonce, Realm, Software, Username,
    XorMappedAddress,
};
use stun_types::message::{Message, MessageClass, StunParseError, BINDING};

/// RFC 5769 §2.1–§2.3 short-term password.
const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// RFC 5769 §2.1 Sample Request.
const SAMPLE_REQUEST: &str = "
    00 01 00 58
    21 12 a4 42
    b7 e7 a7 01
    bc 34 d6 86
    fa 87 df ae
    80 22 00 10
    53 54 55 4e
    20 74 65 73
    74 20 63 6c
    69 65 6e 74
    00 24 00 04
    6e 00 01 ff
    80 29 00 08
    93 2f f9 b1
    51 26 3b 36
    00 06 00 09
    65 76 74 6a
    3a 68 36 76
    59 20 20 20
    00 08 00 14
    9a ea a7 0c
    bf d8 cb 56
    78 1e f2 b5
    b2 d3 f2 49
    c1 b5 71 a2
    80 28 00 04
    e5 7a 3b cf";

/// RFC 5769 §2.2 Sample IPv4 Response.
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c
    21 12 a4 42
    b7 e7 a7 01
    bc 34 d6 86
    fa 87 df ae
    80 22 00 0b
    74 65 73 74
    20 76 65 63
    74 6f 72 20
    00 20 00 08
    00 01 a1 47
    e1 12 a6 43
    00 08 00 14
    2b 91 f5 99
    fd 9e 90 c3
    8c 74 89 f9
    2a f9 ba 53
    f0 6b e7 d7
    80 28 00 04
    c0 7d 4c 96";

/// RFC 5769 §2.3 Sample IPv6 Response.
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48
    21 12 a4 42
    b7 e7 a7 01
    bc 34 d6 86
    fa 87 df ae
    80 22 00 0b
    74 65 73 74
    20 76 65 63
    74 6f 72 20
    00 20 00 14
    00 02 a1 47
    01 13 a9 fa
    a5 d3 f1 79
    bc 25 f4 b5
    be d2 b9 d9
    00 08 00 14
    a3 82 95 4e
    4b e6 7b f1
    17 84 c9 7c
    82 92 c2 75
    bf e3 ed 41
    80 28 00 04
    c8 fb 0b 4c";

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication (no FINGERPRINT).
const SAMPLE_LONG_TERM_REQUEST: &str = "
    00 01 00 60
    21 12 a4 42
    78 ad 34 33
    c6 ad 72 c0
    29 da 41 2e
    00 06 00 12
    e3 83 9e e3
    83 88 e3 83
    aa e3 83 83
    e3 82 af e3
    82 b9 00 00
    00 15 00 1c
    66 2f 2f 34
    39 39 6b 39
    35 34 64 36
    4f 4c 33 34
    6f 4c 39 46
    53 54 76 79
    36 34 73 41
    00 14 00 0b
    65 78 61 6d
    70 6c 65 2e
    6f 72 67 00
    00 08 00 14
    f6 70 24 65
    6d d6 4a 3e
    02 b8 e0 71
    2e 85 c9 a2
    8c a8 96 66";

/// RFC 5769 §2.4 username: "マトリックス" (MA TO RI RU KU SU), already SASLprep'ed.
const LONG_TERM_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// RFC 5769 §2.4 password "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep (RFC 4013): the soft
/// hyphen maps to nothing, NFKC turns U+00AA into "a" and U+2168 (ROMAN NUMERAL NINE) into "IX".
const LONG_TERM_PASSWORD: &str = "TheMatrIX";
const LONG_TERM_REALM: &str = "example.org";
const LONG_TERM_NONCE: &str = "f//499k954d6OL34oL9FSTvy64sA";

fn bytes(vector: &str) -> Vec<u8> {
    let hex: String = vector.split_whitespace().collect();
    hex::decode(hex).expect("test vector is hex")
}

fn short_term_key() -> LongTermKey {
    LongTermKey::short_term(SHORT_TERM_PASSWORD)
}

fn long_term_key() -> LongTermKey {
    LongTermKey::derive(
        KeyAlgorithm::Md5,
        LONG_TERM_USERNAME,
        LONG_TERM_REALM,
        LONG_TERM_PASSWORD,
    )
}

/// Offset of the MESSAGE-INTEGRITY attribute header and its 20-byte value, found by stun-types.
fn integrity_of(msg: &Message<'_>) -> (usize, [u8; 20]) {
    let (offset, mi) = msg
        .attribute_and_offset::<MessageIntegrity>()
        .expect("vector carries MESSAGE-INTEGRITY");
    (offset, *mi.hmac())
}

/// Checks MESSAGE-INTEGRITY with our code, and that it is not a check that always passes: a
/// wrong key, a flipped byte in the covered part, and a flipped byte in the MAC all fail.
fn assert_integrity(data: &[u8], key: &LongTermKey, wrong_key: &LongTermKey) {
    let msg = Message::from_bytes(data).expect("vector parses");
    let (offset, mac) = integrity_of(&msg);
    assert_eq!(
        u16::from_be_bytes([data[offset], data[offset + 1]]),
        IntegrityKind::Sha1.attribute_type()
    );
    assert_eq!(&data[offset + 4..offset + 24], &mac[..]);

    assert!(
        verify(IntegrityKind::Sha1, key, data, offset, &mac),
        "MESSAGE-INTEGRITY must verify with the RFC's key"
    );
    assert_eq!(
        compute(IntegrityKind::Sha1, key, data, offset, 20)[..20],
        mac[..],
        "compute() must reproduce the RFC's HMAC"
    );
    assert!(!verify(IntegrityKind::Sha1, wrong_key, data, offset, &mac));

    // Every covered byte after the header's length field matters (the length is rewritten).
    for i in (0..2).chain(4..offset) {
        let mut tampered = data.to_vec();
        tampered[i] ^= 0x01;
        assert!(
            !verify(IntegrityKind::Sha1, key, &tampered, offset, &mac),
            "flipping byte {i} must break MESSAGE-INTEGRITY"
        );
    }
    let mut bad_mac = mac;
    bad_mac[19] ^= 0x80;
    assert!(!verify(IntegrityKind::Sha1, key, data, offset, &bad_mac));
    // Wrong lengths for the SHA-1 variant are refused, not truncated.
    assert!(!verify(IntegrityKind::Sha1, key, data, offset, &mac[..16]));
}

/// Checks FINGERPRINT with our code (the vector's header length already covers FINGERPRINT, as
/// `fingerprint` expects), and that stun-types rejects a message whose CRC no longer matches.
fn assert_fingerprint(data: &[u8]) {
    let msg = Message::from_bytes(data).expect("vector parses");
    let (offset, fp) = msg
        .raw_attribute_and_offset(Fingerprint::TYPE)
        .expect("vector carries FINGERPRINT");
    assert_eq!(offset + 8, data.len(), "FINGERPRINT is the last attribute");
    assert_eq!(
        usize::from(u16::from_be_bytes([data[2], data[3]])) + 20,
        data.len()
    );
    // The attribute's wire value (stun-types' `Fingerprint::fingerprint()` hands back the CRC
    // with the 0x5354554e XOR already undone, so compare with the raw bytes).
    let want = u32::from_be_bytes(fp.value[..].try_into().expect("4-byte value"));
    assert_eq!(fingerprint(&data[..offset]), want);

    // A header whose length does not cover FINGERPRINT gives another CRC.
    let mut short = data[..offset].to_vec();
    short[2..4].copy_from_slice(&((offset - 20) as u16).to_be_bytes());
    assert_ne!(fingerprint(&short), want);

    let mut tampered = data.to_vec();
    tampered[27] ^= 0x01; // inside the first attribute's value
    assert_ne!(fingerprint(&tampered[..offset]), want);
    assert!(matches!(
        Message::from_bytes(&tampered),
        Err(StunParseError::FingerprintMismatch)
    ));
}

#[test]
fn sample_request_2_1() {
    let data = bytes(SAMPLE_REQUEST);
    assert_eq!(data.len(), 108);
    let msg = Message::from_bytes(&data).expect("fingerprint and structure are valid");
    assert!(msg.has_class(MessageClass::Request));
    assert!(msg.has_method(BINDING));
    assert_eq!(
        msg.transaction_id(),
        0xb7e7_a701_bc34_d686_fa87_dfae_u128.into()
    );
    assert_eq!(
        msg.attribute::<Software>().unwrap().software(),
        "STUN test client"
    );
    assert_eq!(msg.attribute::<Username>().unwrap().username(), "evtj:h6vY");
    // PRIORITY (0x0024) and ICE-CONTROLLED (0x8029) are ICE attributes; check them raw.
    assert_eq!(
        &msg.raw_attribute(0x0024.into()).unwrap().value[..],
        [0x6e, 0x00, 0x01, 0xff]
    );
    assert_eq!(
        &msg.raw_attribute(0x8029.into()).unwrap().value[..],
        [0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36]
    );

    assert_integrity(
        &data,
        &short_term_key(),
        &LongTermKey::short_term("VOkJxbRl1RmTxUk/WvJxBu"),
    );
    assert_fingerprint(&data);
}

#[test]
fn sample_ipv4_response_2_2() {
    let data = bytes(SAMPLE_IPV4_RESPONSE);
    assert_eq!(data.len(), 80);
    let msg = Message::from_bytes(&data).expect("fingerprint and structure are valid");
    assert!(msg.has_class(MessageClass::Success));
    assert!(msg.has_method(BINDING));
    // The value is "test vector" (11 bytes); the RFC pads it with a space.
    assert_eq!(
        msg.attribute::<Software>().unwrap().software(),
        "test vector"
    );
    let xma = msg.attribute::<XorMappedAddress>().unwrap();
    let want: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(xma.addr(msg.transaction_id()), want);

    assert_integrity(
        &data,
        &short_term_key(),
        &LongTermKey::short_term("vOkJxbRl1RmTxUk/WvJxBt"),
    );
    assert_fingerprint(&data);
}

#[test]
fn sample_ipv6_response_2_3() {
    let data = bytes(SAMPLE_IPV6_RESPONSE);
    assert_eq!(data.len(), 92);
    let msg = Message::from_bytes(&data).expect("fingerprint and structure are valid");
    assert!(msg.has_class(MessageClass::Success));
    assert!(msg.has_method(BINDING));
    assert_eq!(
        msg.attribute::<Software>().unwrap().software(),
        "test vector"
    );
    let xma = msg.attribute::<XorMappedAddress>().unwrap();
    let want: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(xma.addr(msg.transaction_id()), want);

    assert_integrity(
        &data,
        &short_term_key(),
        &LongTermKey::short_term("VOkJxbRl1RmTxUk/WvJxB"),
    );
    assert_fingerprint(&data);
}

#[test]
fn sample_long_term_request_2_4() {
    let data = bytes(SAMPLE_LONG_TERM_REQUEST);
    assert_eq!(data.len(), 116);
    let msg = Message::from_bytes(&data).expect("structure is valid");
    assert!(msg.has_class(MessageClass::Request));
    assert!(msg.has_method(BINDING));
    assert_eq!(
        msg.transaction_id(),
        0x78ad_3433_c6ad_72c0_29da_412e_u128.into()
    );
    let username = msg.attribute::<Username>().unwrap();
    assert_eq!(username.username(), LONG_TERM_USERNAME);
    assert_eq!(username.username().len(), 18, "six 3-byte UTF-8 characters");
    assert_eq!(msg.attribute::<Nonce>().unwrap().nonce(), LONG_TERM_NONCE);
    assert_eq!(msg.attribute::<Realm>().unwrap().realm(), LONG_TERM_REALM);
    assert!(msg.attribute::<Fingerprint>().is_err(), "§2.4 has none");

    // MESSAGE-INTEGRITY is the last attribute here.
    let (offset, _) = integrity_of(&msg);
    assert_eq!(offset + 24, data.len());

    // The unprepared password must not work: SASLprep is the caller's job.
    let unprepared = LongTermKey::derive(
        KeyAlgorithm::Md5,
        LONG_TERM_USERNAME,
        LONG_TERM_REALM,
        "The\u{00AD}M\u{00AA}tr\u{2168}",
    );
    assert_integrity(&data, &long_term_key(), &unprepared);
    // The key itself, computed independently:
    // printf 'マトリックス:example.org:TheMatrIX' | openssl dgst -md5
    assert_eq!(
        hex::encode(long_term_key().as_bytes()),
        "e8ca7ad59d5eb0518e312911d2dab2a9"
    );
}

#[test]
fn long_term_key_is_md5_of_user_realm_password() {
    // MD5("user:realm:pass") computed independently:
    // printf 'user:realm:pass' | openssl dgst -md5
    let key = LongTermKey::derive(KeyAlgorithm::Md5, "user", "realm", "pass");
    assert_eq!(
        hex::encode(key.as_bytes()),
        "8493fbc53ba582fb4c044c456bdc40eb"
    );
    // SHA-256 variant (RFC 8489 §9.2.2): 32 bytes of SHA-256("user:realm:pass").
    // printf 'user:realm:pass' | openssl dgst -sha256
    let key = LongTermKey::derive(KeyAlgorithm::Sha256, "user", "realm", "pass");
    assert_eq!(
        hex::encode(key.as_bytes()),
        "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b"
    );
}
