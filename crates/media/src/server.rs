//! The sans-IO media service: channels of members, forwarding, keepalive timers, limits.
//!
//! This file is [`MediaServer`]'s: one type owns the service's state (members, channels,
//! timers, join rates, cookies), and its methods are the rules below, so they stay together
//! past 900 lines. The vocabulary it speaks (endpoints, transmits, browser admission) is in
//! [`crate::endpoint`].
//!
//! No sockets, no clock. Time comes in as `now: Instant`; token expiry is checked against
//! `anchor_unix + (now - anchor)`, so a virtual clock moves both. Output goes to a sink the
//! driver passes to each call, as [`Transmit`]s borrowing either the driver's receive buffer
//! (forwarded media) or one reply buffer the server reuses: nothing is allocated per packet.
//!
//! ## Rules
//!
//! * Members are keyed by source address, and there is at most one per `(channel, uid)`.
//! * Joining takes two JOINs (the wire's return-routability round trip, see [`crate::wire`]):
//!   1. JOIN from a source over its JOIN rate, or for a token identity over its rate, is dropped
//!      without reply (counted in [`Stats::rate_limited`], warned at most every 10 s).
//!   2. A token that does not verify gets 401, as before.
//!   3. A JOIN without a cookie, or with one that does not verify for this source, gets a
//!      CHALLENGE and changes nothing: no state is kept between the two JOINs.
//!   4. A JOIN with a valid cookie joins, and gets JOINED.
//! * The cookie is stateless, like a TCP SYN cookie or a QUIC Retry token: the first
//!   [`COOKIE_LEN`](wire::COOKIE_LEN) bytes of HMAC-SHA256(per-process key, time slot, source
//!   address, token). The token names app, channel and uid (and its expiry), so a cookie is good
//!   for one identity at one address. A slot is [`COOKIE_SLOT`]; the current and the previous
//!   slot's cookies verify, so a cookie lives 10 to 20 s: plenty for one round trip, too short to
//!   hoard. The key is drawn from the rng given to [`MediaServer::new`] (seeded in tests).
//! * A validated JOIN for a `(channel, uid)` that is a member at another address replaces that
//!   membership, as a reconnect does: a token fills at most one seat, whatever number of source
//!   ports it is sent from. The old address is not told; its next DATA or PING gets 404.
//! * A JOIN from a joined address re-joins (possibly another channel); state is unchanged if
//!   the re-join is refused.
//! * JOIN rate limits ([`Limits::joins_per_source`], [`Limits::joins_per_token`]) count every
//!   JOIN, both round trips. The source is the whole address, port included: through a TURN
//!   relay every client shares the relay's IP. Their memory is fixed (see `ratelimit.rs`).
//! * DATA goes to every other member of the sender's `(app id, channel)`, and back to the
//!   sender if it joined with the echo flag. DATA or PING keep a member in; after
//!   [`Limits::member_timeout`] of silence, or on LEAVE, it is out.
//! * The token authorizes the join; a member is not removed when its token expires later.
//! * An ERROR reply is at most [`AMPLIFICATION_FACTOR`] times the size of the datagram that
//!   caused it (its message is cut to fit, or nothing is sent): the anti-amplification limit of
//!   QUIC (RFC 9000 §8), so spoofed sources cannot make the service a useful reflector. Other
//!   replies are no larger than their request (PONG, LEFT, CHALLENGE) or answer a JOIN that
//!   proved its address (JOINED). Datagrams of unknown or service-to-client types are dropped
//!   without reply, so two services cannot be made to talk to each other in a loop.
//! * Browser members (the WebRTC endpoint's sessions, [`SessionId`]) are members of the same
//!   channels: [`MediaServer::join_web`] admits one at its POST (the token checks and limits
//!   of JOIN, and the token identity's rate; no cookie: the session's ICE and DTLS prove the
//!   path), [`MediaServer::handle_web`] takes its data-channel messages as datagrams. A
//!   browser's POST is refused (409) while its seat is held by a live member, where a UDP
//!   JOIN takes the seat over; DATA goes to members of both kinds alike. A browser stays in
//!   while any datagram of its connection arrives ([`MediaServer::touch_web`]).
//! * Timers are data: each member has `last_seen`; one min-heap holds one entry per member,
//!   re-armed lazily when popped, and is rebuilt when stale entries pile up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_proto::auth::Authenticator;
use cloudproxy_proto::token::{self, VerifyError};
use cloudproxy_proto::{AppKey, AuthConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::channels::Channels;
use crate::endpoint::address_bytes;
pub use crate::endpoint::{
    BadSessionId, Endpoint, MemberKey, SessionId, Transmit, WebJoin, WebRefusal,
};
pub use crate::ratelimit::JoinRate;
use crate::ratelimit::RateTable;
use crate::wire::{self, decode, Cookie, ErrorCode, Packet, WireError, HEADROOM};

/// An ERROR reply is at most this many times the size of the datagram it answers.
pub const AMPLIFICATION_FACTOR: usize = 3;

/// The time slot of a JOIN cookie: a cookie verifies in its slot and the next.
pub const COOKIE_SLOT: Duration = Duration::from_secs(10);

/// Rate-limited JOINs are warned about at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How much the service holds at most, and how long a silent member stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A member that sends neither DATA nor PING for this long is removed. Default 15 s.
    pub member_timeout: Duration,
    /// Channels at once (503 beyond). Default 10 000.
    pub max_channels: usize,
    /// Members of one channel (503 beyond). Default 100.
    pub max_members_per_channel: usize,
    /// Members in all channels (503 beyond). Default 100 000.
    pub max_members: usize,
    /// JOINs from one source address (IP and port). Default 10 at once, then 5/s: a join
    /// takes two, and a client that hears nothing resends.
    pub joins_per_source: JoinRate,
    /// JOINs with one token identity (app, channel, uid), from any address. Default 20 at once,
    /// then 10/s (a race of candidate paths sends one per candidate).
    pub joins_per_token: JoinRate,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            member_timeout: Duration::from_secs(15),
            max_channels: 10_000,
            max_members_per_channel: 100,
            max_members: 100_000,
            joins_per_source: JoinRate::per_second(5, 10),
            joins_per_token: JoinRate::per_second(10, 20),
        }
    }
}

/// Counters since start, and the current sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Members now, UDP and browser.
    pub members: usize,
    /// Channels open now.
    pub channels: usize,
    /// JOINs answered with JOINED (re-joins included).
    pub joins: u64,
    /// JOINs answered with CHALLENGE (no cookie, or one that did not verify).
    pub challenges: u64,
    /// Of those, JOINs whose cookie did not verify (stale, or from another address or token).
    pub bad_cookies: u64,
    /// Memberships replaced by a validated JOIN of the same `(channel, uid)` from elsewhere.
    pub replaced: u64,
    /// JOINs dropped by the per-source or per-token rate limit.
    pub rate_limited: u64,
    /// ERROR replies sent.
    pub errors: u64,
    /// FORWARDED datagrams handed to the sink.
    pub forwarded: u64,
    /// Datagrams dropped without reply (unknown type, service-to-client type, no room for an
    /// error reply).
    pub dropped: u64,
    /// Members removed by the timeout.
    pub timeouts: u64,
}

#[derive(Debug)]
struct Member {
    uid: u32,
    echo: bool,
    channel: usize,
    last_seen: Instant,
    /// Tells this member's timer entry from a previous member's at the same address.
    generation: u64,
}

/// The media service of one event loop.
#[derive(Debug)]
pub struct MediaServer {
    auth: Authenticator,
    limits: Limits,
    anchor: Instant,
    anchor_unix: u64,
    members: HashMap<MemberKey, Member>,
    /// `(channel slot, uid)` -> the member's address: one member per identity.
    by_identity: HashMap<(usize, u32), MemberKey>,
    channels: Channels,
    /// Keyed with the per-process cookie key; cloned per cookie.
    cookie_mac: Hmac<Sha256>,
    source_rate: RateTable,
    token_rate: RateTable,
    /// When rate-limited JOINs were last warned about, and how many since.
    last_warning: Option<Instant>,
    limited_since_warning: u64,
    timers: BinaryHeap<Reverse<(Instant, u64, MemberKey)>>,
    next_generation: u64,
    /// Browser members the core removed on its own (timed out, seat taken by a UDP JOIN),
    /// whose sessions the WebRTC side is yet to end: see
    /// [`next_removed_web`](Self::next_removed_web). Kept, so no allocation once warmed.
    removed_web: Vec<SessionId>,
    /// Reused for every reply, error text and channel-key lookup.
    reply: Vec<u8>,
    text: String,
    key: String,
    stats: Stats,
}

impl MediaServer {
    /// Only `auth.app_keys` authenticate: a static-secret credential has no app id.
    /// `now`/`now_unix` anchor the wall clock. `rng` draws the per-process keys of the JOIN
    /// cookies and of the rate limits' hashes (a seeded one makes tests deterministic).
    pub fn new(
        auth: &AuthConfig,
        limits: Limits,
        now: Instant,
        now_unix: u64,
        rng: &mut impl rand::RngCore,
    ) -> Self {
        let mut key = || {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            k
        };
        let cookie_key = key();
        let (source_key, token_key) = (key(), key());
        Self {
            auth: Authenticator::new(auth),
            limits,
            anchor: now,
            anchor_unix: now_unix,
            members: HashMap::new(),
            by_identity: HashMap::new(),
            channels: Channels::default(),
            cookie_mac: Hmac::new_from_slice(&cookie_key).expect("HMAC takes any key length"),
            source_rate: RateTable::new(limits.joins_per_source, &source_key),
            token_rate: RateTable::new(limits.joins_per_token, &token_key),
            last_warning: None,
            limited_since_warning: 0,
            timers: BinaryHeap::new(),
            next_generation: 0,
            removed_web: Vec::new(),
            reply: Vec::with_capacity(256),
            text: String::with_capacity(128),
            key: String::with_capacity(130),
            stats: Stats::default(),
        }
    }

    /// Replaces the application keys (rotation, control-plane sync). Members stay.
    pub fn set_app_keys(&mut self, keys: &[AppKey]) {
        self.auth.set_app_keys(keys);
    }

    /// The limits this server enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counters since start and the current member and channel counts.
    pub fn stats(&self) -> Stats {
        Stats {
            members: self.members.len(),
            channels: self.channels.len(),
            ..self.stats
        }
    }

    /// Whether `remote` is a member of some channel.
    pub fn is_member(&self, remote: SocketAddr) -> bool {
        self.members.contains_key(&MemberKey::Udp(remote))
    }

    /// Whether browser session `id` is a member of some channel.
    pub fn is_web_member(&self, id: SessionId) -> bool {
        self.members.contains_key(&MemberKey::Web(id))
    }

    /// The browser sessions of `id`'s channel, `id` included, in the channel's member order;
    /// none if `id` is not a member.
    pub fn web_members(&self, id: SessionId) -> impl Iterator<Item = SessionId> + '_ {
        let channel = self.members.get(&MemberKey::Web(id)).map(|m| m.channel);
        channel
            .map(|c| self.channels.members(c))
            .unwrap_or(&[])
            .iter()
            .filter_map(|e| match *e {
                Endpoint::Web(s) => Some(s),
                Endpoint::Udp { .. } => None,
            })
    }

    /// Members of `channel` of `app_id`.
    pub fn channel_size(&self, app_id: &str, channel: &str) -> usize {
        self.channels
            .find(&format!("{app_id}/{channel}"))
            .map_or(0, |i| self.channels.members(i).len())
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if any member exists.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes members silent for [`Limits::member_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, generation, remote))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(m) = self.members.get(&remote) else {
                continue;
            };
            if m.generation != generation {
                continue;
            }
            let due = m.last_seen + self.limits.member_timeout;
            if due <= now {
                self.remove_member(remote);
                self.removed_by_core(remote);
                self.stats.timeouts += 1;
                tracing::debug!(?remote, "member timed out");
            } else {
                self.timers.push(Reverse((due, generation, remote)));
            }
        }
    }

    /// Handles one datagram from `from`, received on the listener bound to `local`.
    ///
    /// `buf[..HEADROOM]` is scratch space and the datagram is `buf[HEADROOM..]`: DATA is turned
    /// into FORWARDED in place and handed to `out` once per recipient.
    pub fn handle(
        &mut self,
        buf: &mut [u8],
        local: SocketAddr,
        from: SocketAddr,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let Some(datagram) = buf.get(HEADROOM..) else {
            return;
        };
        let len = datagram.len();
        let reply_to = Endpoint::Udp {
            remote: from,
            local,
        };
        match decode(datagram) {
            Ok(Packet::Data {
                seq, sent_micros, ..
            }) => self.on_data(buf, reply_to, seq, sent_micros, now, out),
            Ok(Packet::Join {
                echo,
                token,
                cookie,
            }) => {
                self.on_join(token, echo, cookie, reply_to, len, now, out);
            }
            Ok(Packet::Ping(t)) => self.on_ping(reply_to, t, len, now, out),
            Ok(Packet::Leave) => {
                if self.remove_member(reply_to.key()).is_some() {
                    tracing::debug!(remote = %from, "member left");
                }
                self.send(reply_to, Packet::Left, out);
            }
            Ok(
                Packet::Joined { .. }
                | Packet::Error { .. }
                | Packet::Forwarded { .. }
                | Packet::Pong(_)
                | Packet::Left
                | Packet::Challenge(_),
            )
            | Err(WireError::Empty | WireError::UnknownType(_)) => self.stats.dropped += 1,
            Err(_)
                if !matches!(
                    buf[HEADROOM],
                    wire::JOIN | wire::DATA | wire::PING | wire::LEAVE
                ) =>
            {
                self.stats.dropped += 1;
            }
            Err(e) => {
                self.text.clear();
                let _ = write!(self.text, "malformed packet: {e}");
                self.send_error(reply_to, ErrorCode::MALFORMED, false, "", len, out);
            }
        }
    }

    /// A browser session whose member [`handle`](Self::handle) or
    /// [`handle_timeout`](Self::handle_timeout) removed (a UDP JOIN took its seat, or it timed
    /// out), taken off the list: the caller ends the session, then asks again until `None`.
    /// A browser's own leaving (LEAVE, [`leave_web`](Self::leave_web)) is not listed.
    pub fn next_removed_web(&mut self) -> Option<SessionId> {
        self.removed_web.pop()
    }

    /// Admits browser session `id` (the WebRTC endpoint's POST) with `token`: it becomes a
    /// member at once, so the seat is held while ICE and DTLS connect. Unlike a UDP JOIN,
    /// which takes the seat over (a client reconnecting from a new port), a seat held by a live
    /// member is refused: a browser's session URL is what it leaves with, and a second tab with
    /// the same token must not silently evict the first. Limits as for JOIN.
    pub fn join_web(
        &mut self,
        id: SessionId,
        token: &str,
        echo: bool,
        now: Instant,
    ) -> Result<WebJoin, WebRefusal> {
        let since_start = now.saturating_duration_since(self.anchor);
        let now_us = u64::try_from(since_start.as_micros()).unwrap_or(u64::MAX);
        let claims = match self.verify(token, since_start) {
            Ok(c) => c,
            Err(e) if matches!(e.reason, token::VerifyReason::UnknownApp) => {
                return Err(WebRefusal::AppNotAllowed(e.to_string()))
            }
            Err(e) => return Err(WebRefusal::Unauthorized(e.to_string())),
        };
        if !self.token_rate_allows(&claims, now_us) {
            self.rate_limited(MemberKey::Web(id), "token", now);
            return Err(WebRefusal::RateLimited);
        }
        let target = self.channels.find(&self.key);
        if let Some(holder) = target.and_then(|t| self.by_identity.get(&(t, claims.uid))) {
            if *holder != MemberKey::Web(id) {
                return Err(WebRefusal::SeatTaken(format!(
                    "uid {} already holds a seat in channel '{}' of app '{}'",
                    claims.uid, claims.channel, claims.app_id
                )));
            }
        }
        if self.members.contains_key(&MemberKey::Web(id)) {
            return Err(WebRefusal::SeatTaken("session already joined".into()));
        }
        if self.members.len() >= self.limits.max_members {
            let max = self.limits.max_members;
            return Err(WebRefusal::Full(format!("service full ({max} members)")));
        }
        match target {
            Some(t) if self.channels.members(t).len() >= self.limits.max_members_per_channel => {
                let size = self.channels.members(t).len();
                return Err(WebRefusal::Full(format!(
                    "channel '{}' of app '{}' is full ({size} members)",
                    claims.channel, claims.app_id
                )));
            }
            None if self.channels.len() >= self.limits.max_channels => {
                let max = self.limits.max_channels;
                return Err(WebRefusal::Full(format!("service full ({max} channels)")));
            }
            _ => {}
        }
        let members = self.insert_member(Endpoint::Web(id), claims.uid, echo, now);
        tracing::debug!(session = %id, key = %self.key, uid = claims.uid, "browser joined");
        Ok(WebJoin {
            uid: claims.uid,
            members,
        })
    }

    /// Sends JOINED to browser session `id` (when its data channel opens). `seen` is the
    /// remote address its ICE agent selected: through a TURN relay, the relayed address.
    pub fn web_joined(
        &mut self,
        id: SessionId,
        seen: SocketAddr,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let Some(m) = self.members.get(&MemberKey::Web(id)) else {
            return;
        };
        let (uid, channel) = (m.uid, m.channel);
        let members = self.channels.members(channel).len();
        self.joined(Endpoint::Web(id), seen, uid, members, out);
    }

    /// Handles one data-channel message of browser session `id`, laid out as for
    /// [`handle`](Self::handle): `buf[..HEADROOM]` scratch, the message behind it. DATA, PING
    /// and LEAVE as over UDP; a JOIN is refused (a browser joins by its POST).
    pub fn handle_web(
        &mut self,
        id: SessionId,
        buf: &mut [u8],
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let Some(datagram) = buf.get(HEADROOM..) else {
            return;
        };
        let len = datagram.len();
        let from = Endpoint::Web(id);
        match decode(datagram) {
            Ok(Packet::Data {
                seq, sent_micros, ..
            }) => self.on_data(buf, from, seq, sent_micros, now, out),
            Ok(Packet::Ping(t)) => self.on_ping(from, t, len, now, out),
            Ok(Packet::Leave) => {
                self.remove_member(from.key());
                self.send(from, Packet::Left, out);
            }
            Ok(Packet::Join { .. }) => {
                self.text.clear();
                self.text
                    .push_str("a browser joins by its WHIP POST, not by JOIN");
                self.send_error(from, ErrorCode::MALFORMED, false, "", len.max(64), out);
            }
            Ok(_) | Err(WireError::Empty | WireError::UnknownType(_)) => self.stats.dropped += 1,
            Err(e) => {
                self.text.clear();
                let _ = write!(self.text, "malformed packet: {e}");
                // The data channel is an authenticated path: no amplification to guard against.
                self.send_error(from, ErrorCode::MALFORMED, false, "", len.max(64), out);
            }
        }
    }

    /// Browser session `id` showed it is alive (any datagram of its ICE/DTLS/SCTP
    /// connection): its member timer starts again.
    pub fn touch_web(&mut self, id: SessionId, now: Instant) {
        if let Some(m) = self.members.get_mut(&MemberKey::Web(id)) {
            m.last_seen = now;
        }
    }

    /// Takes browser session `id` out of its channel (DELETE, or its connection ended):
    /// whether it was a member.
    pub fn leave_web(&mut self, id: SessionId) -> bool {
        self.remove_member(MemberKey::Web(id)).is_some()
    }

    fn on_data(
        &mut self,
        buf: &mut [u8],
        from: Endpoint,
        seq: u32,
        sent_micros: u64,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let Some(m) = self.members.get_mut(&from.key()) else {
            let len = buf.len() - HEADROOM;
            return self.not_joined(from, len, out);
        };
        m.last_seen = now;
        let (uid, echo) = (m.uid, m.echo);
        if wire::write_forwarded_header(buf, uid, seq, sent_micros).is_err() {
            return;
        }
        for r in self.channels.members(m.channel) {
            if *r != from || echo {
                out(Transmit { to: *r, bytes: buf });
                self.stats.forwarded += 1;
            }
        }
    }

    /// PING from a member: it is alive, and gets its PONG; from anyone else, 404.
    fn on_ping(
        &mut self,
        from: Endpoint,
        t: u64,
        request_len: usize,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        match self.members.get_mut(&from.key()) {
            Some(m) => {
                m.last_seen = now;
                self.send(from, Packet::Pong(t), out);
            }
            None => self.not_joined(from, request_len, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_join(
        &mut self,
        token: &str,
        echo: bool,
        cookie: Option<Cookie>,
        from: Endpoint,
        request_len: usize,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let since_start = now.saturating_duration_since(self.anchor);
        let now_us = u64::try_from(since_start.as_micros()).unwrap_or(u64::MAX);
        let Endpoint::Udp { remote, .. } = from else {
            return;
        };
        let mut source = [0u8; 19];
        let source = address_bytes(remote, &mut source);
        if !self.source_rate.allow(&[source], now_us) {
            return self.rate_limited(from.key(), "source", now);
        }
        let claims = match self.verify(token, since_start) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%remote, "join refused: {e}");
                self.text.clear();
                let _ = write!(self.text, "{e}");
                let app = e.app_id.unwrap_or("");
                return self.send_error(
                    from,
                    ErrorCode::UNAUTHORIZED,
                    false,
                    app,
                    request_len,
                    out,
                );
            }
        };
        if !self.token_rate_allows(&claims, now_us) {
            return self.rate_limited(from.key(), "token", now);
        }

        // Return routability: only a JOIN echoing this address's cookie goes further.
        let slot = since_start.as_secs() / COOKIE_SLOT.as_secs();
        let valid = cookie.is_some_and(|c| {
            self.cookie_verifies(&c, slot, source, token)
                || (slot > 0 && self.cookie_verifies(&c, slot - 1, source, token))
        });
        if !valid {
            self.stats.challenges += 1;
            self.stats.bad_cookies += u64::from(cookie.is_some());
            // Never more bytes back than came in (a JOIN with a token is always larger).
            if request_len >= wire::CHALLENGE_LEN {
                let c = self.cookie(slot, source, token);
                self.send(from, Packet::Challenge(c), out);
            }
            return;
        }

        let target = self.channels.find(&self.key);
        let existing = self.members.get(&from.key()).map(|m| m.channel);
        // The same identity joined from elsewhere: this JOIN takes its seat.
        let replaced = target
            .and_then(|t| self.by_identity.get(&(t, claims.uid)).copied())
            .filter(|a| *a != from.key());

        if existing.is_some() && existing == target {
            if let Some(old) = replaced {
                self.replace(old);
            }
            return self.rejoin_same_channel(from, claims.uid, echo, now, out);
        }
        // Would the re-joining member's old channel disappear (freeing a channel slot)?
        let frees_one = existing.is_some_and(|c| self.channels.members(c).len() == 1);
        self.text.clear();
        if existing.is_none() && replaced.is_none() && self.members.len() >= self.limits.max_members
        {
            let _ = write!(
                self.text,
                "service full ({} members)",
                self.limits.max_members
            );
        } else if let Some(t) = target {
            let size = self.channels.members(t).len();
            if size - usize::from(replaced.is_some()) >= self.limits.max_members_per_channel {
                let _ = write!(
                    self.text,
                    "channel '{}' of app '{}' is full ({size} members)",
                    claims.channel, claims.app_id
                );
            }
        } else if self.channels.len() - usize::from(frees_one) >= self.limits.max_channels {
            let max = self.limits.max_channels;
            let _ = write!(self.text, "service full ({max} channels)");
        }
        if !self.text.is_empty() {
            return self.send_error(from, ErrorCode::FULL, true, claims.app_id, request_len, out);
        }

        if let Some(old) = replaced {
            self.replace(old);
        }
        let members = self.insert_member(from, claims.uid, echo, now);
        tracing::debug!(%remote, key = %self.key, uid = claims.uid, "joined");
        self.joined(from, remote, claims.uid, members, out);
    }

    /// Makes `at` a member of the channel named `self.key` (leaving any channel it was in):
    /// the channel's member count.
    fn insert_member(&mut self, at: Endpoint, uid: u32, echo: bool, now: Instant) -> usize {
        let key = at.key();
        let generation = match self.remove_member(key) {
            Some(old) => old.generation,
            None => {
                self.next_generation += 1;
                let due = now + self.limits.member_timeout;
                self.timers.push(Reverse((due, self.next_generation, key)));
                self.next_generation
            }
        };
        let (channel, members) = self.channels.join(&self.key, at);
        let member = Member {
            uid,
            echo,
            channel,
            last_seen: now,
            generation,
        };
        self.members.insert(key, member);
        self.by_identity.insert((channel, uid), key);
        members
    }

    /// The claims of an encoded `token`, its expiry checked against the anchored wall clock
    /// `since_start` after the anchor.
    fn verify<'t>(
        &self,
        token: &'t str,
        since_start: Duration,
    ) -> Result<token::Claims<'t>, VerifyError<'t>> {
        let now_unix = self.anchor_unix + since_start.as_secs();
        token::verify_encoded(&self.auth, token, now_unix)
    }

    /// Counts a JOIN against its token identity's (app, channel, uid) rate. Leaves the
    /// identity's channel key (`app/channel`) in `self.key` for the caller's lookups.
    fn token_rate_allows(&mut self, claims: &token::Claims<'_>, now_us: u64) -> bool {
        self.key.clear();
        let _ = write!(self.key, "{}/{}", claims.app_id, claims.channel);
        let uid = claims.uid.to_be_bytes();
        self.token_rate.allow(&[self.key.as_bytes(), &uid], now_us)
    }

    /// The cookie for `source` and `token` in time slot `slot`.
    fn cookie(&self, slot: u64, source: &[u8], token: &str) -> Cookie {
        let tag = self.cookie_tag(slot, source, token).finalize().into_bytes();
        let mut c = [0u8; wire::COOKIE_LEN];
        c.copy_from_slice(&tag[..wire::COOKIE_LEN]);
        c
    }

    /// Whether `cookie` is the one of slot `slot` (compared in constant time).
    fn cookie_verifies(&self, cookie: &Cookie, slot: u64, source: &[u8], token: &str) -> bool {
        self.cookie_tag(slot, source, token)
            .verify_truncated_left(cookie)
            .is_ok()
    }

    fn cookie_tag(&self, slot: u64, source: &[u8], token: &str) -> Hmac<Sha256> {
        let mut mac = self.cookie_mac.clone();
        mac.update(&slot.to_be_bytes());
        mac.update(source);
        mac.update(token.as_bytes());
        mac
    }

    fn replace(&mut self, old: MemberKey) {
        self.remove_member(old);
        self.removed_by_core(old);
        self.stats.replaced += 1;
        tracing::debug!(?old, key = %self.key, "membership replaced by a join from elsewhere");
    }

    fn removed_by_core(&mut self, member: MemberKey) {
        if let MemberKey::Web(id) = member {
            self.removed_web.push(id);
        }
    }

    fn rate_limited(&mut self, remote: MemberKey, limit: &'static str, now: Instant) {
        self.stats.rate_limited += 1;
        self.limited_since_warning += 1;
        tracing::debug!(?remote, limit, "join rate-limited");
        if self
            .last_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY)
        {
            tracing::warn!(
                dropped = self.limited_since_warning,
                last_source = ?remote,
                last_limit = limit,
                "JOINs over the rate limit dropped"
            );
            self.last_warning = Some(now);
            self.limited_since_warning = 0;
        }
    }

    fn rejoin_same_channel(
        &mut self,
        from: Endpoint,
        uid: u32,
        echo: bool,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let key = from.key();
        let Endpoint::Udp { remote, .. } = from else {
            return;
        };
        let Some(m) = self.members.get_mut(&key) else {
            return;
        };
        if m.uid != uid {
            // The same address with another identity's token: it moves to that identity.
            if self.by_identity.get(&(m.channel, m.uid)) == Some(&key) {
                self.by_identity.remove(&(m.channel, m.uid));
            }
            self.by_identity.insert((m.channel, uid), key);
        }
        (m.uid, m.echo, m.last_seen) = (uid, echo, now);
        let Some(members) = self.channels.members_mut(m.channel) else {
            return;
        };
        if let Some(r) = members.iter_mut().find(|r| r.key() == key) {
            *r = from;
        }
        let members = members.len();
        self.joined(from, remote, uid, members, out);
    }

    /// Sends JOINED to `to`, telling it `seen`: the address its datagrams come from.
    fn joined(
        &mut self,
        to: Endpoint,
        seen: SocketAddr,
        uid: u32,
        members: usize,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        self.stats.joins += 1;
        let seen = SocketAddr::new(seen.ip().to_canonical(), seen.port());
        let packet = Packet::Joined {
            uid,
            members: u16::try_from(members).unwrap_or(u16::MAX),
            addr: seen,
        };
        self.send(to, packet, out);
    }

    fn remove_member(&mut self, remote: MemberKey) -> Option<Member> {
        let m = self.members.remove(&remote)?;
        if self.by_identity.get(&(m.channel, m.uid)) == Some(&remote) {
            self.by_identity.remove(&(m.channel, m.uid));
        }
        self.channels.leave(m.channel, remote);
        // Left and re-joined members leave stale entries behind; keep the heap near one entry
        // per member.
        if self.timers.len() > 2 * self.members.len() + 64 {
            let timeout = self.limits.member_timeout;
            self.timers = self
                .members
                .iter()
                .map(|(a, m)| Reverse((m.last_seen + timeout, m.generation, *a)))
                .collect();
        }
        Some(m)
    }

    fn not_joined(&mut self, to: Endpoint, request_len: usize, out: &mut impl FnMut(Transmit<'_>)) {
        self.text.clear();
        self.text.push_str("not joined");
        self.send_error(to, ErrorCode::NOT_JOINED, true, "", request_len, out);
    }

    fn send(&mut self, to: Endpoint, packet: Packet<'_>, out: &mut impl FnMut(Transmit<'_>)) {
        if packet.encode_vec(&mut self.reply).is_ok() {
            out(Transmit {
                to,
                bytes: &self.reply,
            });
        }
    }

    /// Sends ERROR with `self.text` as the message, cut to the amplification limit.
    fn send_error(
        &mut self,
        to: Endpoint,
        code: ErrorCode,
        retryable: bool,
        app_id: &str,
        request_len: usize,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let fixed = 1 + 2 + 1 + 2 + app_id.len() + 2;
        let Some(room) = (AMPLIFICATION_FACTOR * request_len).checked_sub(fixed) else {
            self.stats.dropped += 1;
            return;
        };
        let mut cut = room.min(self.text.len());
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        let packet = Packet::Error {
            code,
            retryable,
            app_id,
            message: &self.text[..cut],
        };
        if packet.encode_vec(&mut self.reply).is_ok() {
            self.stats.errors += 1;
            out(Transmit {
                to,
                bytes: &self.reply,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_heap_stays_near_one_entry_per_member() {
        let t0 = Instant::now();
        let key = AppKey {
            app_id: "a".into(),
            key_id: "k".into(),
            secret: b"s".to_vec(),
            not_after: None,
        };
        let auth = AuthConfig {
            static_secret: None,
            app_keys: vec![key],
        };
        let unlimited = JoinRate {
            burst: u32::MAX,
            interval: Duration::from_millis(1),
        };
        let limits = Limits {
            joins_per_source: unlimited,
            joins_per_token: unlimited,
            ..Limits::default()
        };
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let mut s = MediaServer::new(&auth, limits, t0, 1_000, &mut rng);
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let mut sink = |_: Transmit<'_>| {};
        let mut buf = Vec::new();
        for i in 0..5_000u32 {
            let from = SocketAddr::from(([10, 0, (i % 7) as u8, 1], 1000));
            let token = cloudproxy_proto::token::Token::mint("a", "k", b"s", "c", i, 2_000)
                .unwrap()
                .encode();
            let mut source = [0u8; 19];
            let cookie = s.cookie(0, address_bytes(from, &mut source), &token);
            let join = Packet::Join {
                echo: false,
                token: &token,
                cookie: Some(cookie),
            };
            buf.resize(HEADROOM, 0);
            let mut v = Vec::new();
            join.encode_vec(&mut v).unwrap();
            buf.extend_from_slice(&v);
            s.handle(&mut buf, local, from, t0, &mut sink);
            if i % 3 == 0 {
                buf.truncate(HEADROOM);
                buf.push(wire::LEAVE);
                s.handle(&mut buf, local, from, t0, &mut sink);
            }
            assert!(
                s.timers.len() <= 2 * s.members.len() + 65,
                "{}",
                s.timers.len()
            );
        }
        // The last join of each of the 7 addresses, minus two that then left (4995, 4998).
        assert_eq!(s.members.len(), 5);
    }
}
