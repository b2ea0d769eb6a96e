//! The sans-IO media service: channels of members, forwarding, keepalive timers, limits.
//!
//! No sockets, no clock. Time comes in as `now: Instant`; token expiry is checked against
//! `anchor_unix + (now - anchor)`, so a virtual clock moves both. Output goes to a sink the
//! driver passes to each call, as [`Transmit`]s borrowing either the driver's receive buffer
//! (forwarded media) or one reply buffer the server reuses: nothing is allocated per packet.
//!
//! ## Rules
//!
//! * Members are keyed by source address. A JOIN from a joined address re-joins (possibly
//!   another channel); state is unchanged if the re-join is refused.
//! * DATA goes to every other member of the sender's `(app id, channel)`, and back to the
//!   sender if it joined with the echo flag. DATA or PING keep a member in; after
//!   [`Limits::member_timeout`] of silence, or on LEAVE, it is out.
//! * The token authorizes the join; a member is not removed when its token expires later.
//! * An ERROR reply is at most [`AMPLIFICATION_FACTOR`] times the size of the datagram that
//!   caused it (its message is cut to fit, or nothing is sent): the anti-amplification limit of
//!   QUIC (RFC 9000 §8), so spoofed sources cannot make the service a useful reflector. Other
//!   replies are no larger than their request (PONG, LEFT) or answer a signed JOIN.
//!   Datagrams of unknown or service-to-client types are dropped without reply, so two
//!   services cannot be made to talk to each other in a loop.
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

use crate::channels::{Channels, Recipient};
use crate::wire::{self, decode, ErrorCode, Packet, WireError, HEADROOM};

/// An ERROR reply is at most this many times the size of the datagram it answers.
pub const AMPLIFICATION_FACTOR: usize = 3;

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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            member_timeout: Duration::from_secs(15),
            max_channels: 10_000,
            max_members_per_channel: 100,
            max_members: 100_000,
        }
    }
}

/// A datagram to send: `bytes` from the listener bound to `local`, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub local: SocketAddr,
    pub to: SocketAddr,
    pub bytes: &'a [u8],
}

/// Counters since start, and the current sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub members: usize,
    pub channels: usize,
    /// JOINs answered with JOINED (re-joins included).
    pub joins: u64,
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
    local: SocketAddr,
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
    members: HashMap<SocketAddr, Member>,
    channels: Channels,
    timers: BinaryHeap<Reverse<(Instant, u64, SocketAddr)>>,
    next_generation: u64,
    /// Reused for every reply, error text and channel-key lookup.
    reply: Vec<u8>,
    text: String,
    key: String,
    stats: Stats,
}

impl MediaServer {
    /// Only `auth.app_keys` authenticate: a static-secret credential has no app id.
    /// `now`/`now_unix` anchor the wall clock.
    pub fn new(auth: &AuthConfig, limits: Limits, now: Instant, now_unix: u64) -> Self {
        Self {
            auth: Authenticator::new(auth),
            limits,
            anchor: now,
            anchor_unix: now_unix,
            members: HashMap::new(),
            channels: Channels::default(),
            timers: BinaryHeap::new(),
            next_generation: 0,
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

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> Stats {
        Stats {
            members: self.members.len(),
            channels: self.channels.len(),
            ..self.stats
        }
    }

    /// Whether `remote` is a member of some channel.
    pub fn is_member(&self, remote: SocketAddr) -> bool {
        self.members.contains_key(&remote)
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
                self.stats.timeouts += 1;
                tracing::debug!(%remote, "member timed out");
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
        let reply_to = Recipient {
            remote: from,
            local,
        };
        match decode(datagram) {
            Ok(Packet::Data {
                seq, sent_micros, ..
            }) => self.on_data(buf, reply_to, seq, sent_micros, now, out),
            Ok(Packet::Join { echo, token }) => {
                self.on_join(token, echo, reply_to, len, now, out);
            }
            Ok(Packet::Ping(t)) => match self.members.get_mut(&from) {
                Some(m) => {
                    m.last_seen = now;
                    self.send(reply_to, Packet::Pong(t), out);
                }
                None => self.not_joined(reply_to, len, out),
            },
            Ok(Packet::Leave) => {
                if self.remove_member(from).is_some() {
                    tracing::debug!(remote = %from, "member left");
                }
                self.send(reply_to, Packet::Left, out);
            }
            Ok(
                Packet::Joined { .. }
                | Packet::Error { .. }
                | Packet::Forwarded { .. }
                | Packet::Pong(_)
                | Packet::Left,
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

    fn on_data(
        &mut self,
        buf: &mut [u8],
        from: Recipient,
        seq: u32,
        sent_micros: u64,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let Some(m) = self.members.get_mut(&from.remote) else {
            let len = buf.len() - HEADROOM;
            return self.not_joined(from, len, out);
        };
        m.last_seen = now;
        let (uid, echo) = (m.uid, m.echo);
        if wire::write_forwarded_header(buf, uid, seq, sent_micros).is_err() {
            return;
        }
        for r in self.channels.members(m.channel) {
            if r.remote != from.remote || echo {
                out(Transmit {
                    local: r.local,
                    to: r.remote,
                    bytes: buf,
                });
                self.stats.forwarded += 1;
            }
        }
    }

    fn on_join(
        &mut self,
        token: &str,
        echo: bool,
        from: Recipient,
        request_len: usize,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let now_unix = self.anchor_unix + now.saturating_duration_since(self.anchor).as_secs();
        let verified = token::split(token)
            .map_err(|e| VerifyError {
                app_id: None,
                reason: token::VerifyReason::Malformed(e),
            })
            .and_then(|(user, pass)| token::verify_credential(&self.auth, user, pass, now_unix));
        let claims = match verified {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(remote = %from.remote, "join refused: {e}");
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
        self.key.clear();
        let _ = write!(self.key, "{}/{}", claims.app_id, claims.channel);
        let target = self.channels.find(&self.key);
        let existing = self.members.get(&from.remote);

        if let (Some(m), Some(t)) = (existing, target) {
            if m.channel == t {
                return self.rejoin_same_channel(from, claims.uid, echo, now, out);
            }
        }
        // Would the re-joining member's old channel disappear (freeing a channel slot)?
        let frees_one = existing.is_some_and(|m| self.channels.members(m.channel).len() == 1);
        self.text.clear();
        if existing.is_none() && self.members.len() >= self.limits.max_members {
            let _ = write!(
                self.text,
                "service full ({} members)",
                self.limits.max_members
            );
        } else if let Some(t) = target {
            let size = self.channels.members(t).len();
            if size >= self.limits.max_members_per_channel {
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

        let generation = match self.remove_member(from.remote) {
            Some(old) => old.generation,
            None => {
                self.next_generation += 1;
                let due = now + self.limits.member_timeout;
                self.timers
                    .push(Reverse((due, self.next_generation, from.remote)));
                self.next_generation
            }
        };
        let (channel, members) = self.channels.join(&self.key, from);
        let member = Member {
            local: from.local,
            uid: claims.uid,
            echo,
            channel,
            last_seen: now,
            generation,
        };
        self.members.insert(from.remote, member);
        tracing::debug!(remote = %from.remote, key = %self.key, uid = claims.uid, "joined");
        self.joined(from, claims.uid, members, out);
    }

    fn rejoin_same_channel(
        &mut self,
        from: Recipient,
        uid: u32,
        echo: bool,
        now: Instant,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        let Some(m) = self.members.get_mut(&from.remote) else {
            return;
        };
        (m.uid, m.echo, m.last_seen, m.local) = (uid, echo, now, from.local);
        let Some(members) = self.channels.members_mut(m.channel) else {
            return;
        };
        if let Some(r) = members.iter_mut().find(|r| r.remote == from.remote) {
            r.local = from.local;
        }
        let members = members.len();
        self.joined(from, uid, members, out);
    }

    fn joined(
        &mut self,
        to: Recipient,
        uid: u32,
        members: usize,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        self.stats.joins += 1;
        let seen = SocketAddr::new(to.remote.ip().to_canonical(), to.remote.port());
        let packet = Packet::Joined {
            uid,
            members: u16::try_from(members).unwrap_or(u16::MAX),
            addr: seen,
        };
        self.send(to, packet, out);
    }

    fn remove_member(&mut self, remote: SocketAddr) -> Option<Member> {
        let m = self.members.remove(&remote)?;
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

    fn not_joined(
        &mut self,
        to: Recipient,
        request_len: usize,
        out: &mut impl FnMut(Transmit<'_>),
    ) {
        self.text.clear();
        self.text.push_str("not joined");
        self.send_error(to, ErrorCode::NOT_JOINED, true, "", request_len, out);
    }

    fn send(&mut self, to: Recipient, packet: Packet<'_>, out: &mut impl FnMut(Transmit<'_>)) {
        if packet.encode_vec(&mut self.reply).is_ok() {
            out(Transmit {
                local: to.local,
                to: to.remote,
                bytes: &self.reply,
            });
        }
    }

    /// Sends ERROR with `self.text` as the message, cut to the amplification limit.
    fn send_error(
        &mut self,
        to: Recipient,
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
                local: to.local,
                to: to.remote,
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
        let mut s = MediaServer::new(&auth, Limits::default(), t0, 1_000);
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let mut sink = |_: Transmit<'_>| {};
        let mut buf = Vec::new();
        for i in 0..5_000u32 {
            let from = SocketAddr::from(([10, 0, (i % 7) as u8, 1], 1000));
            let token = cloudproxy_proto::token::Token::mint("a", "k", b"s", "c", i, 2_000)
                .unwrap()
                .encode();
            let join = Packet::Join {
                echo: false,
                token: &token,
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
