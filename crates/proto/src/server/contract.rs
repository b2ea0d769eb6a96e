//! What the server hands its driver: transmits, commands, events, and what became of a
//! client's input (see the crate docs for the driving contract).

use super::*;

/// A STUN message to send to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: ClientAddr,
    pub data: Vec<u8>,
}

/// Side effects for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Bind UDP sockets on these relayed transport addresses, then call
    /// [`Server::handle_relay_bound`] with `allocation` and the outcome.
    BindRelay {
        allocation: AllocationHandle,
        v4: Option<SocketAddr>,
        v6: Option<SocketAddr>,
    },
    /// Check this allocation centrally (leases), then call [`Server::handle_admission`] with
    /// `allocation` and the verdict. Only with [`ServerConfig::admission`].
    Admit {
        allocation: AllocationHandle,
        request: AdmitRequest,
    },
    /// Fetch `path` (a read-only control-plane API path) for a client's in-band request and
    /// call [`Server::handle_signal_response`] with `request` and the outcome.
    Signal { request: SignalHandle, path: String },
    /// Close the sockets on these relayed transport addresses.
    CloseRelay {
        v4: Option<SocketAddr>,
        v6: Option<SocketAddr>,
    },
}

/// Identifies an allocation across the bind round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllocationHandle {
    pub(super) slot: usize,
    pub(super) generation: u32,
}

/// Things that happened, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    AllocationCreated {
        client: ClientAddr,
        relay: RelayAddr,
    },
    AllocationDeleted {
        client: ClientAddr,
        reason: DeleteReason,
    },
    /// A credential or integrity check failed (a 401 other than the first challenge).
    AuthFailed {
        client: ClientAddr,
        reason: AuthFailure,
    },
    /// An error response was sent.
    ErrorSent { code: u16 },
    /// A malformed STUN message was dropped without an answer.
    MalformedDropped,
    /// An answer to an unauthenticated request was not sent: it would have been more than
    /// [`REFLECTION_FACTOR`] times the request.
    ReflectionSuppressed,
    /// An admitted allocation ended (any reason, also before its socket was bound): its
    /// account's lease can go, and `bytes` were relayed since the last
    /// [`Server::drain_usage`].
    AccountClosed { account: u64, bytes: u64 },
    /// A channel binding relays data until `until` (the binding's expiry or the peer's
    /// permission's, whichever is first): a driver may forward its ChannelData outside the
    /// server, e.g. in the kernel, until then. Emitted (with
    /// [`ServerConfig::channel_events`](crate::ServerConfig::channel_events)) on every
    /// ChannelBind, new or refreshed, and when a CreatePermission extends the peer's
    /// permission. What is forwarded outside is the driver's to meter for `account`.
    ChannelUsable {
        client: ClientAddr,
        relay: RelayAddr,
        peer: PeerAddr,
        number: u16,
        until: Instant,
        account: Option<u64>,
    },
    /// The binding relays nothing any more: its reservation ended, the peer policy stopped
    /// it, or its allocation ended (then before the allocation's
    /// [`Event::AccountClosed`]). The driver removes what it forwarded outside.
    ChannelEnded {
        client: ClientAddr,
        relay: RelayAddr,
        peer: PeerAddr,
        number: u16,
        account: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    Expired,
    Refreshed0,
    BindFailed,
    ClientGone,
    /// The app lost access (deleted, suspended, or its mode disabled here).
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Credential(CredentialError),
    BadIntegrity,
    WrongRealm,
    BadNonce,
}

/// Where to forward a client's data: `bytes[range]` to `peer` from `relay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub relay: RelayAddr,
    pub peer: PeerAddr,
    pub range: Range<usize>,
}

/// What became of one input from a client ([`Server::handle_client_input`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    /// Data for a peer (ChannelData, or a Send indication): send `bytes[range]` from `relay`.
    Forward(Forward),
    /// A STUN message the server took in. It may have queued output — a response, a command,
    /// an event (a malformed message is counted this way) — which the driver now applies.
    Handled,
    /// Dropped, nothing queued: neither STUN nor ChannelData, ChannelData that is short or on
    /// no live channel or permission, a Send indication without a permission, a response or
    /// an indication the server does not take (RFC 8489 §6.3, RFC 8656 §11 and §12).
    Dropped,
}

impl ClientInput {
    /// The data to forward, if the input was data.
    pub fn forward(self) -> Option<Forward> {
        match self {
            Self::Forward(f) => Some(f),
            Self::Handled | Self::Dropped => None,
        }
    }
}
