//! The client: mode, join, send, receive, leave, and the session task that keeps the path
//! alive and reconnects when it drops.
//!
//! A session holds a relay's resources exactly as long as it uses them. Leaving (or dropping
//! the `Client`) ends the session task, which says LEAVE to the media service and waits for
//! LEFT, then closes the path: over TURN/UDP a Refresh with LIFETIME 0 deletes the allocation,
//! over TCP/TLS the connection closes (`release.rs`). Every wait is bounded, so a dead relay
//! delays a leave by at most [`LEAVE_PATIENCE`] + the release's bound.
//!
//! ## The data path
//!
//! Nothing is allocated or locked per packet once a session is warm. Payloads cross between
//! the application and the session task in `Vec`s that circulate: [`Client::send`] copies into
//! a buffer the task handed back after sending the previous one, and [`Client::recv_into`]
//! swaps the caller's buffer for the received one, whose old storage goes back to the task for
//! the next packet. Counters are atomics the task bumps and [`Client::stats`] reads
//! ([`SessionCounters`]). `crates/sdk/tests/no_alloc.rs` counts the allocations of 20,000
//! echoed packets: 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::connect::{self, Credential, Joined};
use crate::event::{ConnectionState, Event, PathKind, StateReason};
use crate::http_proxy::HttpProxy;
use crate::media::{self, MediaMsg};
use crate::pipe::Pipe;
use crate::tls::{self, TlsTrust};
use crate::{CloudProxyType, SdkError};

/// Where things are, and how patient to be. Plain data with documented defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The media service, as this client would reach it directly.
    pub media: SocketAddr,
    /// Proxy addresses per mode.
    pub proxies: Proxies,
    /// Which relay certificates to trust. Default: any (lab use); production sets `Certificates`.
    pub tls_trust: TlsTrust,
    /// TLS server name; default: the proxy's IP address.
    pub tls_server_name: Option<String>,
    /// Happy Eyeballs stagger between attempts (RFC 8305: 250 ms recommended). Default 250 ms.
    pub stagger: Duration,
    /// One attempt (connect, TURN set-up, media join). Default 4 s.
    pub attempt_timeout: Duration,
    /// A whole join, all attempts. Default 10 s.
    pub join_timeout: Duration,
    /// Keepalive (PING) interval while packets keep coming. Default 1 s.
    pub keepalive: Duration,
    /// After this long without any packet from the path, PING every [`Self::probe_every`]
    /// to find out whether it is alive. Default 500 ms.
    pub probe_after: Duration,
    /// PING interval while probing. Default 100 ms.
    pub probe_every: Duration,
    /// No packet at all from the path for this long, probes included: it dropped (a relay
    /// that died or became unreachable; one that closes the connection or answers with ICMP
    /// is noticed at once). Default 1.5 s, which keeps a failover's media gap under 2 s.
    pub path_timeout: Duration,
    /// Reconnect attempts after a drop: the first at once, then with backoff 0.5 s, 1 s, 2 s,
    /// … Default 3.
    pub reconnect_attempts: u32,
    /// Ask the media service to echo our own data back (network checks). Default false.
    pub echo: bool,
    /// An HTTP proxy to tunnel the TCP paths through with CONNECT: Force TCP, Auto's TLS
    /// fallback and the allow-list fetch over TLS. Default none; [`HttpProxy::from_env`]
    /// reads `HTTPS_PROXY` and `NO_PROXY` (the SDK never reads the environment by itself).
    pub http_proxy: Option<HttpProxy>,
}

impl ClientConfig {
    /// A configuration for reaching the media service at `media` with the defaults above and
    /// no proxies: add [`Self::proxies`] before using a Force mode or Auto's fallback.
    pub fn new(media: SocketAddr) -> Self {
        Self {
            media,
            proxies: Proxies::default(),
            tls_trust: TlsTrust::default(),
            tls_server_name: None,
            stagger: Duration::from_millis(250),
            attempt_timeout: Duration::from_secs(4),
            join_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(1),
            probe_after: Duration::from_millis(500),
            probe_every: Duration::from_millis(100),
            path_timeout: Duration::from_millis(1500),
            reconnect_attempts: 3,
            echo: false,
            http_proxy: None,
        }
    }

    /// The HTTP proxy a `kind` path to `target` goes through: the configured one, for a TCP
    /// path whose target (or TLS server name) is not on its bypass list.
    pub fn tunnel_for(&self, kind: PathKind, target: SocketAddr) -> Option<&HttpProxy> {
        if !matches!(kind, PathKind::TurnTcp | PathKind::TurnTls) {
            return None;
        }
        self.http_proxy
            .as_ref()
            .filter(|p| p.tunnels(target, self.tls_server_name.as_deref()))
    }
}

/// Proxy addresses. Force UDP uses `udp`, Force TCP uses `tls` (TCP 443), Auto falls back to
/// `auto` (the dynamic pool the control plane hands out).
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    /// TURN/UDP relays for Force UDP, tried in this order (staggered, first join wins).
    pub udp: Vec<SocketAddr>,
    /// TURN/TLS relays (usually TCP 443) for Force TCP.
    pub tls: Vec<SocketAddr>,
    /// TURN/TLS relays Auto falls back to when direct UDP to the media service loses the race.
    pub auto: Vec<SocketAddr>,
}

/// What a join achieved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinInfo {
    /// The channel joined, as passed to [`Client::join`].
    pub channel: String,
    /// This member's uid, as the media service confirmed it in JOINED.
    pub uid: u32,
    /// The cloud-proxy mode the client was in when it joined.
    pub mode: CloudProxyType,
    /// The path that won the race: direct UDP, TURN/UDP or TURN/TLS.
    pub path: PathKind,
    /// The proxy, or the media service for a direct path.
    pub server: SocketAddr,
    /// The source address the media service saw (a relayed address through a proxy).
    pub seen_as: SocketAddr,
    /// Members of the channel right after this join, this one included.
    pub members: u16,
    /// Milliseconds from the start of [`Client::join`] to JOINED on the winning path.
    pub elapsed_ms: u64,
}

/// A datagram from another member of the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sending member's uid.
    pub from_uid: u32,
    /// The sender's sequence number: 0 for its session's first datagram, then +1 (wrapping)
    /// per datagram, so a gap means loss.
    pub seq: u32,
    /// When the sender sent it: microseconds since the sender's session started, by the
    /// sender's clock (comparable between datagrams of one sender only).
    pub sent_micros: u64,
    /// The application's bytes, exactly as the sender passed them to [`Client::send`].
    pub payload: Vec<u8>,
}

/// Who sent a datagram [`Client::recv_into`] received, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedFrom {
    /// The sending member's uid.
    pub from_uid: u32,
    /// The sender's sequence number (see [`Received::seq`]).
    pub seq: u32,
    /// Microseconds since the sender's session started, by its clock (see
    /// [`Received::sent_micros`]).
    pub sent_micros: u64,
}

/// Buffers waiting to be reused, per direction: enough for a burst the channels can hold.
const SPARE_BUFFERS: usize = 1024;

/// Counters of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionStats {
    /// Datagrams this session sent to the channel (keepalives not counted).
    pub sent: u64,
    /// Datagrams this session received from other members (or echoed back to it).
    pub received: u64,
    /// Sequence gaps seen per sender, summed.
    pub lost: u64,
    /// Latest round-trip time to the media service, through the path, in microseconds.
    pub rtt_micros: Option<u64>,
    /// Times the session re-established its path after a drop, on any path.
    pub reconnects: u32,
}

/// A session's counters: the task adds, [`Client::stats`] reads; no lock on the data path.
#[derive(Debug, Default)]
struct SessionCounters {
    sent: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    /// [`NO_RTT`] until the first PONG.
    rtt_micros: AtomicU64,
    reconnects: AtomicU32,
}

const NO_RTT: u64 = u64::MAX;

impl SessionCounters {
    fn new() -> Self {
        SessionCounters {
            rtt_micros: AtomicU64::new(NO_RTT),
            ..SessionCounters::default()
        }
    }

    fn snapshot(&self) -> SessionStats {
        let rtt = self.rtt_micros.load(Relaxed);
        SessionStats {
            sent: self.sent.load(Relaxed),
            received: self.received.load(Relaxed),
            lost: self.lost.load(Relaxed),
            rtt_micros: (rtt != NO_RTT).then_some(rtt),
            reconnects: self.reconnects.load(Relaxed),
        }
    }
}

/// The two ends of a buffer circulation: full buffers one way, emptied ones back.
struct Circulation {
    full: mpsc::Sender<Vec<u8>>,
    spare: mpsc::Receiver<Vec<u8>>,
}

struct Session {
    info: JoinInfo,
    /// Payloads to send, and the buffers the task has sent from.
    outgoing: Circulation,
    incoming: mpsc::Receiver<Received>,
    /// Buffers `recv_into` gave up, back to the task for the next received payload.
    recycled: mpsc::Sender<Vec<u8>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    stats: Arc<SessionCounters>,
}

/// How long a leave waits for the media service's LEFT; LEAVE is resent every
/// [`LEAVE_RESEND`] meanwhile (it may be lost on UDP; the service answers every LEAVE).
const LEAVE_PATIENCE: Duration = Duration::from_secs(1);
const LEAVE_RESEND: Duration = Duration::from_millis(250);
/// The most [`Client::leave`] waits for the session task (LEFT, then the release); past it the
/// task is cancelled, and its path releases in the background.
const LEAVE_BOUND: Duration = Duration::from_secs(4);

/// The SDK's client. One channel at a time.
///
/// Dropping a `Client` without [`Client::leave`] still leaves, as far as an asynchronous
/// drop allows: the session task sees its stop signal go and runs the same LEAVE and release
/// on the runtime. If the runtime itself is shutting down, the task is cancelled instead and
/// its path releases what it can at once (a Refresh with LIFETIME 0 over UDP, sent without
/// waiting for the answer; a TCP/TLS connection is closed by the kernel) — see `release.rs`.
pub struct Client {
    config: ClientConfig,
    mode: CloudProxyType,
    session: Option<Session>,
    events: mpsc::UnboundedSender<Event>,
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client and the stream of its events.
    pub fn new(config: ClientConfig) -> Result<(Self, mpsc::UnboundedReceiver<Event>), SdkError> {
        let tls = tls::client_config(&config.tls_trust)
            .map_err(|e| SdkError::BadToken(format!("TLS configuration: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            Self {
                config,
                mode: CloudProxyType::None,
                session: None,
                events: tx,
                tls,
            },
            rx,
        ))
    }

    /// The current cloud-proxy mode (vendor `getCloudProxy`); `None` (Auto) until set.
    pub fn cloud_proxy(&self) -> CloudProxyType {
        self.mode
    }

    /// Sets the mode (vendor `setCloudProxy`). Only outside a channel; to change from one Force
    /// mode to another, set `None` first.
    pub fn set_cloud_proxy(&mut self, mode: CloudProxyType) -> Result<(), SdkError> {
        if self.session.is_some() {
            return Err(SdkError::InChannel);
        }
        if self.mode.is_forced() && mode.is_forced() && mode != self.mode {
            return Err(SdkError::SetNoneFirst { current: self.mode });
        }
        self.mode = mode;
        Ok(())
    }

    /// Vendor web `stopProxyServer()`: back to Auto; valid only after leave.
    pub fn stop_proxy(&mut self) -> Result<(), SdkError> {
        self.set_cloud_proxy(CloudProxyType::None)
    }

    /// Refreshes this mode's proxy list through a proxy this client may already reach:
    ///
    /// - Force UDP: the region's published allow-list, in-band over the relay's UDP port;
    /// - Force TCP: the same over HTTPS on the relay's TLS listener (through the HTTP proxy,
    ///   if one is configured);
    /// - Auto: `GET /v1/proxies?region=` over HTTPS on a known Auto proxy's TLS listener —
    ///   the dynamic relays the control plane picks by load for this session.
    ///
    /// The new list replaces the configured one when it is not empty (announced address
    /// changes reach clients that may reach nothing else); each configured proxy is tried in
    /// turn. Returns what was fetched.
    pub async fn refresh_proxies(
        &mut self,
        region: &str,
        token: &str,
    ) -> Result<Proxies, SdkError> {
        if self.session.is_some() {
            return Err(SdkError::InChannel);
        }
        let timeout = self.config.attempt_timeout;
        let (list, path, what) = match self.mode {
            CloudProxyType::UdpProxy => (
                &self.config.proxies.udp,
                format!("/v1/allowlist/{region}"),
                "UDP",
            ),
            CloudProxyType::TcpProxy => (
                &self.config.proxies.tls,
                format!("/v1/allowlist/{region}"),
                "TLS",
            ),
            CloudProxyType::None => (
                &self.config.proxies.auto,
                format!("/v1/proxies?region={region}"),
                "Auto",
            ),
        };
        if list.is_empty() {
            return Err(SdkError::NoProxies(what));
        }
        let mut why = Vec::new();
        for &proxy in list.clone().iter() {
            let fetched = if self.mode == CloudProxyType::UdpProxy {
                let (username, password) = cloudproxy_proto::token::split(token)
                    .map_err(|e| SdkError::BadToken(e.to_string()))?;
                crate::signal::fetch_udp(proxy, username, password, &path, timeout).await
            } else {
                let name = self
                    .config
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| proxy.ip().to_string());
                let via = self.config.tunnel_for(PathKind::TurnTls, proxy);
                crate::signal::fetch_tls(proxy, via, &self.tls, &name, &path, timeout).await
            };
            let f = match fetched {
                Ok(f) if f.status == 200 => f,
                Ok(f) => {
                    why.push(format!(
                        "{proxy}: {} {}",
                        f.status,
                        String::from_utf8_lossy(&f.body)
                    ));
                    continue;
                }
                Err(e) => {
                    why.push(e.to_string());
                    continue;
                }
            };
            let parsed = if self.mode == CloudProxyType::None {
                crate::signal::auto_proxies(&f.body)
            } else {
                crate::signal::published_proxies(&f.body)
            };
            let fetched = parsed.map_err(|e| SdkError::Refresh(e.to_string()))?;
            let (fresh, target) = match self.mode {
                CloudProxyType::UdpProxy => (&fetched.udp, &mut self.config.proxies.udp),
                CloudProxyType::TcpProxy => (&fetched.tls, &mut self.config.proxies.tls),
                CloudProxyType::None => (&fetched.auto, &mut self.config.proxies.auto),
            };
            if !fresh.is_empty() {
                *target = fresh.clone();
            }
            return Ok(fetched);
        }
        Err(SdkError::Refresh(why.join("; ")))
    }

    /// The proxies this client would use now.
    pub fn proxies(&self) -> &Proxies {
        &self.config.proxies
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Joins `channel` as `uid` with a token from `cloudproxy token` (`<username>#<password>`).
    pub async fn join(
        &mut self,
        channel: &str,
        uid: u32,
        token: &str,
    ) -> Result<JoinInfo, SdkError> {
        if self.session.is_some() {
            return Err(SdkError::AlreadyJoined);
        }
        let credential = Credential::for_join(token, channel, uid)?;
        let reason = if self.mode.is_forced() {
            StateReason::SettingProxyServer
        } else {
            StateReason::Joining
        };
        self.emit(Event::ConnectionStateChanged {
            state: ConnectionState::Connecting,
            reason,
        });
        let candidates = connect::candidates(&self.config, self.mode, 0)?;
        let (winner, joined) =
            match connect::race(&self.config, &self.tls, candidates, &credential).await {
                Ok(w) => w,
                Err(e) => {
                    self.emit(Event::ConnectionStateChanged {
                        state: ConnectionState::Failed,
                        reason: StateReason::JoinFailed,
                    });
                    return Err(SdkError::Join(e));
                }
            };
        let info = JoinInfo {
            channel: channel.into(),
            uid: joined.uid,
            mode: self.mode,
            path: winner.kind,
            server: winner.target,
            seen_as: joined.seen_as,
            members: joined.members,
            elapsed_ms: joined.elapsed.as_millis() as u64,
        };
        self.announce(&info);
        let (out_tx, out_rx) = mpsc::channel(1024);
        let (sent_tx, sent_rx) = mpsc::channel(SPARE_BUFFERS);
        let (in_tx, in_rx) = mpsc::channel(1024);
        let (recycled_tx, recycled_rx) = mpsc::channel(SPARE_BUFFERS);
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = Arc::new(SessionCounters::new());
        let task = tokio::spawn(run_session(SessionTask {
            config: self.config.clone(),
            tls: self.tls.clone(),
            mode: self.mode,
            credential,
            info: info.clone(),
            pipe: joined.pipe,
            outgoing: out_rx,
            sent: sent_tx,
            incoming: in_tx,
            recycled: recycled_rx,
            stop: stop_rx,
            events: self.events.clone(),
            stats: stats.clone(),
        }));
        self.session = Some(Session {
            info: info.clone(),
            outgoing: Circulation {
                full: out_tx,
                spare: sent_rx,
            },
            incoming: in_rx,
            recycled: recycled_tx,
            stop: Some(stop_tx),
            task,
            stats,
        });
        Ok(info)
    }

    fn announce(&self, info: &JoinInfo) {
        self.emit(Event::ConnectionStateChanged {
            state: ConnectionState::Connected,
            reason: StateReason::JoinSuccess,
        });
        self.emit(Event::Joined {
            channel: info.channel.clone(),
            uid: info.uid,
            path: info.path,
            server: info.server,
            seen_as: info.seen_as,
            elapsed_ms: info.elapsed_ms,
        });
        if info.path.is_proxy() {
            if !info.mode.is_forced() {
                self.emit(Event::JoinFallbackToProxy { proxy: info.server });
            }
            self.emit(Event::ProxyConnected {
                channel: info.channel.clone(),
                uid: info.uid,
                mode: info.mode,
                proxy: info.server,
                elapsed_ms: info.elapsed_ms,
            });
        }
        self.emit(Event::IsUsingCloudProxy {
            using: info.path.is_proxy(),
        });
    }

    /// The current join, if any.
    pub fn joined(&self) -> Option<&JoinInfo> {
        self.session.as_ref().map(|s| &s.info)
    }

    /// The current session's counters, read without a lock; all zero when not in a channel.
    pub fn stats(&self) -> SessionStats {
        self.session
            .as_ref()
            .map(|s| s.stats.snapshot())
            .unwrap_or_default()
    }

    /// Sends a datagram to every other member of the channel. The payload is copied into a
    /// buffer the session has sent from before (a new one only while the session warms up).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), SdkError> {
        let s = self.session.as_mut().ok_or(SdkError::NotJoined)?;
        let mut buf = s.outgoing.spare.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        s.outgoing
            .full
            .send(buf)
            .await
            .map_err(|_| SdkError::Disconnected)
    }

    /// The next datagram from the channel.
    pub async fn recv(&mut self) -> Result<Received, SdkError> {
        let s = self.session.as_mut().ok_or(SdkError::NotJoined)?;
        s.incoming.recv().await.ok_or(SdkError::Disconnected)
    }

    /// The next datagram from the channel, its payload into `payload` (replacing what was
    /// there). `payload`'s previous storage goes back to the session for a later packet, so a
    /// caller that keeps reusing one `Vec` makes the receive path allocate nothing.
    pub async fn recv_into(&mut self, payload: &mut Vec<u8>) -> Result<ReceivedFrom, SdkError> {
        let s = self.session.as_mut().ok_or(SdkError::NotJoined)?;
        let r = s.incoming.recv().await.ok_or(SdkError::Disconnected)?;
        let spent = std::mem::replace(payload, r.payload);
        if spent.capacity() > 0 {
            // Full: the session allocates instead; nothing is lost.
            let _ = s.recycled.try_send(spent);
        }
        Ok(ReceivedFrom {
            from_uid: r.from_uid,
            seq: r.seq,
            sent_micros: r.sent_micros,
        })
    }

    /// Leaves the channel; returns the session's counters. The media service is told (LEAVE,
    /// answered with LEFT), then the relay's allocation is deleted (UDP) or the connection
    /// closed (TCP/TLS). Bounded: a dead relay or media service makes it wait at most a few
    /// seconds, never forever.
    pub async fn leave(&mut self) -> Result<SessionStats, SdkError> {
        let mut s = self.session.take().ok_or(SdkError::NotJoined)?;
        if let Some(stop) = s.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(LEAVE_BOUND, &mut s.task).await;
        s.task.abort();
        self.emit(Event::ConnectionStateChanged {
            state: ConnectionState::Disconnected,
            reason: StateReason::Leave,
        });
        Ok(s.stats.snapshot())
    }
}

struct SessionTask {
    config: ClientConfig,
    tls: Arc<rustls::ClientConfig>,
    mode: CloudProxyType,
    credential: Credential,
    info: JoinInfo,
    pipe: Pipe,
    outgoing: mpsc::Receiver<Vec<u8>>,
    /// Where sent payloads' buffers go back to the client.
    sent: mpsc::Sender<Vec<u8>>,
    incoming: mpsc::Sender<Received>,
    /// Buffers the client is done with, for received payloads.
    recycled: mpsc::Receiver<Vec<u8>>,
    stop: oneshot::Receiver<()>,
    events: mpsc::UnboundedSender<Event>,
    stats: Arc<SessionCounters>,
}

/// Per-sender sequence tracking for loss.
#[derive(Default)]
struct SeqTrack {
    next: u32,
}

async fn run_session(mut t: SessionTask) {
    let epoch = Instant::now();
    let mut seq: u32 = 0;
    let mut buf = Vec::with_capacity(2048);
    let mut out = Vec::with_capacity(2048);
    let mut tracks: HashMap<u32, SeqTrack> = HashMap::new();
    let mut last_rx = Instant::now();
    let mut last_ping = Instant::now();
    // The path returned an error (connection reset, ICMP port unreachable): it is gone.
    let mut path_failed = false;
    let mut offset = 0usize;
    let mut rejoined: Option<Instant> = None;
    loop {
        // The next PING: at the keepalive interval while packets come, every `probe_every`
        // once the path has been quiet for `probe_after`; and when the silence means the path
        // is dead. A failed path is dealt with at once.
        let ping_at = next_ping(&t.config, last_rx, last_ping);
        let wake = if path_failed {
            Instant::now()
        } else {
            ping_at.min(last_rx + t.config.path_timeout)
        };
        tokio::select! {
            // Sent by leave(), or dropped with the Client: either way, leave.
            _ = &mut t.stop => break,
            // A failed pipe is not read again: it would fail at once, every time, and starve
            // the tick that reconnects.
            r = t.pipe.recv(&mut buf), if !path_failed => {
                if r.is_err() {
                    // Reconnect at the top of the loop, now.
                    path_failed = true;
                    continue;
                }
                last_rx = Instant::now();
                match media::parse(&buf) {
                    Some(MediaMsg::Data { from_uid, seq: s, sent_micros, payload: range }) => {
                        let mut payload = t.recycled.try_recv().unwrap_or_default();
                        payload.clear();
                        payload.extend_from_slice(&buf[range]);
                        t.stats.received.fetch_add(1, Relaxed);
                        let track = tracks.entry(from_uid).or_default();
                        if s >= track.next {
                            t.stats.lost.fetch_add(u64::from(s - track.next), Relaxed);
                            track.next = s + 1;
                        }
                        let _ = t.incoming.try_send(Received { from_uid, seq: s, sent_micros, payload });
                    }
                    Some(MediaMsg::Pong { t: sent }) => {
                        let now = epoch.elapsed().as_micros() as u64;
                        t.stats.rtt_micros.store(now.saturating_sub(sent), Relaxed);
                    }
                    // The media service forgot us (restart, timeout, our seat taken by a join
                    // of the same uid from elsewhere): join again. Every DATA and PING gets a
                    // 404 until then; one JOIN per REJOIN_EVERY keeps the JOIN rate limits
                    // for the JOIN that echoes the cookie.
                    Some(MediaMsg::Error { code: 404, .. })
                        if rejoined.is_none_or(|at| at.elapsed() >= media::REJOIN_EVERY) =>
                    {
                        rejoined = Some(Instant::now());
                        let _ = t.pipe.send(&media::join(&t.credential.token, t.config.echo, None)).await;
                    }
                    Some(MediaMsg::Challenge { cookie }) => {
                        // That join's return-routability check: echo the cookie.
                        let _ = t.pipe.send(&media::join(&t.credential.token, t.config.echo, Some(cookie))).await;
                    }
                    _ => {}
                }
            }
            msg = t.outgoing.recv() => {
                // The Client is gone.
                let Some(payload) = msg else { break };
                media::data(seq, epoch.elapsed().as_micros() as u64, &payload, &mut out);
                seq = seq.wrapping_add(1);
                // The buffer goes back to the client for a later send (dropped when it has
                // enough).
                let _ = t.sent.try_send(payload);
                if t.pipe.send(&out).await.is_ok() {
                    t.stats.sent.fetch_add(1, Relaxed);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if path_failed || last_rx.elapsed() >= t.config.path_timeout {
                    offset += 1;
                    match reconnect(&mut t, offset).await {
                        Some(pipe) => {
                            // The replaced path is dropped: it says LEAVE and deletes its
                            // allocation in the background, bounded, so a dead relay cannot
                            // hold up the session.
                            t.pipe = pipe;
                            path_failed = false;
                            last_rx = Instant::now();
                            last_ping = Instant::now();
                            t.stats.reconnects.fetch_add(1, Relaxed);
                        }
                        // Given up; the old path is dropped with the task and releases.
                        None => return,
                    }
                    continue;
                }
                if Instant::now() < ping_at {
                    continue;
                }
                last_ping = Instant::now();
                media::ping(epoch.elapsed().as_micros() as u64, &mut out);
                let _ = t.pipe.send(&out).await;
                let _ = t.pipe.maintain().await;
            }
        }
    }
    let left = say_leave(&mut t.pipe, &mut buf).await;
    let released = t.pipe.close().await;
    tracing::debug!(left, ?released, "session ended");
}

/// When the session sends its next PING: a keepalive interval after the last one, or, once
/// nothing has come for `probe_after`, every `probe_every` (starting right when the quiet does).
fn next_ping(config: &ClientConfig, last_rx: Instant, last_ping: Instant) -> Instant {
    let keepalive = last_ping + config.keepalive;
    let probe = (last_rx + config.probe_after).max(last_ping + config.probe_every);
    keepalive.min(probe)
}

/// LEAVE to the media service, until LEFT comes back or [`LEAVE_PATIENCE`] has passed.
/// Whether LEFT came.
pub(crate) async fn say_leave(pipe: &mut Pipe, buf: &mut Vec<u8>) -> bool {
    let leave = media::leave();
    let deadline = tokio::time::Instant::now() + LEAVE_PATIENCE;
    loop {
        if pipe.send(&leave).await.is_err() {
            return false;
        }
        let resend = (tokio::time::Instant::now() + LEAVE_RESEND).min(deadline);
        loop {
            tokio::select! {
                r = pipe.recv(buf) => match r {
                    Ok(()) if media::parse(buf) == Some(MediaMsg::Left) => return true,
                    Ok(()) => {}
                    Err(_) => return false,
                },
                _ = tokio::time::sleep_until(resend) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

/// The path dropped: report it, try again (next proxy first) with bounded backoff.
async fn reconnect(t: &mut SessionTask, offset: usize) -> Option<Pipe> {
    let _ = t.events.send(Event::ConnectionStateChanged {
        state: ConnectionState::Reconnecting,
        reason: StateReason::Interrupted,
    });
    // The first attempt at once (through the next proxy: the media gap is what the user
    // hears), then with backoff.
    let mut backoff = Duration::ZERO;
    for _ in 0..t.config.reconnect_attempts {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(8));
        let Ok(mut candidates) = connect::candidates(&t.config, t.mode, offset) else {
            break;
        };
        // The path that just failed is tried last, and after a proxy failed, Auto tries the
        // other proxies before going direct again (direct did not win at the join): the gap
        // is what the user hears.
        let failed = t.info.server;
        let after_proxy = t.info.path.is_proxy();
        candidates.sort_by_key(|c| {
            (
                c.target == failed,
                after_proxy && c.kind == PathKind::Direct,
            )
        });
        if let Ok((winner, Joined { pipe, seen_as, .. })) =
            connect::race(&t.config, &t.tls, candidates, &t.credential).await
        {
            t.info.path = winner.kind;
            t.info.server = winner.target;
            t.info.seen_as = seen_as;
            let _ = t.events.send(Event::ConnectionStateChanged {
                state: ConnectionState::Connected,
                reason: StateReason::JoinSuccess,
            });
            let _ = t.events.send(Event::IsUsingCloudProxy {
                using: winner.kind.is_proxy(),
            });
            return Some(pipe);
        }
    }
    let _ = t.events.send(Event::ConnectionStateChanged {
        state: ConnectionState::Failed,
        reason: StateReason::JoinFailed,
    });
    None
}
