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
use crate::grants::{ChannelBinding, Channels, Permissions};
use crate::integrity::{self, IntegrityKind, KeyAlgorithm, LongTermKey};
use crate::policy::PeerPolicy;
use crate::ports::{ClaimError, RelayPorts};
use crate::timer::TimerQueue;

mod allocation;
mod authenticate;
mod contract;
mod ledger;
mod methods;
mod response;
mod signal;

use allocation::{relay_for, Allocation, PendingAllocate};
pub use contract::{
    AllocationHandle, AuthFailure, BoundChannel, ClientInput, Command, DeleteReason, Event,
    Forward, Transmit,
};
pub use ledger::{AllocationLedger, LocalLedger, QuotaExceeded, Shared};
use response::{error_code, password_algorithms, refusal};
use signal::PendingSignal;
pub use signal::{SignalHandle, ATTR_SIGNAL_PATH, MAX_SIGNAL_BODY, MAX_SIGNAL_PATH, SIGNAL};

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

    /// The configuration this server runs with (limits, realm, policies).
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
        let events = self.config.channel_events;
        for a in self.slots.iter_mut().flatten() {
            revoked += a.permissions.revoke(|ip| !peer_policy.permits_ip(ip));
            let owner = a.channel_owner(&self.config);
            let queue = &mut self.events;
            revoked += a.channels.stop(
                |peer| !peer_policy.permits(peer.ip(), peer.port()),
                now,
                |b| {
                    if events {
                        queue.extend(owner.ended(b));
                    }
                },
            );
            // A live binding whose peer lost its permission relays nothing either.
            if events {
                let orphaned = a
                    .channels
                    .iter()
                    .filter(|b| b.expires > now && a.permissions.until(b.peer.ip()).is_none());
                queue.extend(orphaned.filter_map(|b| owner.ended(b)));
            }
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
                let Some(alloc) = self.release_slot(handle.slot) else {
                    return false;
                };
                if let Some(pending) = alloc.pending {
                    self.respond_error(alloc.client, &pending.reply, code, &reason);
                }
            }
        }
        true
    }

    fn unix(&self, now: Instant) -> u64 {
        self.anchor_unix + now.saturating_duration_since(self.anchor).as_secs()
    }

    /// The next STUN message to send, if any; the driver calls it until `None` after each input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next side effect (bind, close, admit, signal) for the driver to carry out, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next event for metrics and logs, if any.
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
            let (on, owner) = (
                self.config.channel_events,
                alloc.channel_owner(&self.config),
            );
            let events = &mut self.events;
            alloc.channels.expire(now, |b| {
                if on {
                    events.extend(owner.ended(b));
                }
            });
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

    /// With [`ServerConfig::channel_events`]: says until when each live binding of `slot`
    /// toward `ip` relays (after a ChannelBind or a CreatePermission moved it).
    fn channels_usable(&mut self, slot: usize, ip: IpAddr, now: Instant) {
        if !self.config.channel_events {
            return;
        }
        let Some(alloc) = self.slots[slot].as_ref() else {
            return;
        };
        let Some(permitted) = alloc.permissions.until(ip) else {
            return;
        };
        let owner = alloc.channel_owner(&self.config);
        let usable = alloc
            .channels
            .iter()
            .filter(|b| b.peer.ip() == ip && b.expires > now)
            .filter_map(|b| owner.usable(b, b.expires.min(permitted)));
        self.events.extend(usable);
    }

    /// Frees `slot` and what its allocation holds in the tables, the port pool and the ledger.
    /// Returns the allocation for the caller's last word (events, an error response). The one
    /// place an allocation ends.
    fn release_slot(&mut self, slot: usize) -> Option<Allocation> {
        let alloc = self.slots.get_mut(slot)?.take()?;
        self.free_slots.push(slot);
        self.by_client.remove(&alloc.client);
        self.by_port[(alloc.port - self.port_base) as usize] = None;
        self.ports.give(alloc.port);
        self.ledger.release(&alloc.quota_key);
        Some(alloc)
    }

    fn delete(&mut self, slot: usize, reason: DeleteReason) {
        let Some(alloc) = self.release_slot(slot) else {
            return;
        };
        if self.config.channel_events {
            let owner = alloc.channel_owner(&self.config);
            let ended = alloc.channels.iter().filter_map(|b| owner.ended(b));
            self.events.extend(ended);
        }
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
        // The port was taken by someone else: try another one a few times (a port other than
        // the one that failed: it is still ours while we pick), then 508.
        let tries = alloc.pending.as_ref().map_or(0, |p| p.tries);
        let next = if tries < 4 {
            self.take_port(false)
        } else {
            None
        };
        let Some(port) = next else {
            let Some(alloc) = self.release_slot(handle.slot) else {
                return;
            };
            let Some(pending) = alloc.pending else {
                return;
            };
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
        let start = self.port_base;
        let Some(alloc) = self.slots[handle.slot].as_mut() else {
            return;
        };
        let old_port = alloc.port;
        self.by_port[(old_port - start) as usize] = None;
        self.ports.give(old_port);
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
        let who = match self.authenticate(msg, client, now, &mut reply) {
            Ok(who) => who,
            Err(()) => return,
        };
        let existing = self.by_client.get(&client).copied();
        if let Some(slot) = existing {
            let alloc = self.slots[slot].as_ref().expect("indexed");
            // RFC 8656 §5: requests on an allocation must use the username that created it.
            if alloc.username != who.username {
                self.respond_error(client, &reply, 441, "Wrong Credentials");
                return;
            }
        }
        let result = if method == ALLOCATE {
            self.allocate(
                msg,
                client,
                now,
                &reply,
                existing,
                &who.username,
                &who.quota_key,
            )
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
                Some(slot) if method == REFRESH => self.refresh(msg, slot, now, &reply),
                Some(slot) => {
                    // Parse (400s) first, then apply to the allocation.
                    let done = if method == CREATE_PERMISSION {
                        Self::permission_peers(msg)
                            .and_then(|peers| self.create_permission(slot, peers, now))
                    } else {
                        Self::channel_to_bind(msg)
                            .and_then(|(number, peer)| self.channel_bind(slot, number, peer, now))
                    };
                    done.map(|()| {
                        let w = Message::builder_success(msg, MessageWriteVec::new());
                        Some(self.finish(w, &reply))
                    })
                }
            }
        };
        match result {
            Ok(Some(data)) => self.transmits.push_back(Transmit { to: client, data }),
            Ok(None) => {}
            Err(r) => self.respond_error(client, &reply, r.code, r.reason),
        }
    }
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
