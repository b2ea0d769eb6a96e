//! What the server hands its driver: transmits, commands, events, and what became of a
//! client's input (see the crate docs for the driving contract).

use super::*;

/// A STUN message to send to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The client the message goes to (over the transport it came in on).
    pub to: ClientAddr,
    /// The encoded STUN message.
    pub data: Vec<u8>,
}

/// Side effects for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Bind UDP sockets on these relayed transport addresses, then call
    /// [`Server::handle_relay_bound`] with `allocation` and the outcome.
    BindRelay {
        /// The allocation waiting for its sockets.
        allocation: AllocationHandle,
        /// The IPv4 relayed address to bind, if the client asked for IPv4.
        v4: Option<SocketAddr>,
        /// The IPv6 relayed address to bind, if the client asked for IPv6.
        v6: Option<SocketAddr>,
    },
    /// Check this allocation centrally (leases), then call [`Server::handle_admission`] with
    /// `allocation` and the verdict. Only with [`ServerConfig::admission`].
    Admit {
        /// The allocation waiting for the verdict.
        allocation: AllocationHandle,
        /// Who asks (app, region, mode, channel, user), as the control plane's lease wants it.
        request: AdmitRequest,
    },
    /// Fetch `path` (a read-only control-plane API path) for a client's in-band request and
    /// call [`Server::handle_signal_response`] with `request` and the outcome.
    Signal {
        /// The client request the answer goes back to.
        request: SignalHandle,
        /// The control-plane API path to `GET`, e.g. `/v1/proxies?region=japan`.
        path: String,
    },
    /// Close the sockets on these relayed transport addresses.
    CloseRelay {
        /// The IPv4 relayed address to close, if the allocation had one.
        v4: Option<SocketAddr>,
        /// The IPv6 relayed address to close, if the allocation had one.
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
    /// An allocation's sockets are bound and its success response is queued.
    AllocationCreated {
        /// The client that owns it.
        client: ClientAddr,
        /// Its (first) relayed transport address.
        relay: RelayAddr,
    },
    /// An allocation ended and its slot is free.
    AllocationDeleted {
        /// The client that owned it.
        client: ClientAddr,
        /// Why it ended.
        reason: DeleteReason,
    },
    /// A credential or integrity check failed (a 401 other than the first challenge).
    AuthFailed {
        /// The client whose request was refused.
        client: ClientAddr,
        /// Which check failed.
        reason: AuthFailure,
    },
    /// An error response was sent.
    ErrorSent {
        /// The STUN error code (RFC 8489 §14.8), e.g. 401, 437, 486.
        code: u16,
    },
    /// A malformed STUN message was dropped without an answer.
    MalformedDropped,
    /// An answer to an unauthenticated request was not sent: it would have been more than
    /// [`REFLECTION_FACTOR`] times the request.
    ReflectionSuppressed,
    /// An admitted allocation ended (any reason, also before its socket was bound): its
    /// account's lease can go, and `bytes` were relayed since the last
    /// [`Server::drain_usage`].
    AccountClosed {
        /// The account (lease) id the driver gave at admission.
        account: u64,
        /// Bytes relayed, both directions, since the last drain.
        bytes: u64,
    },
    /// A channel binding relays data until `until` (the binding's expiry or the peer's
    /// permission's, whichever is first): a driver may forward its ChannelData outside the
    /// server, e.g. in the kernel, until then. Emitted (with
    /// [`ServerConfig::channel_events`](crate::ServerConfig::channel_events)) on every
    /// ChannelBind, new or refreshed, and when a CreatePermission extends the peer's
    /// permission. What is forwarded outside is the driver's to meter for `account`.
    ChannelUsable {
        /// The binding.
        channel: BoundChannel,
        /// When forwarding must stop unless another `ChannelUsable` extends it.
        until: Instant,
        /// The admitted allocation's account, to meter forwarded bytes to (none without admission).
        account: Option<u64>,
    },
    /// The binding relays nothing any more: its reservation ended, the peer policy stopped
    /// it, or its allocation ended (then before the allocation's
    /// [`Event::AccountClosed`]). The driver removes what it forwarded outside.
    ChannelEnded {
        /// The binding that ended.
        channel: BoundChannel,
        /// The allocation's account, as in the matching `ChannelUsable`.
        account: Option<u64>,
    },
}

/// One channel binding as [`Event::ChannelUsable`] and [`Event::ChannelEnded`] name it: the
/// client's 5-tuple and channel number on one side, the relayed address and the peer on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BoundChannel {
    /// The client that bound the channel.
    pub client: ClientAddr,
    /// The relayed address the peer's data arrives on.
    pub relay: RelayAddr,
    /// The peer the channel is bound to.
    pub peer: PeerAddr,
    /// The channel number, 0x4000 to 0x7FFE ([`crate::channel::MAX_CHANNEL`]).
    pub number: u16,
}

/// Why an allocation ended ([`Event::AllocationDeleted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its lifetime ran out without a Refresh.
    Expired,
    /// The client sent a Refresh with LIFETIME 0 (RFC 8656 §7.3).
    Refreshed0,
    /// The driver could not bind its relayed sockets ([`Server::handle_relay_bound`]).
    BindFailed,
    /// The client's TCP/TLS connection closed ([`Server::handle_client_closed`]).
    ClientGone,
    /// The app lost access (deleted, suspended, or its mode disabled here).
    Revoked,
}

/// Which authentication check refused a request ([`Event::AuthFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// The username or token did not verify (malformed, expired, unknown app, revoked...).
    Credential(CredentialError),
    /// MESSAGE-INTEGRITY did not match the key the credential derives.
    BadIntegrity,
    /// The REALM is not this server's.
    WrongRealm,
    /// The NONCE was not minted by this server (a stale one gets 438 and no event).
    BadNonce,
}

/// Where to forward a client's data: `bytes[range]` to `peer` from `relay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The relayed socket to send from.
    pub relay: RelayAddr,
    /// The peer to send to.
    pub peer: PeerAddr,
    /// The payload's position in the buffer the client's input arrived in.
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
