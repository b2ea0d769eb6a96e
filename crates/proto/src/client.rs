//! Client-side message building and response parsing for TURN, sans-IO. Used by the SDK, the
//! load generator and the tests; it speaks only standard TURN, so it works against any server.

use std::net::SocketAddr;

use stun_types::attribute::{
    AttributeType, ErrorCode, Nonce, RawAttribute, Realm, Username, XorMappedAddress,
};
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_types::attribute::{
    ChannelNumber, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};

pub use stun_types::message::{Method, TransactionId, BINDING};
pub use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

use crate::channel;
use crate::integrity::{self, IntegrityKind, KeyAlgorithm, LongTermKey};

/// Long-term credentials once the server's REALM and NONCE are known.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// The USERNAME to send (the token's username).
    pub username: String,
    /// The server's REALM, from its 401 challenge.
    pub realm: String,
    /// The server's NONCE, from its latest 401 or 438.
    pub nonce: String,
    /// The long-term key (MD5 of `username:realm:password`, RFC 8489 §9.2.2) that signs requests.
    pub key: LongTermKey,
}

impl ClientAuth {
    /// Derives the key from `password` for the REALM and NONCE a 401 challenge gave.
    pub fn new(username: &str, password: &str, realm: &str, nonce: &str) -> Self {
        Self {
            username: username.into(),
            realm: realm.into(),
            nonce: nonce.into(),
            key: LongTermKey::derive(KeyAlgorithm::Md5, username, realm, password),
        }
    }
}

/// One attribute to put in a request.
#[derive(Debug, Clone, Copy)]
pub enum Attr<'a> {
    /// REQUESTED-TRANSPORT: UDP (17), as every Allocate carries.
    RequestedTransportUdp,
    /// LIFETIME in seconds (0 on a Refresh deletes the allocation).
    Lifetime(u32),
    /// XOR-PEER-ADDRESS of the peer to permit, bind or send to.
    PeerAddress(SocketAddr),
    /// CHANNEL-NUMBER, 0x4000 to 0x4FFF.
    ChannelNumber(u16),
    /// Any raw attribute, e.g. an unknown comprehension-required one for tests.
    Raw(u16, &'a [u8]),
}

/// Builds a request (or, with `class`, an indication) signed with MESSAGE-INTEGRITY when `auth`
/// is given, with FINGERPRINT.
pub fn build(
    class: MessageClass,
    method: Method,
    tid: TransactionId,
    attrs: &[Attr<'_>],
    data: Option<&[u8]>,
    auth: Option<&ClientAuth>,
) -> Vec<u8> {
    let mut w = Message::builder(
        MessageType::from_class_method(class, method),
        tid,
        MessageWriteVec::new(),
    );
    for a in attrs {
        let _ = match *a {
            Attr::RequestedTransportUdp => {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            }
            Attr::Lifetime(s) => w.add_attribute(&Lifetime::new(s)),
            Attr::PeerAddress(p) => w.add_attribute(&XorPeerAddress::new(p, tid)),
            Attr::ChannelNumber(n) => w.add_attribute(&ChannelNumber::new(n)),
            // MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT given raw (to test a server against
            // misplaced ones) is written as is: stun-types' `add_attribute` panics on them.
            Attr::Raw(t @ (0x0008 | 0x001C | 0x8028), d) => {
                w.push_attribute_unchecked(&RawAttribute::new(AttributeType::new(t), d));
                Ok(())
            }
            Attr::Raw(t, d) => w.add_attribute(&RawAttribute::new(AttributeType::new(t), d)),
        };
    }
    if let Some(d) = data {
        let _ = w.add_attribute(&RawAttribute::new(AttributeType::new(0x0013), d));
    }
    if let Some(auth) = auth {
        if let Ok(u) = Username::new(&auth.username) {
            let _ = w.add_attribute(&u);
        }
        if let Ok(r) = Realm::new(&auth.realm) {
            let _ = w.add_attribute(&r);
        }
        if let Ok(n) = Nonce::new(&auth.nonce) {
            let _ = w.add_attribute(&n);
        }
        let offset = w.len();
        w.push_attribute_unchecked(&RawAttribute::new(AttributeType::new(0x0008), &[0u8; 20]));
        let mac = integrity::compute(IntegrityKind::Sha1, &auth.key, w.data(), offset, 20);
        w.mut_data()[offset + 4..offset + 24].copy_from_slice(&mac[..20]);
    }
    let _ = w.add_fingerprint();
    w.finish()
}

/// A request with `attrs`.
pub fn request(
    method: Method,
    tid: TransactionId,
    attrs: &[Attr<'_>],
    auth: Option<&ClientAuth>,
) -> Vec<u8> {
    build(MessageClass::Request, method, tid, attrs, None, auth)
}

/// A Send indication carrying `data` to `peer` (RFC 8656 §11.1).
pub fn send_indication(tid: TransactionId, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    build(
        MessageClass::Indication,
        SEND,
        tid,
        &[Attr::PeerAddress(peer)],
        Some(data),
        None,
    )
}

/// A ChannelData message, padded to 4 bytes when `stream`.
pub fn channel_data(number: u16, payload: &[u8], stream: bool) -> Vec<u8> {
    let pad = if stream {
        channel::stream_padding(payload.len())
    } else {
        0
    };
    let mut out = vec![0u8; 4 + payload.len() + pad];
    channel::write_header(&mut out, number, payload.len() as u16);
    out[4..4 + payload.len()].copy_from_slice(payload);
    out
}

/// What a client needs from a server's response or indication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Whether the class is a success response.
    pub success: bool,
    /// Whether the message is an indication (Data) rather than a response.
    pub is_indication: bool,
    /// The STUN method, e.g. 0x003 for Allocate.
    pub method: u16,
    /// The 96-bit transaction id, to match the request.
    pub transaction: u128,
    /// ERROR-CODE: the code (e.g. 401, 438) and its reason phrase.
    pub error: Option<(u16, String)>,
    /// REALM, present on a 401 challenge.
    pub realm: Option<String>,
    /// NONCE, present on a 401 or 438.
    pub nonce: Option<String>,
    /// XOR-RELAYED-ADDRESS values (one per address family) of a successful Allocate.
    pub relayed: Vec<SocketAddr>,
    /// XOR-MAPPED-ADDRESS: the client's address as the server sees it.
    pub mapped: Option<SocketAddr>,
    /// LIFETIME granted, in seconds.
    pub lifetime: Option<u32>,
    /// RESERVATION-TOKEN, if the server reserved the next port.
    pub reservation_token: Option<u64>,
    /// XOR-PEER-ADDRESS of a Data indication.
    pub peer: Option<SocketAddr>,
    /// DATA of a Data indication: the peer's payload.
    pub data: Option<Vec<u8>>,
    /// UNKNOWN-ATTRIBUTES of a 420 response: the attribute types the server refused.
    pub unknown_attributes: Vec<u16>,
    /// Whether MESSAGE-INTEGRITY verified with the given key.
    pub integrity_ok: Option<bool>,
}

/// Why a server's bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes do not decode as a STUN message.
    #[error("not a STUN message")]
    NotStun,
}

/// Parses a STUN response or indication; checks MESSAGE-INTEGRITY if `key` is given.
pub fn parse(bytes: &[u8], key: Option<&LongTermKey>) -> Result<Response, ParseError> {
    let msg = Message::from_bytes(bytes).map_err(|_| ParseError::NotStun)?;
    let tid = msg.transaction_id();
    let mut r = Response {
        success: msg.class() == MessageClass::Success,
        is_indication: msg.class() == MessageClass::Indication,
        method: msg.method().value(),
        transaction: tid.into(),
        ..Default::default()
    };
    if let Ok(e) = msg.attribute::<ErrorCode>() {
        r.error = Some((e.code(), e.reason().to_owned()));
    }
    r.realm = msg.attribute::<Realm>().ok().map(|x| x.realm().to_owned());
    r.nonce = msg.attribute::<Nonce>().ok().map(|x| x.nonce().to_owned());
    let mut n = 0;
    while let Ok(a) = msg.nth_attribute::<XorRelayedAddress>(n) {
        r.relayed.push(a.addr(tid));
        n += 1;
    }
    r.mapped = msg
        .attribute::<XorMappedAddress>()
        .ok()
        .map(|a| a.addr(tid));
    r.lifetime = msg.attribute::<Lifetime>().ok().map(|l| l.seconds());
    r.reservation_token = msg.attribute::<ReservationToken>().ok().map(|t| t.token());
    r.peer = msg.attribute::<XorPeerAddress>().ok().map(|a| a.addr(tid));
    r.data = msg
        .raw_attribute(AttributeType::new(0x0013))
        .map(|a| a.value.to_vec());
    if let Some(raw) = msg.raw_attribute(AttributeType::new(0x000A)) {
        r.unknown_attributes = raw
            .value
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
    }
    if let Some(key) = key {
        r.integrity_ok = Some(
            msg.raw_attribute_and_offset(AttributeType::new(0x0008))
                .is_some_and(|(off, raw)| {
                    integrity::verify(IntegrityKind::Sha1, key, bytes, off, &raw.value)
                }),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the stun_server fuzz target: stun-types' `add_attribute` panics on these types.
    #[test]
    fn raw_integrity_and_fingerprint_attributes_are_written_as_given() {
        for t in [0x0008u16, 0x001C, 0x8028] {
            let value = [0xEA; 12];
            let bytes = build(
                MessageClass::Request,
                ALLOCATE,
                TransactionId::from(1u128),
                &[Attr::Raw(t, &value)],
                None,
                None,
            );
            // The first attribute, as given.
            assert_eq!(bytes[20..22], t.to_be_bytes());
            assert_eq!(bytes[22..24], 12u16.to_be_bytes());
            assert_eq!(bytes[24..36], value);
        }
    }
}
