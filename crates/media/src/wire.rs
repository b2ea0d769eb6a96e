//! The media service's datagram format. Sans-IO: [`decode`] borrows the datagram and never
//! allocates or panics; encoders write into the caller's buffer.
//!
//! Every datagram starts with a type byte; integers are big-endian. This is revision 2 of the
//! format: revision 1 had no CHALLENGE, and its clients' JOINs are answered with a CHALLENGE
//! they do not know, so they time out rather than join without proving their address.
//!
//! ```text
//! 0x01 JOIN       [flags u8: bit0 echo, bit1 cookie][u16 len][token: Token::encode(), UTF-8]
//!                 [cookie: COOKIE_LEN bytes, present iff bit1]
//! 0x02 JOINED     [u32 uid][u16 members incl. me][u8 family 4|6][ip 4|16][u16 port]
//! 0x03 ERROR      [u16 code][u8 retryable 0|1][u16 len][app id][u16 len][message]
//! 0x04 DATA       [u32 seq][u64 sent_micros][payload]            client -> service
//! 0x05 FORWARDED  [u32 from_uid][u32 seq][u64 sent_micros][payload] service -> client
//! 0x06 PING       [u64 t]
//! 0x07 PONG       [u64 t]                                        (PING's t echoed)
//! 0x08 LEAVE
//! 0x09 LEFT
//! 0x0a CHALLENGE  [cookie: COOKIE_LEN bytes]                        service -> client
//! ```
//!
//! ## Joining: return routability
//!
//! A JOIN without a (valid) cookie is answered with a CHALLENGE, and nothing else happens; the
//! client repeats the JOIN with the cookie, from the same address, and only then becomes a
//! member and gets JOINED. A host that sends JOIN claiming someone else's source address never
//! sees the cookie, so it cannot make that address a member (and a target of media): this is
//! QUIC's address validation (RFC 9000 §8.1, Retry) for the media service. The cookie is
//! opaque to the client; [`crate::server`] describes what it binds. A CHALLENGE
//! ([`CHALLENGE_LEN`] bytes) is smaller than any JOIN that can cause it, so it amplifies
//! nothing. The round trip costs one RTT per join; a client keeps the token and answers a
//! CHALLENGE whenever one comes (a re-join after 404 goes the same way).
//!
//! JOINED carries the source address the service saw: through a TURN relay, the relay's
//! relayed transport address. Unknown JOIN flag bits are ignored (room for later options);
//! anything else that does not fit the layout exactly, trailing bytes included, is an error.
//!
//! A FORWARDED header is exactly [`HEADROOM`] bytes longer than a DATA header and ends with the
//! same `seq` and `sent_micros`, so a server that receives DATA `HEADROOM` bytes into its buffer
//! turns it into FORWARDED by writing 5 bytes in front, without moving the payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Type byte of JOIN (client -> service): join the token's channel.
pub const JOIN: u8 = 0x01;
/// Type byte of JOINED (service -> client): the join succeeded.
pub const JOINED: u8 = 0x02;
/// Type byte of ERROR (service -> client): a request was refused.
pub const ERROR: u8 = 0x03;
/// Type byte of DATA (client -> service): media for the other members.
pub const DATA: u8 = 0x04;
/// Type byte of FORWARDED (service -> client): another member's DATA.
pub const FORWARDED: u8 = 0x05;
/// Type byte of PING (client -> service): keepalive and round-trip probe.
pub const PING: u8 = 0x06;
/// Type byte of PONG (service -> client): the answer to PING.
pub const PONG: u8 = 0x07;
/// Type byte of LEAVE (client -> service): leave the channel now.
pub const LEAVE: u8 = 0x08;
/// Type byte of LEFT (service -> client): the LEAVE was done.
pub const LEFT: u8 = 0x09;
/// Type byte of CHALLENGE (service -> client): repeat the JOIN with this cookie.
pub const CHALLENGE: u8 = 0x0a;

/// JOIN flag: also send my own DATA back to me.
pub const FLAG_ECHO: u8 = 0x01;
/// JOIN flag: a cookie from a CHALLENGE follows the token.
pub const FLAG_COOKIE: u8 = 0x02;
/// Bytes of a cookie (a truncated HMAC-SHA256, see [`crate::server`]).
pub const COOKIE_LEN: usize = 16;
/// Bytes of a CHALLENGE.
pub const CHALLENGE_LEN: usize = 1 + COOKIE_LEN;
/// A cookie, as it travels.
pub type Cookie = [u8; COOKIE_LEN];
/// Bytes before a DATA payload.
pub const DATA_HEADER: usize = 13;
/// Bytes before a FORWARDED payload.
pub const FORWARDED_HEADER: usize = 17;
/// Spare bytes a server keeps in front of a received datagram (see the module docs).
pub const HEADROOM: usize = FORWARDED_HEADER - DATA_HEADER;

/// An ERROR code. The constants are the codes the service sends; others decode as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The datagram does not fit the format.
    pub const MALFORMED: Self = Self(400);
    /// The token is malformed, expired, forged, or from an unknown app or key.
    pub const UNAUTHORIZED: Self = Self(401);
    /// DATA or PING from an address that has not joined (or timed out): join again.
    pub const NOT_JOINED: Self = Self(404);
    /// A limit is reached (channels, members per channel, members): try later or elsewhere.
    pub const FULL: Self = Self(503);
}

/// One datagram, borrowing from the buffer it was decoded from.
pub type Packet<'a> = Datagram<&'a str, &'a [u8]>;

/// One datagram of the format, holding its text as `S` and its media bytes as `B`: borrowed
/// in a [`Packet`], owned in a [`crate::blocking::Reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<S, B> {
    /// Join the channel the token names (client -> service).
    Join {
        /// Also send the member's own DATA back to it, as FORWARDED.
        echo: bool,
        /// The user token, as [`cloudproxy_proto::token::Token::encode`] writes it.
        token: S,
        /// The cookie of the CHALLENGE this JOIN answers; `None` on a first JOIN.
        cookie: Option<Cookie>,
    },
    /// The join succeeded (service -> client).
    Joined {
        /// The member's uid, from its token.
        uid: u32,
        /// Members in the channel, this one included.
        members: u16,
        /// The source address the service saw (through a TURN relay: the relayed address).
        addr: SocketAddr,
    },
    /// A request was refused (service -> client).
    Error {
        /// What went wrong (400, 401, 404, 503, ...).
        code: ErrorCode,
        /// Whether the same request may succeed later or on another server.
        retryable: bool,
        /// The token's app id when it had a well-formed one, else empty.
        app_id: S,
        /// A human-readable explanation, for logs.
        message: S,
    },
    /// Media from a member for the rest of its channel (client -> service).
    Data {
        /// The sender's sequence number, to count loss and reordering.
        seq: u32,
        /// The sender's clock when it sent, in microseconds, to measure latency.
        sent_micros: u64,
        /// The media bytes.
        payload: B,
    },
    /// Another member's DATA, relayed by the service (service -> client).
    Forwarded {
        /// The uid of the member that sent it.
        from_uid: u32,
        /// The sender's sequence number, unchanged.
        seq: u32,
        /// The sender's send time in microseconds, unchanged.
        sent_micros: u64,
        /// The media bytes, unchanged.
        payload: B,
    },
    /// Keepalive and round-trip probe carrying the client's timestamp (client -> service).
    Ping(u64),
    /// The answer to PING, echoing its timestamp (service -> client).
    Pong(u64),
    /// Leave the channel now rather than by timeout (client -> service).
    Leave,
    /// The LEAVE was done (service -> client).
    Left,
    /// Repeat the JOIN with this cookie, proving the source address (service -> client).
    Challenge(Cookie),
}

/// Why a datagram did not decode. `&'static str` names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The datagram has no bytes.
    #[error("empty datagram")]
    Empty,
    /// The type byte (carried) is not one of the format's.
    #[error("unknown packet type 0x{0:02x}")]
    UnknownType(u8),
    /// The datagram ends inside the named field.
    #[error("datagram ends inside {0}")]
    Truncated(&'static str),
    /// The named packet has bytes after its last field.
    #[error("{0} has bytes after its end")]
    Trailing(&'static str),
    /// The named text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// JOINED's address family byte (carried) is neither 4 nor 6.
    #[error("address family {0} is neither 4 nor 6")]
    Family(u8),
    /// ERROR's retryable byte (carried) is neither 0 nor 1.
    #[error("retryable flag {0} is neither 0 nor 1")]
    Flag(u8),
}

/// Why a packet did not encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The caller's buffer cannot hold the packet.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
    },
    /// The named length-prefixed field does not fit its 16-bit length.
    #[error("{0} is longer than 65535 bytes")]
    TooLong(&'static str),
}

/// Reads fields off the front of a datagram.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.array(what).map(u16::from_be_bytes)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.array(what).map(u32::from_be_bytes)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.array(what).map(u64::from_be_bytes)
    }

    fn str16(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let len = self.u16(what)?;
        let bytes = self.bytes(usize::from(len), what)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::NotUtf8(what))
    }

    fn end(self, what: &'static str) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(what))
        }
    }
}

/// Decodes one datagram. Never panics, never allocates.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, WireError> {
    let (&kind, rest) = datagram.split_first().ok_or(WireError::Empty)?;
    let mut r = Reader(rest);
    let packet = match kind {
        JOIN => {
            let flags = r.u8("JOIN flags")?;
            let token = r.str16("JOIN token")?;
            let cookie = if flags & FLAG_COOKIE != 0 {
                Some(r.array::<COOKIE_LEN>("JOIN cookie")?)
            } else {
                None
            };
            r.end("JOIN")?;
            Packet::Join {
                echo: flags & FLAG_ECHO != 0,
                token,
                cookie,
            }
        }
        JOINED => {
            let uid = r.u32("JOINED uid")?;
            let members = r.u16("JOINED members")?;
            let ip = match r.u8("JOINED family")? {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("JOINED address")?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("JOINED address")?)),
                other => return Err(WireError::Family(other)),
            };
            let port = r.u16("JOINED port")?;
            r.end("JOINED")?;
            Packet::Joined {
                uid,
                members,
                addr: SocketAddr::new(ip, port),
            }
        }
        ERROR => {
            let code = ErrorCode(r.u16("ERROR code")?);
            let retryable = match r.u8("ERROR retryable")? {
                0 => false,
                1 => true,
                other => return Err(WireError::Flag(other)),
            };
            let app_id = r.str16("ERROR app id")?;
            let message = r.str16("ERROR message")?;
            r.end("ERROR")?;
            Packet::Error {
                code,
                retryable,
                app_id,
                message,
            }
        }
        DATA => Packet::Data {
            seq: r.u32("DATA seq")?,
            sent_micros: r.u64("DATA timestamp")?,
            payload: r.0,
        },
        FORWARDED => Packet::Forwarded {
            from_uid: r.u32("FORWARDED uid")?,
            seq: r.u32("FORWARDED seq")?,
            sent_micros: r.u64("FORWARDED timestamp")?,
            payload: r.0,
        },
        PING | PONG => {
            let t = r.u64(if kind == PING { "PING" } else { "PONG" })?;
            r.end(if kind == PING { "PING" } else { "PONG" })?;
            if kind == PING {
                Packet::Ping(t)
            } else {
                Packet::Pong(t)
            }
        }
        LEAVE => {
            r.end("LEAVE")?;
            Packet::Leave
        }
        LEFT => {
            r.end("LEFT")?;
            Packet::Left
        }
        CHALLENGE => {
            let cookie = r.array::<COOKIE_LEN>("CHALLENGE cookie")?;
            r.end("CHALLENGE")?;
            Packet::Challenge(cookie)
        }
        other => return Err(WireError::UnknownType(other)),
    };
    Ok(packet)
}

/// Writes fields into a buffer that is known to be large enough.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
    fn str16(&mut self, s: &str) {
        // Lengths were checked by `encoded_len`.
        self.put(&(s.len() as u16).to_be_bytes());
        self.put(s.as_bytes());
    }
}

fn len16(s: &str, what: &'static str) -> Result<usize, EncodeError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(EncodeError::TooLong(what));
    }
    Ok(2 + s.len())
}

impl Packet<'_> {
    /// The size of the encoded packet.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(1 + match self {
            Packet::Join { token, cookie, .. } => {
                1 + len16(token, "JOIN token")? + cookie.map_or(0, |c| c.len())
            }
            Packet::Joined { addr, .. } => match addr {
                SocketAddr::V4(_) => 4 + 2 + 1 + 4 + 2,
                SocketAddr::V6(_) => 4 + 2 + 1 + 16 + 2,
            },
            Packet::Error {
                app_id, message, ..
            } => 3 + len16(app_id, "ERROR app id")? + len16(message, "ERROR message")?,
            Packet::Data { payload, .. } => DATA_HEADER - 1 + payload.len(),
            Packet::Forwarded { payload, .. } => FORWARDED_HEADER - 1 + payload.len(),
            Packet::Ping(_) | Packet::Pong(_) => 8,
            Packet::Leave | Packet::Left => 0,
            Packet::Challenge(_) => COOKIE_LEN,
        })
    }

    /// Encodes into `out`, returning the length written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let needed = self.encoded_len()?;
        if out.len() < needed {
            return Err(EncodeError::BufferTooSmall { needed });
        }
        let mut w = Writer { buf: out, at: 0 };
        match *self {
            Packet::Join {
                echo,
                token,
                cookie,
            } => {
                let flags = if echo { FLAG_ECHO } else { 0 }
                    | if cookie.is_some() { FLAG_COOKIE } else { 0 };
                w.put(&[JOIN, flags]);
                w.str16(token);
                if let Some(c) = cookie {
                    w.put(&c);
                }
            }
            Packet::Joined { uid, members, addr } => {
                w.put(&[JOINED]);
                w.put(&uid.to_be_bytes());
                w.put(&members.to_be_bytes());
                match addr.ip() {
                    IpAddr::V4(ip) => {
                        w.put(&[4]);
                        w.put(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        w.put(&[6]);
                        w.put(&ip.octets());
                    }
                }
                w.put(&addr.port().to_be_bytes());
            }
            Packet::Error {
                code,
                retryable,
                app_id,
                message,
            } => {
                w.put(&[ERROR]);
                w.put(&code.0.to_be_bytes());
                w.put(&[u8::from(retryable)]);
                w.str16(app_id);
                w.str16(message);
            }
            Packet::Data {
                seq,
                sent_micros,
                payload,
            } => {
                write_data_header(w.buf, seq, sent_micros)?;
                w.at = DATA_HEADER;
                w.put(payload);
            }
            Packet::Forwarded {
                from_uid,
                seq,
                sent_micros,
                payload,
            } => {
                write_forwarded_header(w.buf, from_uid, seq, sent_micros)?;
                w.at = FORWARDED_HEADER;
                w.put(payload);
            }
            Packet::Ping(t) => {
                w.put(&[PING]);
                w.put(&t.to_be_bytes());
            }
            Packet::Pong(t) => {
                w.put(&[PONG]);
                w.put(&t.to_be_bytes());
            }
            Packet::Leave => w.put(&[LEAVE]),
            Packet::Left => w.put(&[LEFT]),
            Packet::Challenge(c) => {
                w.put(&[CHALLENGE]);
                w.put(&c);
            }
        }
        Ok(w.at)
    }

    /// Encodes into `out` (cleared first; its capacity is reused).
    pub fn encode_vec(&self, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let needed = self.encoded_len()?;
        out.clear();
        out.resize(needed, 0);
        self.encode(out)
    }
}

/// Writes a DATA header into `out[..DATA_HEADER]`; the payload goes right after it. A client
/// that keeps its payload at `out[DATA_HEADER..]` sends without copying.
pub fn write_data_header(out: &mut [u8], seq: u32, sent_micros: u64) -> Result<usize, EncodeError> {
    let header = out
        .get_mut(..DATA_HEADER)
        .ok_or(EncodeError::BufferTooSmall {
            needed: DATA_HEADER,
        })?;
    header[0] = DATA;
    header[1..5].copy_from_slice(&seq.to_be_bytes());
    header[5..13].copy_from_slice(&sent_micros.to_be_bytes());
    Ok(DATA_HEADER)
}

/// Writes a FORWARDED header into `out[..FORWARDED_HEADER]`.
pub fn write_forwarded_header(
    out: &mut [u8],
    from_uid: u32,
    seq: u32,
    sent_micros: u64,
) -> Result<usize, EncodeError> {
    let header = out
        .get_mut(..FORWARDED_HEADER)
        .ok_or(EncodeError::BufferTooSmall {
            needed: FORWARDED_HEADER,
        })?;
    header[0] = FORWARDED;
    header[1..5].copy_from_slice(&from_uid.to_be_bytes());
    header[5..9].copy_from_slice(&seq.to_be_bytes());
    header[9..17].copy_from_slice(&sent_micros.to_be_bytes());
    Ok(FORWARDED_HEADER)
}
