//! TCP and TLS clients (RFC 8656 §3.1, RFC 7443 over TLS).
//!
//! Each connection is a task on the shard that accepted it (the event loop spawns it). Frames
//! are cut with [`cloudproxy_proto::channel::stream_frame_len`] and handed to the shard; a byte
//! sequence that is neither STUN nor ChannelData ends that connection only. Output to the
//! client goes through its [`StreamSink`], written by the same task, so a slow client never
//! blocks the shard.
//!
//! A connection is attacker input, so it is held to deadlines that no byte extends:
//!
//! - it must hold an allocation within [`Deadlines::allocate`] of being accepted (the TLS
//!   handshake included);
//! - a frame that has started must be complete within [`Deadlines::frame`];
//! - with an allocation it may idle between frames (TURN keeps it through refreshes).
//!
//! Memory follows what actually arrived, not what a header announces: the read buffer starts
//! at 4 KiB and doubles only when full; before an allocation no frame may exceed 4 KiB (an
//! Allocate is a few hundred bytes). Connections are capped in total and per source address;
//! a refusal is counted and logged at most every 10 s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudproxy_proto::channel::stream_frame_len;
use cloudproxy_proto::ClientAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::shard::{Outcome, SharedShard};
use crate::sink::StreamSink;
/// A connection's read buffer starts small, so ten thousand idle connections cost little...
const READ_BUF_START: usize = 4096;
/// ...and grows once to hold the largest frame: a STUN message of 65535 + 20 bytes.
const READ_BUF_MAX: usize = 65_535 + 20 + 4096;

/// The largest frame a connection without an allocation may send.
const PRE_ALLOCATION_FRAME: usize = READ_BUF_START;
/// How often a refused connection may be logged at warning level.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a connection may take (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub allocate: Duration,
    pub frame: Duration,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total,
    PerSource,
}

/// Caps TCP/TLS connections over all shards, in total and per source address.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    max: usize,
    per_ip: usize,
    open: AtomicUsize,
    // A std Mutex: taken on accept and close only, never across an await.
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
    /// Refusals since the last warning, and when that was.
    refused: Mutex<(u64, Option<Instant>)>,
}

impl ConnectionLimit {
    pub(crate) fn new(max: usize, per_ip: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max,
            per_ip,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
            metrics,
            refused: Mutex::new((0, None)),
        }
    }

    pub(crate) fn try_open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if self.open.load(Ordering::Acquire) >= self.max {
            return Err(Refusal::Total);
        }
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            if *n == 0 {
                by_ip.remove(&ip);
            }
            return Err(Refusal::PerSource);
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.stream_connections.inc();
        Ok(ConnectionSlot {
            limit: self.clone(),
            ip,
        })
    }

    /// Counts a refusal, and warns about the refusals so far at most every 10 s.
    pub(crate) fn refused(&self, why: Refusal, remote: std::net::SocketAddr) {
        self.metrics.stream_refused(match why {
            Refusal::Total => "total_limit",
            Refusal::PerSource => "per_source_limit",
        });
        let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        r.0 += 1;
        let now = Instant::now();
        if r.1
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                %remote,
                refused = r.0,
                "TCP/TLS connection limit reached ({} in all, {} per source address): \
                 refusing connections (cloudproxy_stream_refused_total)",
                self.max,
                self.per_ip
            );
            *r = (0, Some(now));
        }
    }
}

/// A connection counted against the limits while it lives.
pub(crate) struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut by_ip = self.limit.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
        self.limit.metrics.stream_connections.dec();
    }
}

/// Where TLS connections that want HTTP go: the control plane's API.
#[derive(Debug)]
pub(crate) struct ApiRoute {
    /// `host:port` of the control plane.
    pub upstream: String,
    /// A server name (SNI) that means HTTP even without ALPN.
    pub server_name: Option<String>,
}

impl ApiRoute {
    /// Whether a TLS connection with this ALPN and SNI is an HTTP client.
    fn wants(&self, alpn: Option<&[u8]>, sni: Option<&str>) -> bool {
        crate::tls::wants_api(alpn, sni, self.server_name.as_deref())
    }
}

/// Carries an HTTP client's decrypted bytes to the control plane and back.
async fn splice<S>(mut client: S, route: &ApiRoute, remote: std::net::SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = match tokio::net::TcpStream::connect(&route.upstream).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(%remote, "API client: cannot reach the control plane at {}: {e}", route.upstream);
            let body = "{\"error\":{\"code\":\"unavailable\",\"message\":\"the control plane is unreachable from this relay\",\"fields\":[]}}";
            let answer = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(%remote, up, down, "API client done"),
        Err(e) => tracing::debug!(%remote, "API client: {e}"),
    }
}

/// What a connection task needs besides its socket.
#[derive(Clone)]
pub(crate) struct ConnectionSetup {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub api: Option<Arc<ApiRoute>>,
    pub deadlines: Deadlines,
}

/// One accepted client connection, from the TLS handshake (when TLS) to its close.
pub(crate) async fn connection(
    shard: SharedShard,
    tcp: TcpStream,
    client: ClientAddr,
    setup: ConnectionSetup,
    _slot: ConnectionSlot,
) {
    let accepted = Instant::now();
    let _ = tcp.set_nodelay(true);
    let deadlines = setup.deadlines;
    let allocate_by = accepted + deadlines.allocate;
    let remote = client.remote;
    match setup.tls {
        None => serve(shard, tcp, client, deadlines, allocate_by).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout_at(allocate_by.into(), acceptor.accept(tcp));
            match handshake.await {
                Ok(Ok(tls)) => {
                    let (_, conn) = tls.get_ref();
                    let route = setup
                        .api
                        .filter(|r| r.wants(conn.alpn_protocol(), conn.server_name()));
                    match route {
                        Some(route) => splice(tls, &route, remote).await,
                        None => serve(shard, tls, client, deadlines, allocate_by).await,
                    }
                }
                Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                Err(_) => {
                    shard.borrow().metrics.stream_timed_out("handshake");
                    tracing::debug!(%remote, "TLS handshake timed out")
                }
            }
        }
    }
}

/// Reads frames until the connection ends, while the same task writes the client's queue.
async fn serve<S>(
    shard: SharedShard,
    stream: S,
    client: ClientAddr,
    deadlines: Deadlines,
    allocate_by: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let sink = StreamSink::new();
    shard
        .borrow_mut()
        .handle_stream_opened(client, sink.clone());
    let read = async {
        let reason = read_loop(&shard, &mut rd, client, deadlines, allocate_by, &sink).await;
        tracing::debug!(%client, "connection closed: {reason}");
        shard.borrow_mut().handle_stream_closed(client);
        sink.close();
    };
    tokio::join!(read, sink.write_to(wr));
}

async fn read_loop<R: AsyncRead + Unpin>(
    shard: &SharedShard,
    rd: &mut R,
    client: ClientAddr,
    deadlines: Deadlines,
    allocate_by: Instant,
    sink: &StreamSink,
) -> &'static str {
    let mut buf = vec![0u8; READ_BUF_START];
    let mut filled = 0;
    // When the first byte of the frame now arriving came (None: between frames).
    let mut frame_since: Option<Instant> = None;
    loop {
        if sink.is_closed() {
            return "allocation ended";
        }
        let has_allocation = shard.borrow().has_allocation(&client);
        // The earliest deadline that applies; no byte moves it.
        let frame_by = frame_since.map(|t| t + deadlines.frame);
        let deadline = match (has_allocation, frame_by) {
            (false, Some(f)) => Some(f.min(allocate_by)),
            (false, None) => Some(allocate_by),
            (true, f) => f,
        };
        let read = rd.read(&mut buf[filled..]);
        let n = match deadline {
            None => tokio::select! {
                r = read => r,
                _ = sink.closed() => return "allocation ended",
            },
            Some(at) => tokio::select! {
                r = read => r,
                _ = sink.closed() => return "allocation ended",
                _ = tokio::time::sleep_until(at.into()) => {
                    let frame_late = frame_by.is_some_and(|f| f <= at);
                    let (kind, why) = if frame_late {
                        ("frame", "a frame was not completed in time")
                    } else {
                        ("allocate", "no allocation in time")
                    };
                    shard.borrow().metrics.stream_timed_out(kind);
                    return why;
                }
            },
        };
        let n = match n {
            Ok(0) => return "closed by client",
            Ok(n) => n,
            Err(_) => return "read error",
        };
        filled += n;
        let mut start = 0;
        loop {
            match stream_frame_len(&buf[start..filled]) {
                Ok(Some(len)) => {
                    let frame = &buf[start..start + len];
                    let mut s = shard.borrow_mut();
                    // A response goes out before any later frame's data.
                    if s.handle_stream_frame(frame, client, Instant::now()) == Outcome::Handled {
                        s.apply_output();
                    }
                    start += len;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%client, "bad stream data: {e}");
                    return "not TURN";
                }
            }
        }
        // The frames' payloads were queued in the shard's batch: send them once the tasks
        // that are ready now have run.
        shard.borrow_mut().schedule_send();
        buf.copy_within(start..filled, 0);
        filled -= start;
        frame_since = match (filled, start) {
            (0, _) => None,
            // A new frame began in this read.
            (_, 1..) => Some(Instant::now()),
            (_, 0) => frame_since.or_else(|| Some(Instant::now())),
        };
        if filled == buf.len() {
            // The frame in progress fills the buffer. Grow by what arrived (doubling), up to
            // the largest frame; before an allocation no frame needs more than 4 KiB.
            if buf.len() >= PRE_ALLOCATION_FRAME && !shard.borrow().has_allocation(&client) {
                return "frame too large before an allocation";
            }
            if buf.len() >= READ_BUF_MAX {
                return "frame too large";
            }
            buf.resize((buf.len() * 2).min(READ_BUF_MAX), 0);
        }
    }
}
