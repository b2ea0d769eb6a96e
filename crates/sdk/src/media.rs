//! The client side of the media service's wire format (see `cloudproxy_media::wire`).
//!
//! TODO(issue 3): switch to `cloudproxy_media::wire` once it lands; this follows the same
//! format: `JOIN [0x01][flags][u16 len][token]`, `JOINED [0x02][u32 uid][u16 members]
//! [u8 family][ip][u16 port]`, `ERROR [0x03][u16 code][u8 retryable][u16 len][app][u16 len]
//! [message]`, `DATA [0x04][u32 seq][u64 micros][payload]` up, `[0x05][u32 uid][u32 seq]
//! [u64 micros][payload]` down, `PING [0x06][u64]`, `PONG [0x07][u64]`, `LEAVE [0x08]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

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
        retryable: bool,
        app_id: String,
        message: String,
    },
    Data {
        from_uid: u32,
        seq: u32,
        sent_micros: u64,
        payload: Range<usize>,
    },
    Pong {
        t: u64,
    },
}

pub(crate) fn join(token: &str, echo: bool) -> Vec<u8> {
    let mut v = vec![0x01, u8::from(echo)];
    v.extend_from_slice(&(token.len() as u16).to_be_bytes());
    v.extend_from_slice(token.as_bytes());
    v
}

pub(crate) fn data(seq: u32, sent_micros: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x04);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&sent_micros.to_be_bytes());
    out.extend_from_slice(payload);
}

pub(crate) fn ping(t: u64) -> Vec<u8> {
    let mut v = vec![0x06];
    v.extend_from_slice(&t.to_be_bytes());
    v
}

pub(crate) fn leave() -> Vec<u8> {
    vec![0x08]
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

fn text(b: &[u8], i: usize) -> Option<(String, usize)> {
    let len = u16_at(b, i)? as usize;
    let s = b.get(i + 2..i + 2 + len)?;
    Some((String::from_utf8_lossy(s).into_owned(), i + 2 + len))
}

/// Parses a message from the media service; `None` for anything else.
pub(crate) fn parse(b: &[u8]) -> Option<MediaMsg> {
    match *b.first()? {
        0x02 => {
            let uid = u32_at(b, 1)?;
            let members = u16_at(b, 5)?;
            let (ip, at): (IpAddr, usize) = match *b.get(7)? {
                4 => (Ipv4Addr::from(u32_at(b, 8)?).into(), 12),
                6 => {
                    let o: [u8; 16] = b.get(8..24)?.try_into().ok()?;
                    (Ipv6Addr::from(o).into(), 24)
                }
                _ => return None,
            };
            let port = u16_at(b, at)?;
            Some(MediaMsg::Joined {
                uid,
                members,
                seen_as: SocketAddr::new(ip, port),
            })
        }
        0x03 => {
            let code = u16_at(b, 1)?;
            let retryable = *b.get(3)? != 0;
            let (app_id, at) = text(b, 4)?;
            let (message, _) = text(b, at)?;
            Some(MediaMsg::Error {
                code,
                retryable,
                app_id,
                message,
            })
        }
        0x05 => Some(MediaMsg::Data {
            from_uid: u32_at(b, 1)?,
            seq: u32_at(b, 5)?,
            sent_micros: u64_at(b, 9)?,
            payload: 17..b.len(),
        }),
        0x07 => Some(MediaMsg::Pong { t: u64_at(b, 1)? }),
        _ => None,
    }
}
