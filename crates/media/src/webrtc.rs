//! The WebRTC side of the media service: one str0m [`Rtc`] per browser session, all on one
//! UDP socket, driven sans-IO from the media driver's thread (the same loop as the UDP
//! protocol: no lock, no channel between a browser's datagram and the channel's members).
//!
//! ## Scheme
//!
//! * The service is an ICE-lite peer (RFC 8445 §2.5): it never sends connectivity checks, it
//!   answers the browser's from its one host candidate (the socket's advertised address).
//!   A browser whose only candidates are relayed ones (a TURN relay) checks from the relay's
//!   relayed address, and the service answers there: a peer-reflexive remote candidate.
//! * Demultiplexing: a STUN request's USERNAME starts with the service's ufrag, which names
//!   the session; a source address that passed a check is then mapped to the session, and the
//!   DTLS/SCTP/SRTP datagrams from it go straight there (one hash lookup).
//! * A session is a member of its channel from the POST on ([`MediaServer::join_web`]); it
//!   gets JOINED when the data channel `cloudproxy` opens. Each data-channel message is one
//!   datagram of the UDP wire format and goes through [`MediaServer::handle_web`].
//! * It ends on DELETE, on LEAVE, when str0m reports ICE disconnected or the Rtc dead, and
//!   when the member timer of the UDP protocol fires (no datagram at all for
//!   `member_timeout`: a connected browser sends consent checks every few seconds).
//! * Media (SFU, no transcoding): audio and video frames a browser sends are written, with
//!   the same codec parameters, on the same-kind transceiver of every other browser of the
//!   channel whose *source* it is. A browser's source is the first other browser in the
//!   channel's member order: with two browsers each sees the other; with more, each sees one
//!   (the earliest still there) and the others' media is not sent to it. Keyframe requests
//!   (PLI/FIR) from a receiver go to its source.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::config::CryptoProvider;
use str0m::media::{KeyframeRequest, MediaData, MediaKind, Mid, Writer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::server::{MediaServer, SessionId, Transmit, WebRefusal};
use crate::wire::HEADROOM;

/// The data channel a browser opens in its offer.
pub const DATA_CHANNEL_LABEL: &str = "cloudproxy";

/// Remote candidates a session takes by PATCH, in all. The service is ICE-lite (it answers
/// checks from wherever they come and never checks itself), so the candidates are only kept;
/// a browser trickles a handful. Beyond: 400 `too_many_candidates`, none of that PATCH's added.
pub const MAX_REMOTE_CANDIDATES: usize = 32;

/// Why an endpoint request failed: an HTTP status and a JSON error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, e.g. 400, 401, 404, 503.
    pub status: u16,
    /// The JSON `error` code, e.g. `seat_taken`.
    pub code: &'static str,
    /// The explanation for the page's developer.
    pub message: String,
}

impl ApiError {
    /// An error answered with `status` and the JSON body `{error: code, message}`.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<WebRefusal> for ApiError {
    fn from(r: WebRefusal) -> Self {
        let message = r.to_string();
        match r {
            WebRefusal::Unauthorized(_) => ApiError::new(401, "unauthorized", message),
            WebRefusal::AppNotAllowed(_) => ApiError::new(403, "app_not_allowed", message),
            WebRefusal::SeatTaken(_) => ApiError::new(409, "seat_taken", message),
            WebRefusal::RateLimited => ApiError::new(429, "rate_limited", message),
            WebRefusal::Full(_) => ApiError::new(503, "full", message),
        }
    }
}

/// Counts of the WebRTC side (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebStats {
    /// Live sessions.
    pub sessions: usize,
    /// Source addresses mapped to a session.
    pub addresses: usize,
    /// Sessions ever admitted.
    pub admitted: u64,
    /// Sessions ended (closed, timed out or deleted).
    pub ended: u64,
    /// Data-channel messages received from browsers.
    pub messages: u64,
    /// Media frames written toward browsers.
    pub media_forwarded: u64,
}

struct Session {
    rtc: Rtc,
    ufrag: String,
    /// Source addresses mapped to this session (removed with it).
    addrs: Vec<SocketAddr>,
    /// Remote candidates added by PATCH (at most [`MAX_REMOTE_CANDIDATES`]).
    remote_candidates: usize,
    channel: Option<ChannelId>,
    /// Where the Rtc last sent: after ICE, the selected pair's remote address.
    last_destination: Option<SocketAddr>,
    deadline: Option<Instant>,
    audio: Option<Mid>,
    video: Option<Mid>,
}

/// The browser sessions of one event loop.
pub(crate) struct Sessions {
    socket: UdpSocket,
    /// The host candidate put in every answer, and the destination every datagram is given
    /// to str0m with: its ICE agent drops a check whose destination is none of its candidates,
    /// and the socket's own address is not one when it is unspecified (loopback advertised)
    /// or behind a NAT (`webrtc_public`).
    advertised: SocketAddr,
    max_sessions: usize,
    crypto: Arc<CryptoProvider>,
    by_id: HashMap<SessionId, Session>,
    by_ufrag: HashMap<String, SessionId>,
    by_addr: HashMap<SocketAddr, SessionId>,
    /// One entry per armed Rtc deadline; stale entries are skipped (the session's
    /// `deadline` no longer matches) and the heap is rebuilt when they pile up.
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    /// Sessions that were given input and whose output is to be polled.
    dirty: Vec<SessionId>,
    /// Events taken out of an Rtc, handled once its output is drained (they touch others).
    events: Vec<(SessionId, Event)>,
    stats: WebStats,
}

impl Sessions {
    pub(crate) fn new(socket: UdpSocket, advertised: SocketAddr, max_sessions: usize) -> Self {
        Self {
            socket,
            advertised,
            max_sessions,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            by_id: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            events: Vec::new(),
            stats: WebStats::default(),
        }
    }

    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub(crate) fn stats(&self) -> WebStats {
        WebStats {
            sessions: self.by_id.len(),
            addresses: self.by_addr.len(),
            ..self.stats
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// POST: admits a session for `sdp` (an offer with a `cloudproxy` data channel) with
    /// `token`; the answer.
    pub(crate) fn offer(
        &mut self,
        server: &mut MediaServer,
        id: SessionId,
        token: &str,
        echo: bool,
        sdp: &str,
        now: Instant,
    ) -> Result<String, ApiError> {
        if self.by_id.len() >= self.max_sessions {
            return Err(ApiError::new(
                503,
                "full",
                format!("service full ({} browser sessions)", self.max_sessions),
            ));
        }
        let offer = SdpOffer::from_sdp_string(sdp)
            .map_err(|e| ApiError::new(400, "malformed_sdp", format!("the offer: {e}")))?;
        if !sdp.lines().any(|l| l.starts_with("m=application")) {
            return Err(ApiError::new(
                400,
                "no_data_channel",
                "the offer has no data channel (m=application): create the 'cloudproxy' \
                 channel before createOffer()",
            ));
        }
        server.join_web(id, token, echo, now)?;
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_crypto_provider(self.crypto.clone())
            .build(now);
        let answer = Candidate::host(self.advertised, "udp")
            .map_err(|e| ApiError::new(500, "internal", format!("host candidate: {e}")))
            .and_then(|c| {
                rtc.add_local_candidate(c);
                rtc.sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| ApiError::new(400, "malformed_sdp", format!("the offer: {e}")))
            });
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                server.leave_web(id);
                return Err(e);
            }
        };
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.by_ufrag.insert(ufrag.clone(), id);
        self.by_id.insert(
            id,
            Session {
                rtc,
                ufrag,
                addrs: Vec::new(),
                remote_candidates: 0,
                channel: None,
                last_destination: None,
                deadline: None,
                audio: None,
                video: None,
            },
        );
        self.stats.admitted += 1;
        self.dirty.push(id);
        Ok(answer.to_sdp_string())
    }

    /// PATCH: the `a=candidate:` lines of a trickle-ice-sdpfrag (RFC 8840).
    pub(crate) fn candidates(&mut self, id: SessionId, frag: &str) -> Result<(), ApiError> {
        let Some(s) = self.by_id.get_mut(&id) else {
            return Err(not_found(id));
        };
        let mut parsed = Vec::new();
        for line in frag.lines().map(str::trim) {
            if let Some(c) = line.strip_prefix("a=candidate:") {
                if s.remote_candidates + parsed.len() == MAX_REMOTE_CANDIDATES {
                    return Err(ApiError::new(
                        400,
                        "too_many_candidates",
                        format!(
                            "session {id} takes at most {MAX_REMOTE_CANDIDATES} trickled \
                             candidates (it has {}); none of this PATCH's were added",
                            s.remote_candidates
                        ),
                    ));
                }
                let c = Candidate::from_sdp_string(&format!("candidate:{c}")).map_err(|e| {
                    ApiError::new(400, "malformed_candidate", format!("{line}: {e}"))
                })?;
                parsed.push(c);
            }
        }
        s.remote_candidates += parsed.len();
        for c in parsed {
            s.rtc.add_remote_candidate(c);
        }
        self.dirty.push(id);
        Ok(())
    }

    /// DELETE: ends the session (its member leaves).
    pub(crate) fn delete(
        &mut self,
        server: &mut MediaServer,
        id: SessionId,
    ) -> Result<(), ApiError> {
        if !self.by_id.contains_key(&id) {
            return Err(not_found(id));
        }
        self.end(server, id, "deleted");
        Ok(())
    }

    /// A datagram on the WebRTC socket; what it causes happens at the next [`run`](Self::run).
    pub(crate) fn receive(
        &mut self,
        server: &mut MediaServer,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) {
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            None => match stun_ufrag(datagram).and_then(|u| self.by_ufrag.get(u)) {
                Some(id) => *id,
                None => return,
            },
        };
        let Some(s) = self.by_id.get_mut(&id) else {
            return;
        };
        let Ok(contents) = datagram.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.advertised,
                contents,
            },
        );
        if !s.rtc.accepts(&input) {
            return;
        }
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %id, "webrtc input: {e}");
        }
        if !s.addrs.contains(&from) && s.addrs.len() < 8 {
            s.addrs.push(from);
            self.by_addr.insert(from, id);
        }
        server.touch_web(id, now);
        self.dirty.push(id);
    }

    /// Gives every Rtc whose deadline has come its timeout; the next [`run`](Self::run)
    /// drives them.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.by_id.get_mut(&id) else {
                continue;
            };
            if s.deadline != Some(at) {
                continue;
            }
            s.deadline = None;
            let _ = s.rtc.handle_input(Input::Timeout(now));
            self.dirty.push(id);
        }
    }

    /// Ends the sessions whose member the core removed (timed out, or its seat taken by a
    /// UDP JOIN): call after [`MediaServer::handle`] and [`MediaServer::handle_timeout`].
    pub(crate) fn end_removed(&mut self, server: &mut MediaServer) {
        while let Some(id) = server.next_removed_web() {
            self.end(server, id, "no longer a member");
        }
    }

    /// Polls the output of every dirty session, then handles the events it gave, until
    /// nothing is left to do.
    pub(crate) fn run(
        &mut self,
        server: &mut MediaServer,
        listeners: &[(UdpSocket, SocketAddr)],
        buf: &mut [u8],
        now: Instant,
    ) {
        loop {
            while let Some(id) = self.dirty.pop() {
                self.drain(server, id);
            }
            if self.events.is_empty() {
                break;
            }
            let events = std::mem::take(&mut self.events);
            for (id, event) in events {
                self.on_event(server, listeners, buf, id, event, now);
            }
        }
        if self.timers.len() > 2 * self.by_id.len() + 64 {
            self.timers = self
                .by_id
                .iter()
                .filter_map(|(id, s)| s.deadline.map(|d| Reverse((d, *id))))
                .collect();
        }
    }

    fn drain(&mut self, server: &mut MediaServer, id: SessionId) {
        let Some(s) = self.by_id.get_mut(&id) else {
            return;
        };
        loop {
            if !s.rtc.is_alive() {
                self.end(server, id, "connection closed");
                return;
            }
            match s.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    s.last_destination = Some(t.destination);
                    send_now(&self.socket, &t.contents, t.destination);
                }
                Ok(Output::Timeout(at)) => {
                    if s.deadline != Some(at) {
                        s.deadline = Some(at);
                        self.timers.push(Reverse((at, id)));
                    }
                    return;
                }
                Ok(Output::Event(e)) => self.events.push((id, e)),
                Err(e) => {
                    tracing::debug!(session = %id, "webrtc: {e}");
                    self.end(server, id, "connection failed");
                    return;
                }
            }
        }
    }

    fn on_event(
        &mut self,
        server: &mut MediaServer,
        listeners: &[(UdpSocket, SocketAddr)],
        buf: &mut [u8],
        id: SessionId,
        event: Event,
        now: Instant,
    ) {
        match event {
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.end(server, id, "ICE disconnected");
            }
            Event::ChannelOpen(cid, label) => {
                let Some(s) = self.by_id.get_mut(&id) else {
                    return;
                };
                if label != DATA_CHANNEL_LABEL || s.channel.is_some() {
                    return;
                }
                s.channel = Some(cid);
                let seen = s.last_destination.unwrap_or(self.advertised);
                server.web_joined(id, seen, &mut |t| self.deliver(listeners, t));
            }
            Event::ChannelData(d) => {
                let is_ours = self.by_id.get(&id).is_some_and(|s| s.channel == Some(d.id));
                let end = HEADROOM + d.data.len();
                if !is_ours || !d.binary || end > buf.len() {
                    return;
                }
                self.stats.messages += 1;
                buf[HEADROOM..end].copy_from_slice(&d.data);
                server.handle_web(id, &mut buf[..end], now, &mut |t| {
                    self.deliver(listeners, t)
                });
                if !server.is_web_member(id) {
                    // LEAVE: the LEFT reply is queued; the session ends with its last datagrams.
                    self.dirty.push(id);
                    self.drain(server, id);
                    self.end(server, id, "left");
                }
            }
            Event::MediaAdded(m) => {
                if let Some(s) = self.by_id.get_mut(&id) {
                    match m.kind {
                        MediaKind::Audio if s.audio.is_none() => s.audio = Some(m.mid),
                        MediaKind::Video if s.video.is_none() => s.video = Some(m.mid),
                        _ => {}
                    }
                }
            }
            Event::MediaData(data) => self.forward_media(server, id, data),
            Event::KeyframeRequest(req) => self.forward_keyframe_request(server, id, req),
            _ => {}
        }
    }

    /// Hands one output of the core to its member: a UDP client, or a browser's data channel.
    fn deliver(&mut self, listeners: &[(UdpSocket, SocketAddr)], t: Transmit<'_>) {
        match t.to {
            crate::server::Endpoint::Udp { remote, local } => {
                if let Some((s, _)) = listeners.iter().find(|(_, a)| *a == local) {
                    send_now(s, t.bytes, remote);
                }
            }
            crate::server::Endpoint::Web(to) => self.write_web(to, t.bytes),
        }
    }

    /// Queues `bytes` as one binary message on browser `to`'s data channel; its datagrams go
    /// out at the next [`run`](Self::run).
    pub(crate) fn write_web(&mut self, to: SessionId, bytes: &[u8]) {
        let Some(s) = self.by_id.get_mut(&to) else {
            return;
        };
        let Some(mut channel) = s.channel.and_then(|c| s.rtc.channel(c)) else {
            return;
        };
        // A reliable channel over a full buffer refuses: the message is dropped, as a UDP
        // datagram would be.
        let _ = channel.write(true, bytes);
        self.dirty.push(to);
    }

    /// Ends every session (the service stops).
    pub(crate) fn sweep_all(&mut self, server: &mut MediaServer) {
        let all: Vec<SessionId> = self.by_id.keys().copied().collect();
        for id in all {
            self.end(server, id, "service stopping");
        }
    }

    /// The browser `to` receives media from its *source*: the first other browser of its
    /// channel. With the channel's browsers `w0, w1, ...` in member order, `w0`'s source is
    /// `w1` and every other's is `w0`.
    fn source_of(server: &MediaServer, to: SessionId) -> Option<SessionId> {
        let mut web = server.web_members(to);
        match web.next()? {
            w0 if w0 == to => web.next(),
            w0 => Some(w0),
        }
    }

    /// Writes `from`'s frame on the receivers whose source `from` is (see
    /// [`source_of`](Self::source_of)): from `w0`, every other browser; from `w1`, `w0`; from
    /// the rest, none. One walk of the channel; the payload moves into the last receiver.
    fn forward_media(&mut self, server: &MediaServer, from: SessionId, mut data: MediaData) {
        let Some(kind) = self.kind_of(from, data.mid) else {
            return;
        };
        let mut web = server.web_members(from);
        let (Some(w0), Some(w1)) = (web.next(), web.next()) else {
            return;
        };
        let (first, rest) = if from == w0 {
            (w1, Some(web))
        } else if from == w1 {
            (w0, None)
        } else {
            return;
        };
        let mut receivers = std::iter::once(first)
            .chain(rest.into_iter().flatten())
            .peekable();
        while let Some(to) = receivers.next() {
            let last = receivers.peek().is_none();
            let Some(writer) = self.writer(to, kind) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            let payload = if last {
                std::mem::take(&mut data.data)
            } else {
                data.data.clone()
            };
            if writer
                .write(pt, data.network_time, data.time, payload)
                .is_ok()
            {
                self.stats.media_forwarded += 1;
            }
            self.dirty.push(to);
        }
    }

    fn forward_keyframe_request(
        &mut self,
        server: &MediaServer,
        from: SessionId,
        req: KeyframeRequest,
    ) {
        let Some(kind) = self.kind_of(from, req.mid) else {
            return;
        };
        let Some(source) = Self::source_of(server, from) else {
            return;
        };
        if let Some(mut writer) = self.writer(source, kind) {
            let _ = writer.request_keyframe(None, req.kind);
            self.dirty.push(source);
        }
    }

    /// Whether session `id`'s track `mid` is audio or video.
    fn kind_of(&self, id: SessionId, mid: Mid) -> Option<MediaKind> {
        let s = self.by_id.get(&id)?;
        s.rtc.media(mid).map(|m| m.kind())
    }

    /// The sending side of session `to`'s own track of `kind`, once it has one.
    fn writer(&mut self, to: SessionId, kind: MediaKind) -> Option<Writer<'_>> {
        let s = self.by_id.get_mut(&to)?;
        let mid = match kind {
            MediaKind::Audio => s.audio,
            MediaKind::Video => s.video,
        }?;
        s.rtc.writer(mid)
    }

    fn end(&mut self, server: &mut MediaServer, id: SessionId, why: &str) {
        let Some(mut s) = self.by_id.remove(&id) else {
            return;
        };
        s.rtc.disconnect();
        self.by_ufrag.remove(&s.ufrag);
        for a in &s.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        server.leave_web(id);
        self.stats.ended += 1;
        tracing::debug!(session = %id, why, "browser session ended");
    }
}

fn not_found(id: SessionId) -> ApiError {
    ApiError::new(404, "unknown_session", format!("no session {id}"))
}

/// The service's ufrag in a STUN Binding request's USERNAME (`ours:theirs`), if `datagram`
/// is one. Only the attribute walk; str0m checks the rest.
fn stun_ufrag(datagram: &[u8]) -> Option<&str> {
    // STUN: first two bits 0, magic cookie at 4..8 (RFC 8489 §5).
    if datagram.len() < 20 || datagram[0] & 0xc0 != 0 || datagram[4..8] != [0x21, 0x12, 0xa4, 0x42]
    {
        return None;
    }
    let mut rest = &datagram[20..];
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == 0x0006 {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        rest = rest.get(4 + len.next_multiple_of(4)..)?;
    }
    None
}

/// One non-blocking `sendto` (see the driver's `send_now`).
fn send_now(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> bool {
    socket2::SockRef::from(socket)
        .send_to(data, &to.into())
        .is_ok()
}
