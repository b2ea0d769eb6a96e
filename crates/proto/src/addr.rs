//! Address roles, named as RFC 8656 §2 names them.

use std::fmt;
use std::net::SocketAddr;

/// The transport a client reached the relay over: the API's [`cloudproxy_api::Transport`]
/// (UDP, TCP, TLS on TCP), one type from the relay's listeners to the control plane's table.
pub use cloudproxy_api::Transport;

/// The client's side of the 5-tuple (RFC 8656 §2, "5-tuple"): the transport, the client's
/// transport address as the server sees it, and the server's listening address it reached.
/// An allocation is identified by this value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    /// The transport the client connected over (UDP, TCP or TLS).
    pub transport: Transport,
    /// The client's address and port as the server sees it (after any NAT).
    pub remote: SocketAddr,
    /// The server's local listening address the client reached.
    pub local: SocketAddr,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}->{}", self.transport, self.remote, self.local)
    }
}

/// "Peer": a host the client talks to through the relay (RFC 8656 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// "Relayed transport address": the address on the server that peers send to (RFC 8656 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayAddr(pub SocketAddr);
