//! The client side of the media service's wire format ([`cloudproxy_media::wire`]), reduced to
//! what the session needs.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use cloudproxy_media::wire::{self, Packet};

/// A message from the media service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaMsg {
    Joined {
        uid: u32,
        members: u16,
        seen_as: SocketAddr,
    },
    Error {
        code: u16,
        app_id: String,
        message: String,
    },
    Data {
        from_uid: u32,
        seq: u32,
        sent_micros: u64,
        /// Where the payload is in the datagram.
        payload: Range<usize>,
    },
    Pong {
        t: u64,
    },
    /// The answer to LEAVE: the service has forgotten the member.
    Left,
    /// The answer to a JOIN without a (valid) cookie: repeat the JOIN with this one, from the
    /// same address, to prove the address is ours (see `cloudproxy_media::wire`).
    Challenge {
        cookie: wire::Cookie,
    },
}

/// A session re-joins after a 404 at most this often.
pub(crate) const REJOIN_EVERY: Duration = Duration::from_millis(250);

fn encode(p: Packet<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    // Only fails for a token longer than 65535 bytes, which the service would refuse anyway.
    let _ = p.encode_vec(&mut v);
    v
}

/// JOIN; with the cookie of the CHALLENGE that answered the previous one, if any.
pub(crate) fn join(token: &str, echo: bool, cookie: Option<wire::Cookie>) -> Vec<u8> {
    encode(Packet::Join {
        echo,
        token,
        cookie,
    })
}

pub(crate) fn data(seq: u32, sent_micros: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(wire::DATA_HEADER + payload.len(), 0);
    let _ = wire::write_data_header(out, seq, sent_micros);
    out[wire::DATA_HEADER..].copy_from_slice(payload);
}

/// PING into `out` (cleared first): keepalives reuse the session's send buffer.
pub(crate) fn ping(t: u64, out: &mut Vec<u8>) {
    out.clear();
    let _ = Packet::Ping(t).encode_vec(out);
}

pub(crate) fn leave() -> Vec<u8> {
    encode(Packet::Leave)
}

/// Parses a message from the media service; `None` for anything else.
pub(crate) fn parse(b: &[u8]) -> Option<MediaMsg> {
    Some(match wire::decode(b).ok()? {
        Packet::Joined { uid, members, addr } => MediaMsg::Joined {
            uid,
            members,
            seen_as: addr,
        },
        Packet::Error {
            code,
            app_id,
            message,
            ..
        } => MediaMsg::Error {
            code: code.0,
            app_id: app_id.into(),
            message: message.into(),
        },
        Packet::Forwarded {
            from_uid,
            seq,
            sent_micros,
            payload,
        } => MediaMsg::Data {
            from_uid,
            seq,
            sent_micros,
            payload: b.len() - payload.len()..b.len(),
        },
        Packet::Pong(t) => MediaMsg::Pong { t },
        Packet::Left => MediaMsg::Left,
        Packet::Challenge(cookie) => MediaMsg::Challenge { cookie },
        _ => return None,
    })
}
