//! Who a member of the media service is and what goes to it: a UDP client or a browser
//! session ([`Endpoint`], [`MemberKey`], [`SessionId`]), the datagrams the server hands its
//! driver ([`Transmit`]), and a browser's admission ([`WebJoin`], [`WebRefusal`]).

use std::net::SocketAddr;

/// A browser session of the WebRTC endpoint (random, so its URL is a capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u128);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 32 hex digits")]
pub struct BadSessionId;

impl std::str::FromStr for SessionId {
    type Err = BadSessionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadSessionId);
        }
        u128::from_str_radix(s, 16)
            .map(SessionId)
            .map_err(|_| BadSessionId)
    }
}

/// Where a member is: a UDP client (its address, and the listener that answers it), or a
/// browser session (its data channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A client speaking the datagram format over UDP.
    Udp {
        /// The client's address, as the service sees it.
        remote: SocketAddr,
        /// The service's listening address the client reached, which answers it.
        local: SocketAddr,
    },
    /// A browser, over its WebRTC session's data channel.
    Web(SessionId),
}

/// What identifies a member: its UDP address or its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberKey {
    /// A UDP member, by its source address.
    Udp(SocketAddr),
    /// A browser member, by its session.
    Web(SessionId),
}

impl Endpoint {
    /// The key the member table files this endpoint under.
    pub fn key(&self) -> MemberKey {
        match *self {
            Endpoint::Udp { remote, .. } => MemberKey::Udp(remote),
            Endpoint::Web(id) => MemberKey::Web(id),
        }
    }
}

/// A datagram to send to `to`: over UDP from the listener it names, or as one binary
/// data-channel message of a browser session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The member (or would-be member) to send to.
    pub to: Endpoint,
    /// The encoded datagram.
    pub bytes: &'a [u8],
}

/// Why a browser session was not admitted (the endpoint maps these to HTTP statuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebRefusal {
    /// The token is malformed, expired, forged, or its key is unknown (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token's app is not served here (403).
    #[error("{0}")]
    AppNotAllowed(String),
    /// The token's `(channel, uid)` seat is held by a live member (409).
    #[error("{0}")]
    SeatTaken(String),
    /// Too many JOINs with this token identity (429).
    #[error("too many joins with this token; retry later")]
    RateLimited,
    /// A member, channel or per-channel limit (503).
    #[error("{0}")]
    Full(String),
}

/// A browser member admitted by [`MediaServer::join_web`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebJoin {
    /// The member's uid, from its token.
    pub uid: u32,
    /// Members of the channel, this one included.
    pub members: usize,
}

/// `remote` as bytes (family, IP, port) in `buf`: the key of per-source state and cookies.
pub(crate) fn address_bytes(remote: SocketAddr, buf: &mut [u8; 19]) -> &[u8] {
    let n = match remote.ip() {
        std::net::IpAddr::V4(ip) => {
            buf[0] = 4;
            buf[1..5].copy_from_slice(&ip.octets());
            5
        }
        std::net::IpAddr::V6(ip) => {
            buf[0] = 6;
            buf[1..17].copy_from_slice(&ip.octets());
            17
        }
    };
    buf[n..n + 2].copy_from_slice(&remote.port().to_be_bytes());
    &buf[..n + 2]
}
