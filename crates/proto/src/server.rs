//! The TURN server state machine (RFC 8656 on STUN RFC 8489), sans-IO.
//!
//! See the crate docs for the driving contract. Handlers name the RFC section they implement.

use std::collections::{HashMap, VecDeque};

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stun_types::attribute::{
    Attribute as _, AttributeType, ErrorCode, Nonce, PasswordAlgorithm, PasswordAlgorithmValue,
    PasswordAlgorithms, RawAttribute, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use stun_types::message::{
    Message, MessageClass, MessageHeader, MessageType, MessageWrite, MessageWriteExt,
    MessageWriteVec, Method, TransactionId, BINDING,
};
use stun_types::AddressFamily;
use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

use crate::addr::{ClientAddr, PeerAddr, RelayAddr};
use crate::admission::{self, Access, AdmitRequest, Mode, Verdict};
use crate::auth::{Authenticator, CredentialError, NonceError, NonceKey};
use crate::channel;
use crate::config::{AppKey, AuthConfig, ServerConfig};
use crate::integrity::{self, IntegrityKind, KeyAlgorithm, LongTermKey};
use crate::policy::PeerPolicy;
use crate::ports::{ClaimError, RelayPorts};
use crate::tables::{ChannelBinding, Channels, Permissions};
use crate::timer::TimerQueue;

/// Bytes a driver must leave free in front of a peer datagram: a Data indication header with
/// an IPv6 XOR-PEER-ADDRESS (20 + 24 + 4). ChannelData needs only the last 4 of them.
pub const HEADROOM: usize = 48;
/// Bytes a driver must leave free after a peer datagram, for padding to 4 bytes.
pub const TAILROOM: usize = 3;

const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_RESERVATION_TOKEN: u16 = 0x0022;
/// How long a port reserved by EVEN-PORT R=1 stays held (RFC 8656 §7.2: about 30 s).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Timer-queue slot used for reservation expiry.
const RESERVATIONS: usize = usize::MAX;

/// Comprehension-required attributes (type < 0x8000) this server understands. Anything else in
/// a request is answered with 420 (RFC 8489 §7.3.1); USERHASH, DONT-FRAGMENT and the RFC 6062
/// attributes are deliberately absent: they are not supported.
const KNOWN_REQUIRED: [u16; 17] = [
    0x0001, // MAPPED-ADDRESS
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x0009, // ERROR-CODE
    0x000A, // UNKNOWN-ATTRIBUTES
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0014, // REALM
    0x0015, // NONCE
    0x0016, // XOR-RELAYED-ADDRESS
    0x0017, // REQUESTED-ADDRESS-FAMILY
    0x0018, // EVEN-PORT
    0x0019, // REQUESTED-TRANSPORT
    0x001C, // MESSAGE-INTEGRITY-SHA256
    0x001D, // PASSWORD-ALGORITHM
];
// RESERVATION-TOKEN (0x0022) is understood only to be refused with 508; see `allocate`.

/// CLOUDPROXY-SIGNAL (a vendor method, not IANA-registered): a Force-UDP client's in-band
/// request to the control plane through the relay's UDP port. The request carries
/// [`ATTR_SIGNAL_PATH`] (a read-only API path, e.g. `/v1/allowlist/japan?format=csv`) and the
/// client's long-term credential (the 401/nonce exchange first, so a spoofed source gets
/// nothing); the success response carries the body in DATA, an error response the HTTP status
/// as ERROR-CODE.
pub const SIGNAL: Method = Method::new(0xFC1);
/// SIGNAL-PATH: comprehension-optional, UTF-8, at most [`MAX_SIGNAL_PATH`] bytes.
pub const ATTR_SIGNAL_PATH: u16 = 0xC0F1;
/// Longest SIGNAL-PATH accepted.
pub const MAX_SIGNAL_PATH: usize = 256;
/// Largest body answered over UDP: a response stays under a 1280-byte IPv6 minimum MTU.
pub const MAX_SIGNAL_BODY: usize = 1100;
/// Signaling requests waiting for the driver at once; more get 508.
const MAX_PENDING_SIGNALS: usize = 256;
/// A signaling request the driver did not answer in this time is forgotten.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Identifies a signaling request across the driver's round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalHandle(u64);

#[derive(Debug)]
struct PendingSignal {
    id: u64,
    client: ClientAddr,
    reply: ReplyAuth,
    at: Instant,
}

/// Counts allocations across every shard of a process: the total cap and the per-credential
/// quota must hold for the whole relay, not per event loop. Called only on Allocate and on
/// allocation deletion, never per packet.
pub trait AllocationLedger: Send + Sync + std::fmt::Debug {
    /// Takes one allocation for `user`. `Err(())` when the user's quota or the total cap is
    /// reached (answered with 486).
    fn try_acquire(&self, user: &str) -> Result<(), QuotaExceeded>;
    fn release(&self, user: &str);
    /// New limits (a configuration reload). Allocations already held stay, even above them;
    /// new ones are refused until the counts are back under.
    fn set_limits(&self, per_user_max: usize, total_max: usize);
}

/// Which limit refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    User,
    Total,
}

/// An in-process [`AllocationLedger`].
#[derive(Debug)]
pub struct LocalLedger {
    per_user_max: AtomicUsize,
    total_max: AtomicUsize,
    total: AtomicUsize,
    // A std Mutex: held only for a map update, never across an await, and only on Allocate
    // and allocation deletion.
    users: Mutex<HashMap<String, usize>>,
}

impl LocalLedger {
    pub fn new(per_user_max: usize, total_max: usize) -> Self {
        Self {
            per_user_max: AtomicUsize::new(per_user_max),
            total_max: AtomicUsize::new(total_max),
            total: AtomicUsize::new(0),
            users: Mutex::new(HashMap::new()),
        }
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl AllocationLedger for LocalLedger {
    fn try_acquire(&self, user: &str) -> Result<(), QuotaExceeded> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.total_max.load(Ordering::Relaxed) {
            return Err(QuotaExceeded::Total);
        }
        let n = users.entry(user.to_owned()).or_insert(0);
        if *n >= self.per_user_max.load(Ordering::Relaxed) {
            return Err(QuotaExceeded::User);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn set_limits(&self, per_user_max: usize, total_max: usize) {
        // Under the map's lock, so no Allocate sees one new limit and one old.
        let _users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        self.per_user_max.store(per_user_max, Ordering::Relaxed);
        self.total_max.store(total_max, Ordering::Relaxed);
    }
}

/// What the servers of one process share: the allocation counts and the relay port range.
#[derive(Debug, Clone)]
pub struct Shared {
    pub ledger: Arc<dyn AllocationLedger>,
    pub ports: Arc<RelayPorts>,
}

impl Shared {
    /// Shares built from a config: its limits and its relay port range.
    pub fn from_config(config: &ServerConfig, rng: &mut impl rand::RngCore) -> Self {
        Self {
            ledger: Arc::new(LocalLedger::new(
                config.max_allocations_per_user,
                config.max_allocations,
            )),
            ports: Arc::new(RelayPorts::new(config.relay_ports.clone(), rng)),
        }
    }
}

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
    slot: usize,
    generation: u32,
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

/// What is needed to answer an Allocate once its relay sockets are bound.
#[derive(Debug)]
struct PendingAllocate {
    reply: ReplyAuth,
    lifetime: Duration,
    /// IPv6 was asked for in ADDITIONAL-ADDRESS-FAMILY but is unavailable (RFC 8656 §7.2).
    v6_refused: bool,
    tries: u8,
    /// RESERVATION-TOKEN for the port after this one (EVEN-PORT R=1).
    token: Option<u64>,
}

#[derive(Debug)]
struct Allocation {
    generation: u32,
    client: ClientAddr,
    username: String,
    quota_key: String,
    /// Transaction id of the Allocate that created it, to answer retransmissions (§7.2).
    transaction: TransactionId,
    port: u16,
    v4: bool,
    v6: bool,
    expires: Instant,
    pending: Option<PendingAllocate>,
    permissions: Permissions,
    channels: Channels,
    /// The deadline currently in the timer queue for this allocation.
    scheduled: Option<Instant>,
    /// The mode it was admitted in (`None`: no admission, e.g. the static secret).
    mode: Option<Mode>,
    /// Waiting for [`Server::handle_admission`].
    admitting: bool,
    /// Set once admitted.
    account: Option<u64>,
    /// Relayed bytes (both directions) since the last [`Server::drain_usage`].
    bytes: u64,
}

impl Allocation {
    fn relay_addrs(&self, cfg: &ServerConfig) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let v4 = self
            .v4
            .then(|| {
                cfg.relay_ipv4
                    .map(|ip| SocketAddr::new(ip.into(), self.port))
            })
            .flatten();
        let v6 = self
            .v6
            .then(|| {
                cfg.relay_ipv6
                    .map(|ip| SocketAddr::new(ip.into(), self.port))
            })
            .flatten();
        (v4, v6)
    }

    fn has_family(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }

    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.allows(ip, now)
    }
}

/// How to sign responses to an authenticated request: same key and integrity kind as the
/// request (RFC 8489 §9.2.4), FINGERPRINT if the request had one.
#[derive(Debug, Clone)]
struct ReplyAuth {
    key: Option<(LongTermKey, IntegrityKind)>,
    fingerprint: bool,
    transaction: TransactionId,
    method: Method,
    /// The request's size: an unauthenticated answer stays within
    /// [`REFLECTION_FACTOR`] times it.
    request_len: usize,
}

/// No answer to a request that did not authenticate is more than this many times the size of
/// the request, so a spoofed source cannot use the relay as an amplifier (RFC 8656 §21.1.5
/// asks servers not to be one). Answers are built small enough; the check in
/// [`Server::send_reply`] is the backstop.
pub const REFLECTION_FACTOR: usize = 4;

/// Unknown attributes listed in a 420 at most (each listed once).
const MAX_UNKNOWN_LISTED: usize = 16;

/// An error to answer with, and whether the client's credential was good.
struct Reject {
    code: u16,
    reason: &'static str,
}

fn reject(code: u16, reason: &'static str) -> Reject {
    Reject { code, reason }
}

/// The TURN server for one event loop.
pub struct Server {
    config: ServerConfig,
    auth: Authenticator,
    nonce_key: NonceKey,
    /// Wall-clock anchor: `now_unix = anchor_unix + (now - anchor)`.
    anchor: Instant,
    anchor_unix: u64,
    ledger: Arc<dyn AllocationLedger>,
    slots: Vec<Option<Allocation>>,
    free_slots: Vec<usize>,
    next_generation: u32,
    /// 5-tuple -> slot, with a fast per-instance seeded hash (foldhash): only authenticated
    /// clients insert entries, so there is no collision attack to fear from lookups.
    by_client: HashMap<ClientAddr, usize, foldhash::fast::RandomState>,
    /// Relay port minus the range start -> slot. O(1), no hashing.
    by_port: Vec<Option<usize>>,
    ports: Arc<RelayPorts>,
    port_base: u16,
    timers: TimerQueue,
    transmits: VecDeque<Transmit>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    draining: bool,
    /// Apps allowed here, when [`ServerConfig::admission`] is set.
    access: Access,
    signals: Vec<PendingSignal>,
    next_signal: u64,
    /// xorshift state for Data indication transaction ids (not security relevant).
    tid_state: u64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("allocations", &self.by_client.len())
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// `now`/`now_unix` anchor the wall clock; `rng` seeds the nonce key. `ledger` and `ports`
    /// are shared by every shard of the process.
    pub fn new(
        config: ServerConfig,
        shared: Shared,
        now: Instant,
        now_unix: u64,
        rng: &mut impl rand::RngCore,
    ) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let Shared { ledger, ports } = shared;
        let span = ports.range().len();
        Self {
            port_base: *ports.range().start(),
            auth: Authenticator::new(&config.auth),
            nonce_key: NonceKey::new(key),
            anchor: now,
            anchor_unix: now_unix,
            ledger,
            slots: Vec::new(),
            free_slots: Vec::new(),
            next_generation: 1,
            by_client: HashMap::default(),
            by_port: vec![None; span],
            ports,
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            access: Access::new(),
            signals: Vec::new(),
            next_signal: 1,
            tid_state: rng.next_u64() | 1,
            config,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Number of allocations (including ones waiting for their relay socket).
    pub fn allocation_count(&self) -> usize {
        self.by_client.len()
    }

    /// Whether `client` holds an allocation.
    pub fn has_allocation(&self, client: &ClientAddr) -> bool {
        self.by_client.contains_key(client)
    }

    /// Stops accepting new allocations; existing ones keep working.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Applies a reloaded configuration (SIGHUP): credentials, peer policy and the quota
    /// fields of the config. No allocation ends. Permissions and channel bindings toward
    /// peers the new policy denies stop relaying at once (a channel's number stays reserved
    /// for its cooldown, RFC 8656 §12). The shared ledger's limits are the driver's to set
    /// (once per process, [`AllocationLedger::set_limits`]). O(allocations), on reload only.
    ///
    /// Returns how many permissions and channel bindings were revoked.
    pub fn reconfigure(
        &mut self,
        auth: &AuthConfig,
        peer_policy: PeerPolicy,
        max_allocations: usize,
        max_allocations_per_user: usize,
        now: Instant,
    ) -> usize {
        self.auth = Authenticator::new(auth);
        self.config.auth = auth.clone();
        self.config.max_allocations = max_allocations;
        self.config.max_allocations_per_user = max_allocations_per_user;
        let mut revoked = 0;
        for a in self.slots.iter_mut().flatten() {
            revoked += a.permissions.revoke(|ip| !peer_policy.permits_ip(ip));
            revoked += a
                .channels
                .stop(|peer| !peer_policy.permits(peer.ip(), peer.port()), now);
        }
        self.config.peer_policy = peer_policy;
        revoked
    }

    /// Replaces the per-application keys (control-plane sync).
    pub fn set_app_keys(&mut self, keys: &[AppKey]) {
        self.auth.set_app_keys(keys);
    }

    /// Replaces the apps allowed on this relay (control-plane sync) and ends the allocations
    /// of apps that lost access. O(allocations), on sync only.
    pub fn set_access(&mut self, access: Access) {
        self.access = access;
        let mut revoked = Vec::new();
        for (slot, a) in self.slots.iter().enumerate() {
            let Some(a) = a else { continue };
            let Some(mode) = a.mode else { continue };
            let app = a.username.split(':').nth(1).unwrap_or_default();
            if admission::allows(self.access.get(app), mode).is_err() {
                revoked.push(slot);
            }
        }
        for slot in revoked {
            self.delete(slot, DeleteReason::Revoked);
        }
    }

    /// Calls `f(account, bytes)` for every admitted allocation that relayed bytes since the
    /// last call, and resets its count. O(allocations): for periodic usage reports only.
    pub fn drain_usage(&mut self, mut f: impl FnMut(u64, u64)) {
        for a in self.slots.iter_mut().flatten() {
            if let (Some(account), bytes @ 1..) = (a.account, a.bytes) {
                f(account, bytes);
                a.bytes = 0;
            }
        }
    }

    /// The outcome of a [`Command::Admit`]. Returns `false` when the allocation is gone (it
    /// expired or its client left while waiting): the driver then releases what it granted.
    pub fn handle_admission(
        &mut self,
        handle: AllocationHandle,
        verdict: Verdict,
        _now: Instant,
    ) -> bool {
        let Some(alloc) = self.slots.get_mut(handle.slot).and_then(|a| a.as_mut()) else {
            return false;
        };
        if alloc.generation != handle.generation || !alloc.admitting {
            return false;
        }
        alloc.admitting = false;
        match verdict {
            Verdict::Granted { account } => {
                alloc.account = Some(account);
                let (v4, v6) = alloc.relay_addrs(&self.config);
                self.commands.push_back(Command::BindRelay {
                    allocation: handle,
                    v4,
                    v6,
                });
            }
            Verdict::Refused { code, reason } => {
                let alloc = self.slots[handle.slot].take().expect("present");
                self.free_slots.push(handle.slot);
                self.by_client.remove(&alloc.client);
                self.by_port[(alloc.port - self.port_base) as usize] = None;
                self.ports.give(alloc.port);
                self.ledger.release(&alloc.quota_key);
                let pending = alloc.pending.expect("admitting allocations are pending");
                self.respond_error(alloc.client, &pending.reply, code, &reason);
            }
        }
        true
    }

    /// An authenticated CLOUDPROXY-SIGNAL request: hand its path to the driver.
    fn signal(&mut self, msg: &Message<'_>, client: ClientAddr, reply: ReplyAuth, now: Instant) {
        let path = msg
            .raw_attribute(AttributeType::new(ATTR_SIGNAL_PATH))
            .and_then(|a| std::str::from_utf8(&a.value).ok().map(str::to_owned));
        let Some(path) = path.filter(|p| p.starts_with('/') && p.len() <= MAX_SIGNAL_PATH) else {
            self.respond_error(
                client,
                &reply,
                400,
                "Bad Request: SIGNAL-PATH missing or invalid",
            );
            return;
        };
        self.signals
            .retain(|s| now.saturating_duration_since(s.at) < SIGNAL_TIMEOUT);
        if self.signals.len() >= MAX_PENDING_SIGNALS {
            self.respond_error(client, &reply, 508, "Insufficient Capacity: signaling busy");
            return;
        }
        let id = self.next_signal;
        self.next_signal += 1;
        self.signals.push(PendingSignal {
            id,
            client,
            reply,
            at: now,
        });
        self.commands.push_back(Command::Signal {
            request: SignalHandle(id),
            path,
        });
    }

    /// The outcome of a [`Command::Signal`]: an HTTP status and body. 2xx answers with the
    /// body in DATA (413 when it exceeds [`MAX_SIGNAL_BODY`] on UDP); any other status is the
    /// ERROR-CODE, with `body` as the reason phrase. Unknown or expired handles are ignored.
    pub fn handle_signal_response(&mut self, request: SignalHandle, status: u16, body: &[u8]) {
        let Some(i) = self.signals.iter().position(|s| s.id == request.0) else {
            return;
        };
        let p = self.signals.swap_remove(i);
        if !(200..300).contains(&status) {
            let code = if (300..700).contains(&status) {
                status
            } else {
                500
            };
            let reason = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            self.respond_error(p.client, &p.reply, code, &reason);
            return;
        }
        if body.len() > MAX_SIGNAL_BODY && !p.client.transport.is_stream() {
            self.respond_error(
                p.client,
                &p.reply,
                413,
                "Payload Too Large: fetch it over the TLS listener",
            );
            return;
        }
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Success, SIGNAL),
            p.reply.transaction,
            MessageWriteVec::new(),
        );
        let _ = w.add_attribute(&RawAttribute::new(AttributeType::new(0x0013), body));
        let data = self.finish(w, &p.reply);
        self.transmits.push_back(Transmit { to: p.client, data });
    }

    fn unix(&self, now: Instant) -> u64 {
        self.anchor_unix + now.saturating_duration_since(self.anchor).as_secs()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek()
    }

    /// A client's connection went away (TCP/TLS close): its allocation goes with it
    /// (RFC 8656 §3.1: a TCP allocation lives as long as its connection).
    pub fn handle_client_closed(&mut self, client: ClientAddr) {
        if let Some(&slot) = self.by_client.get(&client) {
            self.delete(slot, DeleteReason::ClientGone);
        }
    }

    /// Input from a client: a UDP datagram or one complete stream frame. Says whether to
    /// forward data, apply queued output, or nothing (dropped).
    pub fn handle_client_input(
        &mut self,
        bytes: &[u8],
        client: ClientAddr,
        now: Instant,
    ) -> ClientInput {
        let Some(&first) = bytes.first() else {
            return ClientInput::Dropped;
        };
        if channel::is_channel_data(first) {
            return match self.channel_data(bytes, client, now) {
                Some(f) => ClientInput::Forward(f),
                None => ClientInput::Dropped,
            };
        }
        if first >> 6 != 0 {
            return ClientInput::Dropped;
        }
        self.stun(bytes, client, now)
    }

    /// RFC 8656 §12.6: ChannelData from the client goes to the bound peer.
    fn channel_data(&mut self, bytes: &[u8], client: ClientAddr, now: Instant) -> Option<Forward> {
        let (number, len) = channel::parse_header(bytes)?;
        let end = 4 + len;
        // Over UDP trailing bytes are allowed (padding); a shorter datagram is dropped.
        if bytes.len() < end {
            return None;
        }
        let slot = *self.by_client.get(&client)?;
        let alloc = self.slots[slot].as_mut()?;
        let binding = alloc.channels.by_number(number)?;
        if binding.expires <= now || !alloc.permitted(binding.peer.ip(), now) {
            return None;
        }
        let relay = relay_for(alloc, &self.config, binding.peer)?;
        alloc.bytes += len as u64;
        Some(Forward {
            relay,
            peer: PeerAddr(binding.peer),
            range: 4..end,
        })
    }

    /// Input from a peer, received at `buf[HEADROOM..HEADROOM + len]` on `relay`. On success the
    /// ChannelData or Data indication header has been written in front of the payload (and
    /// padding after it) and `buf[range]` is to be sent to `client`.
    pub fn handle_peer_input(
        &mut self,
        relay: RelayAddr,
        peer: PeerAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Option<(ClientAddr, Range<usize>)> {
        let index = relay.0.port().checked_sub(self.port_base)? as usize;
        let slot = (*self.by_port.get(index)?)?;
        let alloc = self.slots[slot].as_mut()?;
        if alloc.pending.is_some() || !alloc.permitted(peer.0.ip(), now) {
            return None;
        }
        if len > u16::MAX as usize - 64 || buf.len() < HEADROOM + len + TAILROOM {
            return None;
        }
        alloc.bytes += len as u64;
        let stream = alloc.client.transport.is_stream();
        let channel = alloc
            .channels
            .by_peer(peer.0)
            .filter(|c| c.expires > now)
            .map(|c| c.number);
        let end = HEADROOM + len;
        if let Some(number) = channel {
            // RFC 8656 §12.5: ChannelData, padded on stream transports.
            let start = HEADROOM - 4;
            channel::write_header(&mut buf[start..], number, len as u16);
            let pad = if stream {
                channel::stream_padding(len)
            } else {
                0
            };
            buf[end..end + pad].fill(0);
            return Some((alloc.client, start..end + pad));
        }
        // RFC 8656 §11.6: a Data indication with XOR-PEER-ADDRESS and DATA.
        let client = alloc.client;
        let tid = self.next_tid();
        Some((client, write_data_indication(buf, peer.0, len, tid)))
    }

    fn next_tid(&mut self) -> [u8; 12] {
        let mut out = [0u8; 12];
        for chunk in out.chunks_mut(4) {
            let mut x = self.tid_state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.tid_state = x;
            chunk.copy_from_slice(&(x as u32).to_be_bytes());
        }
        out
    }

    /// Expires permissions, channels and allocations that are due (RFC 8656 §§7, 9, 12).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, slot, generation)) = self.timers.pop_due(now) {
            if slot == RESERVATIONS {
                self.ports.expire(now);
                continue;
            }
            let Some(alloc) = self.slots.get_mut(slot).and_then(|a| a.as_mut()) else {
                continue;
            };
            if alloc.generation != generation || alloc.scheduled != Some(at) {
                continue;
            }
            alloc.scheduled = None;
            if alloc.expires <= now {
                self.delete(slot, DeleteReason::Expired);
                continue;
            }
            alloc.permissions.expire(now);
            alloc.channels.expire(now);
            self.schedule(slot);
        }
    }

    /// Puts the allocation's next deadline in the timer queue if it is earlier than the one
    /// already there.
    fn schedule(&mut self, slot: usize) {
        let Some(alloc) = self.slots[slot].as_mut() else {
            return;
        };
        let mut next = alloc.expires;
        // No wake-up is needed when a channel's data stops (data checks `expires`); only when
        // its reservation ends, to free the number.
        for t in alloc
            .permissions
            .deadlines()
            .chain(alloc.channels.deadlines())
        {
            next = next.min(t);
        }
        if alloc.scheduled.is_none_or(|s| next < s) {
            alloc.scheduled = Some(next);
            self.timers.push(next, slot, alloc.generation);
        }
    }

    fn delete(&mut self, slot: usize, reason: DeleteReason) {
        let Some(alloc) = self.slots[slot].take() else {
            return;
        };
        self.free_slots.push(slot);
        self.by_client.remove(&alloc.client);
        let index = (alloc.port - self.port_base) as usize;
        self.by_port[index] = None;
        self.ports.give(alloc.port);
        self.ledger.release(&alloc.quota_key);
        if let Some(account) = alloc.account {
            self.events.push_back(Event::AccountClosed {
                account,
                bytes: alloc.bytes,
            });
        }
        if alloc.pending.is_none() {
            let (v4, v6) = alloc.relay_addrs(&self.config);
            self.commands.push_back(Command::CloseRelay { v4, v6 });
            self.events.push_back(Event::AllocationDeleted {
                client: alloc.client,
                reason,
            });
        }
    }

    /// Outcome of a [`Command::BindRelay`].
    pub fn handle_relay_bound(&mut self, handle: AllocationHandle, ok: bool, _now: Instant) {
        let Some(alloc) = self.slots.get_mut(handle.slot).and_then(|a| a.as_mut()) else {
            return;
        };
        if alloc.generation != handle.generation || alloc.pending.is_none() {
            return;
        }
        if ok {
            let pending = alloc.pending.take().expect("checked");
            let (v4, v6) = alloc.relay_addrs(&self.config);
            let relay = RelayAddr(v4.or(v6).expect("an allocation has a family"));
            let client = alloc.client;
            let data = self.allocate_success(handle.slot, &pending);
            self.transmits.push_back(Transmit { to: client, data });
            self.events
                .push_back(Event::AllocationCreated { client, relay });
            self.schedule(handle.slot);
            return;
        }
        // The port was taken by someone else: try another one a few times, then 508.
        let start = self.port_base;
        let old_port = alloc.port;
        let tries = alloc.pending.as_ref().map_or(0, |p| p.tries);
        self.by_port[(old_port - start) as usize] = None;
        self.ports.give(old_port);
        let next = if tries < 4 {
            self.take_port(false)
        } else {
            None
        };
        let alloc = self.slots[handle.slot].as_mut().expect("present");
        let Some(port) = next else {
            let alloc = self.slots[handle.slot].take().expect("present");
            self.free_slots.push(handle.slot);
            self.by_client.remove(&alloc.client);
            self.ledger.release(&alloc.quota_key);
            let pending = alloc.pending.expect("checked");
            let data = self.error_response(
                &pending.reply,
                508,
                "Insufficient Capacity: no relay port could be bound",
            );
            self.transmits.push_back(Transmit {
                to: alloc.client,
                data,
            });
            return;
        };
        alloc.port = port;
        if let Some(p) = alloc.pending.as_mut() {
            p.tries += 1;
        }
        self.by_port[(port - start) as usize] = Some(handle.slot);
        let (v4, v6) = alloc.relay_addrs(&self.config);
        self.commands.push_back(Command::BindRelay {
            allocation: handle,
            v4,
            v6,
        });
    }

    fn take_port(&mut self, even: bool) -> Option<u16> {
        if even {
            self.ports.take_even()
        } else {
            self.ports.take()
        }
    }

    // ---------------------------------------------------------------------------------------
    // STUN requests

    fn stun(&mut self, bytes: &[u8], client: ClientAddr, now: Instant) -> ClientInput {
        let Ok(header) = MessageHeader::from_bytes(bytes) else {
            return ClientInput::Dropped; // not STUN: drop (RFC 8489 §6.3)
        };
        let class = header.get_type().class();
        let total = 20 + header.data_length() as usize;
        let msg = if bytes.len() == total {
            Message::from_bytes(bytes).ok()
        } else {
            None
        };
        let Some(msg) = msg else {
            // Malformed: dropped without an answer (an answer would be a free reflection, and
            // a well-behaved client never sends one), counted for the operator.
            self.events.push_back(Event::MalformedDropped);
            return ClientInput::Handled;
        };
        match class {
            MessageClass::Request => {
                self.request(&msg, client, now);
                ClientInput::Handled
            }
            MessageClass::Indication if msg.method() == SEND => {
                match self.send_indication(&msg, client, now) {
                    Some(f) => ClientInput::Forward(f),
                    None => ClientInput::Dropped,
                }
            }
            // Responses and other indications are ignored (RFC 8489 §6.3).
            _ => ClientInput::Dropped,
        }
    }

    fn request(&mut self, msg: &Message<'_>, client: ClientAddr, now: Instant) {
        let mut reply = ReplyAuth {
            key: None,
            fingerprint: msg.has_attribute(AttributeType::new(ATTR_FINGERPRINT)),
            transaction: msg.transaction_id(),
            method: msg.method(),
            request_len: msg.as_bytes().len(),
        };
        // RFC 8489 §7.3.1: unknown comprehension-required attributes -> 420, each listed once
        // and at most MAX_UNKNOWN_LISTED of them.
        let mut unknown: Vec<AttributeType> = Vec::new();
        for t in msg.iter_attributes().map(|(_, a)| a.get_type()) {
            if t.comprehension_required()
                && !KNOWN_REQUIRED.contains(&t.value())
                && t.value() != ATTR_RESERVATION_TOKEN
                && !unknown.contains(&t)
            {
                unknown.push(t);
                if unknown.len() == MAX_UNKNOWN_LISTED {
                    break;
                }
            }
        }
        if !unknown.is_empty() {
            let mut w = Message::builder_error(msg, MessageWriteVec::new());
            let _ = w.add_attribute(&error_code(420, "Unknown Attribute"));
            let _ = w.add_attribute(&UnknownAttributes::new(&unknown));
            self.finish_and_send(w, client, &reply, Some(420));
            return;
        }
        let method = msg.method();
        if method == BINDING {
            // RFC 8489 §6.3.1: no authentication for Binding.
            let mut w = Message::builder_success(msg, MessageWriteVec::new());
            let _ = w.add_attribute(&XorMappedAddress::new(client.remote, msg.transaction_id()));
            self.finish_and_send(w, client, &reply, None);
            return;
        }
        if method == SIGNAL {
            if self.authenticate(msg, client, now, &mut reply).is_ok() {
                self.signal(msg, client, reply, now);
            }
            return;
        }
        if ![ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND].contains(&method) {
            self.respond_error(client, &reply, 400, "Bad Request: unsupported method");
            return;
        }
        let username = match self.authenticate(msg, client, now, &mut reply) {
            Ok(u) => u,
            Err(()) => return,
        };
        let existing = self.by_client.get(&client).copied();
        if let Some(slot) = existing {
            let alloc = self.slots[slot].as_ref().expect("indexed");
            // RFC 8656 §5: requests on an allocation must use the username that created it.
            if alloc.username != username.0 {
                self.respond_error(client, &reply, 441, "Wrong Credentials");
                return;
            }
        }
        let result = if method == ALLOCATE {
            self.allocate(msg, client, now, &reply, existing, &username.0, &username.1)
        } else {
            match existing {
                None => Err(reject(
                    437,
                    "Allocation Mismatch: no allocation for this 5-tuple",
                )),
                Some(slot)
                    if self.slots[slot]
                        .as_ref()
                        .is_some_and(|a| a.pending.is_some()) =>
                {
                    Err(reject(437, "Allocation Mismatch: allocation not ready"))
                }
                Some(slot) => match method {
                    REFRESH => self.refresh(msg, slot, now, &reply),
                    CREATE_PERMISSION => self.create_permission(msg, slot, now, &reply),
                    _ => self.channel_bind(msg, slot, now, &reply),
                },
            }
        };
        match result {
            Ok(Some(data)) => self.transmits.push_back(Transmit { to: client, data }),
            Ok(None) => {}
            Err(r) => self.respond_error(client, &reply, r.code, r.reason),
        }
    }

    /// RFC 8489 §9.2.4 long-term credential check with stateless nonces. On success fills in
    /// the reply key and returns the username and quota key.
    fn authenticate(
        &mut self,
        msg: &Message<'_>,
        client: ClientAddr,
        now: Instant,
        reply: &mut ReplyAuth,
    ) -> Result<(String, String), ()> {
        let has_sha1 = msg.has_attribute(AttributeType::new(ATTR_MESSAGE_INTEGRITY));
        let has_sha256 = msg.has_attribute(AttributeType::new(ATTR_MESSAGE_INTEGRITY_SHA256));
        if !has_sha1 && !has_sha256 {
            self.challenge(client, reply, 401, "Unauthorized", None, now);
            return Err(());
        }
        let username = msg.attribute::<Username>().ok();
        let realm = msg.attribute::<Realm>().ok();
        let nonce = msg.attribute::<Nonce>().ok();
        let (Some(username), Some(realm), Some(nonce)) = (username, realm, nonce) else {
            self.respond_error(
                client,
                reply,
                400,
                "Bad Request: USERNAME, REALM and NONCE are required with MESSAGE-INTEGRITY",
            );
            return Err(());
        };
        let now_unix = self.unix(now);
        match self
            .nonce_key
            .check(nonce.nonce(), &client.remote, now_unix)
        {
            Ok(()) => {}
            Err(NonceError::Stale) => {
                self.challenge(client, reply, 438, "Stale Nonce", None, now);
                return Err(());
            }
            Err(NonceError::Invalid) => {
                self.challenge(
                    client,
                    reply,
                    401,
                    "Unauthorized: bad nonce",
                    Some(AuthFailure::BadNonce),
                    now,
                );
                return Err(());
            }
        }
        if realm.realm() != self.config.realm {
            self.challenge(
                client,
                reply,
                401,
                "Unauthorized: wrong realm",
                Some(AuthFailure::WrongRealm),
                now,
            );
            return Err(());
        }
        // RFC 8489 §9.2.4: PASSWORD-ALGORITHM must come with the PASSWORD-ALGORITHMS we sent.
        let algorithm = match msg.attribute::<PasswordAlgorithm>() {
            Ok(a) => {
                let echoed = msg.attribute::<PasswordAlgorithms>().ok();
                let ours = password_algorithms();
                if echoed.is_none_or(|e| e.algorithms() != ours.algorithms()) {
                    self.respond_error(
                        client,
                        reply,
                        400,
                        "Bad Request: PASSWORD-ALGORITHMS does not match",
                    );
                    return Err(());
                }
                match a.algorithm() {
                    PasswordAlgorithmValue::MD5 => KeyAlgorithm::Md5,
                    PasswordAlgorithmValue::SHA256 => KeyAlgorithm::Sha256,
                    #[allow(unreachable_patterns)]
                    _ => {
                        self.respond_error(
                            client,
                            reply,
                            400,
                            "Bad Request: unknown PASSWORD-ALGORITHM",
                        );
                        return Err(());
                    }
                }
            }
            Err(_) => KeyAlgorithm::Md5,
        };
        let user = username.username();
        let (password, quota_key) = match self.auth.password(user, now_unix) {
            Ok((p, id)) => (p, id.id.to_owned()),
            Err(e) => {
                tracing::debug!(%client, username = user, reason = %e, "credential refused");
                let reason = match (self.auth.app_of(user), e) {
                    (None, CredentialError::NoSecret) => {
                        let named = user.split(':').nth(1).unwrap_or_default();
                        refusal(None, &format!("unknown app '{named}'"))
                    }
                    (app, e) => refusal(app, &e.to_string()),
                };
                self.challenge(
                    client,
                    reply,
                    401,
                    &reason,
                    Some(AuthFailure::Credential(e)),
                    now,
                );
                return Err(());
            }
        };
        let key = LongTermKey::derive(algorithm, user, &self.config.realm, &password);
        // RFC 8489 §14.6: when both are present, MESSAGE-INTEGRITY-SHA256 is the one checked.
        let kind = if has_sha256 {
            IntegrityKind::Sha256
        } else {
            IntegrityKind::Sha1
        };
        let ok = msg
            .raw_attribute_and_offset(AttributeType::new(kind.attribute_type()))
            .is_some_and(|(offset, raw)| {
                integrity::verify(kind, &key, msg.as_bytes(), offset, &raw.value)
            });
        if !ok {
            tracing::debug!(%client, username = user, "message integrity check failed");
            let app = self.auth.app_of(user);
            let reason = refusal(app, "wrong password (forged credential or wrong secret)");
            self.challenge(
                client,
                reply,
                401,
                &reason,
                Some(AuthFailure::BadIntegrity),
                now,
            );
            return Err(());
        }
        reply.key = Some((key, kind));
        Ok((user.to_owned(), quota_key))
    }

    /// 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS, unsigned.
    fn challenge(
        &mut self,
        client: ClientAddr,
        reply: &ReplyAuth,
        code: u16,
        reason: &str,
        failure: Option<AuthFailure>,
        now: Instant,
    ) {
        if let Some(reason) = failure {
            self.events.push_back(Event::AuthFailed { client, reason });
        }
        let expiry = self.unix(now) + self.config.lifetimes.nonce.as_secs();
        // RFC 8489 §9.2's password-algorithms feature (the nonce cookie and
        // PASSWORD-ALGORITHMS) costs 44 bytes: offered when the answer stays within the
        // reflection budget, which any real client's request (it carries
        // REQUESTED-TRANSPORT or credentials) leaves room for.
        let padded = |n: usize| 4 + n.div_ceil(4) * 4;
        let with_features = 20
            + padded(4 + reason.len())
            + padded(self.config.realm.len())
            + padded(crate::auth::NONCE_LEN_WITH_COOKIE)
            + 12 // PASSWORD-ALGORITHMS with MD5 and SHA-256
            + if reply.fingerprint { 8 } else { 0 };
        let features = with_features <= REFLECTION_FACTOR * reply.request_len;
        let nonce = self.nonce_key.mint(expiry, &client.remote, features);
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Error, reply.method),
            reply.transaction,
            MessageWriteVec::new(),
        );
        let _ = w.add_attribute(&error_code(code, reason));
        if let Ok(r) = Realm::new(&self.config.realm) {
            let _ = w.add_attribute(&r);
        }
        if let Ok(n) = Nonce::new(&nonce) {
            let _ = w.add_attribute(&n);
        }
        if features {
            let _ = w.add_attribute(&password_algorithms());
        }
        let unsigned = ReplyAuth {
            key: None,
            ..reply.clone()
        };
        self.finish_and_send(w, client, &unsigned, Some(code));
    }
}

impl Server {
    /// RFC 8656 §7.2: Allocate.
    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &mut self,
        msg: &Message<'_>,
        client: ClientAddr,
        now: Instant,
        reply: &ReplyAuth,
        existing: Option<usize>,
        username: &str,
        quota_key: &str,
    ) -> Result<Option<Vec<u8>>, Reject> {
        if let Some(slot) = existing {
            let alloc = self.slots[slot].as_ref().expect("indexed");
            // A retransmission of the Allocate that created it gets the success again.
            if alloc.transaction == msg.transaction_id() {
                return Ok(match alloc.pending {
                    Some(_) => None,
                    None => {
                        let remaining = alloc.expires.saturating_duration_since(now);
                        let pending = PendingAllocate {
                            reply: reply.clone(),
                            lifetime: remaining,
                            v6_refused: false,
                            tries: 0,
                            token: None,
                        };
                        Some(self.allocate_success(slot, &pending))
                    }
                });
            }
            return Err(reject(
                437,
                "Allocation Mismatch: 5-tuple already has an allocation",
            ));
        }
        if self.draining {
            return Err(reject(508, "Insufficient Capacity: server is draining"));
        }
        let admit = self.admission_for(username, client)?;
        let transport = msg
            .attribute::<RequestedTransport>()
            .map_err(|_| reject(400, "Bad Request: REQUESTED-TRANSPORT missing"))?;
        if transport.protocol() != RequestedTransport::UDP {
            return Err(reject(442, "Unsupported Transport Protocol"));
        }
        let has_token = msg.has_attribute(AttributeType::new(ATTR_RESERVATION_TOKEN));
        let even = msg.attribute::<EvenPort>().ok();
        let malformed = |t: u16| msg.has_attribute(AttributeType::new(t));
        if (even.is_none() && malformed(0x0018))
            || (msg.attribute::<RequestedAddressFamily>().is_err() && malformed(0x0017))
        {
            return Err(reject(
                400,
                "Bad Request: malformed EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
            ));
        }
        let requested = msg.attribute::<RequestedAddressFamily>().ok();
        let additional = msg.attribute::<AdditionalAddressFamily>().ok();
        if has_token && (even.is_some() || requested.is_some()) {
            return Err(reject(
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
            ));
        }
        if requested.is_some() && additional.is_some() {
            return Err(reject(
                400,
                "Bad Request: REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together",
            ));
        }
        // §7.2 step 7: a RESERVATION-TOKEN names a port held by an earlier EVEN-PORT R=1.
        let reserved = match msg.attribute::<ReservationToken>() {
            Ok(t) => match self.ports.claim(t.token(), now) {
                Ok(port) => Some(port),
                Err(ClaimError::Expired) => {
                    return Err(reject(508, "Insufficient Capacity: reservation expired"))
                }
                Err(ClaimError::Unknown) => {
                    return Err(reject(
                        508,
                        "Insufficient Capacity: unknown reservation token",
                    ))
                }
            },
            Err(_) if has_token => {
                return Err(reject(400, "Bad Request: malformed RESERVATION-TOKEN"))
            }
            Err(_) => None,
        };
        let reserve_next = even.as_ref().is_some_and(|e| e.requested());
        let has_v4 = self.config.relay_ipv4.is_some();
        let has_v6 = self.config.relay_ipv6.is_some();
        let (v4, v6, v6_refused) = match (requested.map(|r| r.family()), additional) {
            (Some(AddressFamily::IPV6), _) if !has_v6 => {
                return Err(reject(440, "Address Family not Supported"))
            }
            (Some(AddressFamily::IPV6), _) => (false, true, false),
            (_, Some(a)) if a.family() != AddressFamily::IPV6 => {
                return Err(reject(
                    400,
                    "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6",
                ))
            }
            _ if !has_v4 => return Err(reject(440, "Address Family not Supported")),
            (_, Some(_)) => (true, has_v6, !has_v6),
            _ => (true, false, false),
        };
        let lifetime = self.desired_lifetime(msg.attribute::<Lifetime>().ok());
        if let Err(q) = self.ledger.try_acquire(quota_key) {
            if let Some(port) = reserved {
                self.ports.give(port);
            }
            return Err(match q {
                QuotaExceeded::User => reject(486, "Allocation Quota Reached"),
                QuotaExceeded::Total => reject(486, "Allocation Quota Reached: server is full"),
            });
        }
        let token = reserve_next.then(|| {
            let t = self.next_tid();
            u64::from_be_bytes(t[..8].try_into().expect("8 bytes"))
        });
        let until = now + RESERVATION_LIFETIME;
        let port = match (reserved, token) {
            (Some(port), _) => Some(port),
            (None, Some(token)) => self.ports.take_pair(token, until),
            (None, None) => self.take_port(even.is_some()),
        };
        let Some(port) = port else {
            self.ledger.release(quota_key);
            return Err(reject(508, "Insufficient Capacity: no relay port free"));
        };
        if token.is_some() {
            self.timers.push(until, RESERVATIONS, 0);
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let alloc = Allocation {
            generation,
            client,
            username: username.to_owned(),
            quota_key: quota_key.to_owned(),
            transaction: msg.transaction_id(),
            port,
            v4,
            v6,
            expires: now + lifetime,
            pending: Some(PendingAllocate {
                reply: reply.clone(),
                lifetime,
                v6_refused,
                tries: 0,
                token,
            }),
            permissions: Permissions::default(),
            channels: Channels::default(),
            scheduled: None,
            mode: admit.as_ref().map(|a| a.mode),
            admitting: admit.is_some(),
            account: None,
            bytes: 0,
        };
        let (a4, a6) = alloc.relay_addrs(&self.config);
        self.slots[slot] = Some(alloc);
        self.by_client.insert(client, slot);
        self.by_port[(port - self.port_base) as usize] = Some(slot);
        let allocation = AllocationHandle { slot, generation };
        // Admission first (the relay socket is bound once admitted), else bind at once.
        self.commands.push_back(match admit {
            Some(request) => Command::Admit {
                allocation,
                request,
            },
            None => Command::BindRelay {
                allocation,
                v4: a4,
                v6: a6,
            },
        });
        // Expire the allocation even if the driver never reports the bind.
        self.schedule(slot);
        Ok(None)
    }

    /// The central check an Allocate with `username` from `client` needs, or a 403 when its
    /// app may not allocate here (see [`crate::admission`]).
    fn admission_for(
        &self,
        username: &str,
        client: ClientAddr,
    ) -> Result<Option<AdmitRequest>, Reject> {
        let Some(pool) = self.config.admission else {
            return Ok(None);
        };
        let Some(app) = self.auth.app_of(username) else {
            return Ok(None); // the operator's static secret
        };
        let mode = admission::mode_of(pool, client.transport);
        admission::allows(self.access.get(app), mode).map_err(|why| reject(403, why))?;
        let (channel, user) = admission::channel_and_user(username);
        Ok(Some(AdmitRequest {
            app_id: app.to_owned(),
            mode,
            channel: channel.to_owned(),
            user: user.to_owned(),
        }))
    }

    /// RFC 8656 §7.2 step 8 / §7.3: the client's LIFETIME, at least the default, at most the max.
    fn desired_lifetime(&self, requested: Option<Lifetime>) -> Duration {
        let l = self.config.lifetimes;
        match requested {
            Some(r) => Duration::from_secs(r.seconds() as u64)
                .clamp(l.allocation_default, l.allocation_max),
            None => l.allocation_default,
        }
    }

    fn allocate_success(&self, slot: usize, pending: &PendingAllocate) -> Vec<u8> {
        let alloc = self.slots[slot].as_ref().expect("present");
        let tid = pending.reply.transaction;
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Success, ALLOCATE),
            tid,
            MessageWriteVec::new(),
        );
        let (v4, v6) = alloc.relay_addrs(&self.config);
        for a in [v4, v6].into_iter().flatten() {
            let _ = w.add_attribute(&XorRelayedAddress::new(a, tid));
        }
        if pending.v6_refused {
            if let Ok(e) = ErrorCode::new(440, "Address Family not Supported") {
                let _ = w.add_attribute(&AddressErrorCode::new(AddressFamily::IPV6, e));
            }
        }
        if let Some(token) = pending.token {
            let _ = w.add_attribute(&ReservationToken::new(token));
        }
        let _ = w.add_attribute(&Lifetime::new(pending.lifetime.as_secs() as u32));
        let _ = w.add_attribute(&XorMappedAddress::new(alloc.client.remote, tid));
        self.finish(w, &pending.reply)
    }

    /// RFC 8656 §7.3: Refresh; lifetime 0 deletes.
    fn refresh(
        &mut self,
        msg: &Message<'_>,
        slot: usize,
        now: Instant,
        reply: &ReplyAuth,
    ) -> Result<Option<Vec<u8>>, Reject> {
        let alloc = self.slots[slot].as_mut().expect("indexed");
        if let Ok(r) = msg.attribute::<RequestedAddressFamily>() {
            let matches = match r.family() {
                AddressFamily::IPV4 => alloc.v4,
                AddressFamily::IPV6 => alloc.v6,
            };
            if !matches {
                return Err(reject(443, "Peer Address Family Mismatch"));
            }
        }
        let requested = msg.attribute::<Lifetime>().ok();
        let lifetime = if requested.as_ref().is_some_and(|l| l.seconds() == 0) {
            Duration::ZERO
        } else {
            self.desired_lifetime(requested)
        };
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let _ = w.add_attribute(&Lifetime::new(lifetime.as_secs() as u32));
        let data = self.finish(w, reply);
        if lifetime.is_zero() {
            self.delete(slot, DeleteReason::Refreshed0);
        } else {
            let alloc = self.slots[slot].as_mut().expect("indexed");
            alloc.expires = now + lifetime;
            self.schedule(slot);
        }
        Ok(Some(data))
    }

    /// Reads every XOR-PEER-ADDRESS and checks family and policy (RFC 8656 §9.1, §10.2).
    fn checked_peer(
        &self,
        alloc: &Allocation,
        peer: SocketAddr,
        need_port: bool,
    ) -> Result<(), Reject> {
        if !alloc.has_family(peer.ip()) {
            return Err(reject(443, "Peer Address Family Mismatch"));
        }
        let policy = &self.config.peer_policy;
        let ok = if need_port {
            policy.permits(peer.ip(), peer.port())
        } else {
            policy.permits_ip(peer.ip())
        };
        if !ok {
            return Err(reject(403, "Forbidden: peer address not allowed"));
        }
        Ok(())
    }

    /// RFC 8656 §9.2: CreatePermission — all listed peers or none.
    fn create_permission(
        &mut self,
        msg: &Message<'_>,
        slot: usize,
        now: Instant,
        reply: &ReplyAuth,
    ) -> Result<Option<Vec<u8>>, Reject> {
        let tid = msg.transaction_id();
        let mut peers: Vec<IpAddr> = Vec::new();
        let mut n = 0;
        while let Ok(p) = msg.nth_attribute::<XorPeerAddress>(n) {
            peers.push(p.addr(tid).ip());
            n += 1;
        }
        if peers.is_empty() {
            return Err(reject(400, "Bad Request: XOR-PEER-ADDRESS missing"));
        }
        let alloc = self.slots[slot].as_ref().expect("indexed");
        for ip in &peers {
            self.checked_peer(alloc, SocketAddr::new(*ip, 0), false)?;
        }
        if !alloc.permissions.fits(&peers) {
            return Err(reject(508, "Insufficient Capacity: too many permissions"));
        }
        let until = now + self.config.lifetimes.permission;
        let alloc = self.slots[slot].as_mut().expect("indexed");
        for ip in peers {
            alloc.permissions.install(ip, until);
        }
        self.schedule(slot);
        let w = Message::builder_success(msg, MessageWriteVec::new());
        Ok(Some(self.finish(w, reply)))
    }

    /// RFC 8656 §11.2: ChannelBind; also installs or refreshes the peer's permission.
    fn channel_bind(
        &mut self,
        msg: &Message<'_>,
        slot: usize,
        now: Instant,
        reply: &ReplyAuth,
    ) -> Result<Option<Vec<u8>>, Reject> {
        let number = msg
            .attribute::<ChannelNumber>()
            .map_err(|_| reject(400, "Bad Request: CHANNEL-NUMBER missing"))?
            .channel();
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| reject(400, "Bad Request: XOR-PEER-ADDRESS missing"))?
            .addr(msg.transaction_id());
        if !(channel::MIN_CHANNEL..=channel::MAX_CHANNEL).contains(&number) {
            return Err(reject(400, "Bad Request: channel number out of range"));
        }
        let alloc = self.slots[slot].as_ref().expect("indexed");
        // §11.2: a number stays with its peer, and a peer with its number, while bound and for
        // the 5 minutes after expiry.
        if alloc
            .channels
            .by_number(number)
            .is_some_and(|c| c.peer != peer)
        {
            return Err(reject(400, "Bad Request: channel bound to another peer"));
        }
        if alloc
            .channels
            .by_peer(peer)
            .is_some_and(|c| c.number != number)
        {
            return Err(reject(400, "Bad Request: peer bound to another channel"));
        }
        if !alloc.permissions.fits(&[peer.ip()]) {
            return Err(reject(508, "Insufficient Capacity: too many permissions"));
        }
        self.checked_peer(alloc, peer, true)?;
        let l = self.config.lifetimes;
        let alloc = self.slots[slot].as_mut().expect("indexed");
        let expires = now + l.channel;
        let bound = alloc.channels.bind(ChannelBinding {
            number,
            peer,
            expires,
            reserved_until: expires + l.channel_cooldown,
        });
        if !bound {
            return Err(reject(508, "Insufficient Capacity: too many channels"));
        }
        alloc.permissions.install(peer.ip(), now + l.permission);
        self.schedule(slot);
        let w = Message::builder_success(msg, MessageWriteVec::new());
        Ok(Some(self.finish(w, reply)))
    }

    /// RFC 8656 §11.4: a Send indication is relayed if a permission exists; otherwise dropped.
    fn send_indication(
        &mut self,
        msg: &Message<'_>,
        client: ClientAddr,
        now: Instant,
    ) -> Option<Forward> {
        let unknown = msg.iter_attributes().any(|(_, a)| {
            let t = a.get_type();
            t.comprehension_required() && !KNOWN_REQUIRED.contains(&t.value())
        });
        if unknown {
            return None;
        }
        let slot = *self.by_client.get(&client)?;
        let alloc = self.slots[slot].as_ref()?;
        if alloc.pending.is_some() {
            return None;
        }
        let peer = msg
            .attribute::<XorPeerAddress>()
            .ok()?
            .addr(msg.transaction_id());
        let (offset, raw) = msg.raw_attribute_and_offset(AttributeType::new(0x0013))?;
        if !alloc.permitted(peer.ip(), now)
            || !self.config.peer_policy.permits(peer.ip(), peer.port())
        {
            return None;
        }
        let relay = relay_for(alloc, &self.config, peer)?;
        let start = offset + 4;
        if let Some(a) = self.slots[slot].as_mut() {
            a.bytes += raw.value.len() as u64;
        }
        Some(Forward {
            relay,
            peer: PeerAddr(peer),
            range: start..start + raw.value.len(),
        })
    }

    // ---------------------------------------------------------------------------------------
    // Response building (control path: allocating a Vec per response is fine).

    fn error_response(&self, reply: &ReplyAuth, code: u16, reason: &str) -> Vec<u8> {
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Error, reply.method),
            reply.transaction,
            MessageWriteVec::new(),
        );
        let _ = w.add_attribute(&error_code(code, reason));
        self.finish(w, reply)
    }

    fn respond_error(&mut self, client: ClientAddr, reply: &ReplyAuth, code: u16, reason: &str) {
        let data = self.error_response(reply, code, reason);
        self.send_reply(client, reply, data, Some(code));
    }

    /// Queues an answer; one to a request that did not authenticate goes only if it is within
    /// [`REFLECTION_FACTOR`] times the request (else it is dropped and counted).
    fn send_reply(
        &mut self,
        client: ClientAddr,
        reply: &ReplyAuth,
        data: Vec<u8>,
        code: Option<u16>,
    ) {
        if reply.key.is_none() && data.len() > REFLECTION_FACTOR * reply.request_len {
            self.events.push_back(Event::ReflectionSuppressed);
            return;
        }
        if let Some(code) = code {
            self.events.push_back(Event::ErrorSent { code });
        }
        self.transmits.push_back(Transmit { to: client, data });
    }

    fn finish_and_send(
        &mut self,
        w: MessageWriteVec,
        client: ClientAddr,
        reply: &ReplyAuth,
        code: Option<u16>,
    ) {
        let data = self.finish(w, reply);
        self.send_reply(client, reply, data, code);
    }

    /// Adds SOFTWARE (to authenticated answers only: an unauthenticated one stays small and
    /// tells a scanner nothing), the integrity attribute of the request's kind, and
    /// FINGERPRINT if the request had one.
    fn finish(&self, mut w: MessageWriteVec, reply: &ReplyAuth) -> Vec<u8> {
        if let Some(sw) = self
            .config
            .software
            .as_deref()
            .filter(|_| reply.key.is_some())
            .and_then(|s| Software::new(s).ok())
        {
            let _ = w.add_attribute(&sw);
        }
        if let Some((key, kind)) = &reply.key {
            let len = match kind {
                IntegrityKind::Sha1 => 20,
                IntegrityKind::Sha256 => 32,
            };
            let zeros = [0u8; 32];
            let offset = w.len();
            w.push_attribute_unchecked(&RawAttribute::new(
                AttributeType::new(kind.attribute_type()),
                &zeros[..len],
            ));
            let mac = integrity::compute(*kind, key, w.data(), offset, len);
            w.mut_data()[offset + 4..offset + 4 + len].copy_from_slice(&mac[..len]);
        }
        if reply.fingerprint {
            let _ = w.add_fingerprint();
        }
        w.finish()
    }
}

/// The reason phrase of a 401 for a refused credential. It names the app whose key was tried
/// (from the username the client sent), so an app developer sees which app and why; it reveals
/// nothing about the secret.
fn refusal(app: Option<&str>, why: &str) -> String {
    let mut r = match app {
        Some(app) => format!("Unauthorized: app '{app}': {why}"),
        None => format!("Unauthorized: {why}"),
    };
    // STUN reason phrases are at most 128 characters (RFC 8489 §14.8).
    r.truncate(r.char_indices().nth(127).map_or(r.len(), |(i, _)| i));
    r
}

fn error_code(code: u16, reason: &str) -> ErrorCode {
    ErrorCode::new(code, reason)
        .unwrap_or_else(|_| ErrorCode::new(500, "Server Error").expect("valid"))
}

fn password_algorithms() -> PasswordAlgorithms {
    PasswordAlgorithms::new(&[PasswordAlgorithmValue::MD5, PasswordAlgorithmValue::SHA256])
}

/// The relayed address of the allocation in the peer's family.
fn relay_for(alloc: &Allocation, cfg: &ServerConfig, peer: SocketAddr) -> Option<RelayAddr> {
    let (v4, v6) = alloc.relay_addrs(cfg);
    match peer {
        SocketAddr::V4(_) => v4,
        SocketAddr::V6(_) => v6,
    }
    .map(RelayAddr)
}

/// Writes a Data indication header in front of `buf[HEADROOM..HEADROOM + len]` and pads the
/// DATA attribute; returns the range of the whole message.
fn write_data_indication(
    buf: &mut [u8],
    peer: SocketAddr,
    len: usize,
    tid: [u8; 12],
) -> Range<usize> {
    const COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();
    let addr_len = match peer {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    };
    let pad = channel::stream_padding(len);
    let start = HEADROOM - (20 + 4 + addr_len + 4);
    let body = 4 + addr_len + 4 + len + pad;
    let h = &mut buf[start..];
    // Data indication: method 0x007, class indication (RFC 8656 §18).
    h[..2].copy_from_slice(&0x0017u16.to_be_bytes());
    h[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    h[4..8].copy_from_slice(&COOKIE);
    h[8..20].copy_from_slice(&tid);
    // XOR-PEER-ADDRESS (RFC 8656 §18.3, encoded as XOR-MAPPED-ADDRESS, RFC 8489 §14.2)
    h[20..22].copy_from_slice(&0x0012u16.to_be_bytes());
    h[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    h[24] = 0;
    h[26..28].copy_from_slice(&(peer.port() ^ 0x2112).to_be_bytes());
    match peer.ip() {
        IpAddr::V4(ip) => {
            h[25] = 1;
            for (i, b) in ip.octets().iter().enumerate() {
                h[28 + i] = b ^ COOKIE[i];
            }
        }
        IpAddr::V6(ip) => {
            h[25] = 2;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&COOKIE);
            mask[4..].copy_from_slice(&tid);
            for (i, b) in ip.octets().iter().enumerate() {
                h[28 + i] = b ^ mask[i];
            }
        }
    }
    let d = 24 + addr_len;
    h[d..d + 2].copy_from_slice(&0x0013u16.to_be_bytes());
    h[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
    let end = HEADROOM + len;
    buf[end..end + pad].fill(0);
    start..end + pad
}
