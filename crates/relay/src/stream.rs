//! TCP and TLS clients (RFC 8656 §3.1, RFC 7443 over TLS).
//!
//! Each connection is a task on the shard that accepted it. Frames are cut with
//! [`cloudproxy_proto::channel::stream_frame_len`]; a byte sequence that is neither STUN nor
//! ChannelData ends that connection only. Output to the client goes through a bounded queue
//! drained by the connection's writer half, so a slow client never blocks the shard: when its
//! queue is full, media for it is dropped, as a congested UDP path would.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_proto::channel::stream_frame_len;
use cloudproxy_proto::{ClientAddr, Transport};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::shard::SharedShard;

/// Bytes queued toward one client before further media is dropped.
const MAX_QUEUED: usize = 1 << 20;
/// A connection's read buffer starts small, so ten thousand idle connections cost little...
const READ_BUF_START: usize = 4096;
/// ...and grows once to hold the largest frame: a STUN message of 65535 + 20 bytes.
const READ_BUF_MAX: usize = 65_535 + 20 + 4096;

/// Caps TCP/TLS connections over all shards.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
    gauge: Gauge,
}

impl ConnectionLimit {
    pub(crate) fn new(max: usize, gauge: Gauge) -> Self {
        Self {
            max,
            open: AtomicUsize::new(0),
            gauge,
        }
    }

    fn try_open(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.gauge.inc();
        Some(ConnectionSlot(self.clone()))
    }
}

struct ConnectionSlot(Arc<ConnectionLimit>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

#[derive(Default)]
struct Queue {
    /// Whole frames, back to back: a byte ring that grows to the connection's high-water mark
    /// once and is reused, so queueing a frame does not allocate.
    bytes: VecDeque<u8>,
    closed: bool,
}

/// The shard's handle on a connection's outgoing queue.
#[derive(Clone)]
pub(crate) struct StreamSink {
    queue: Rc<RefCell<Queue>>,
    /// Wakes the writer half.
    wake: Rc<Notify>,
    /// Wakes the reader half when the shard closes the connection.
    closed: Rc<Notify>,
}

impl StreamSink {
    fn new() -> Self {
        Self {
            queue: Rc::default(),
            wake: Rc::new(Notify::new()),
            closed: Rc::new(Notify::new()),
        }
    }

    /// Queues a frame; false if the queue is full or closed (the frame is dropped).
    pub(crate) fn push(&self, data: &[u8]) -> bool {
        let mut q = self.queue.borrow_mut();
        if q.closed || q.bytes.len() + data.len() > MAX_QUEUED {
            return false;
        }
        // Frames are only ever queued whole, so the byte stream stays framed.
        q.bytes.extend(data);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Ends the connection after what is queued has been written.
    pub(crate) fn close(&self) {
        self.queue.borrow_mut().closed = true;
        self.wake.notify_one();
        self.closed.notify_one();
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
        alpn == Some(crate::tls::ALPN_HTTP1)
            || (sni.is_some() && sni == self.server_name.as_deref())
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

#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept(
    shard: SharedShard,
    listener: TcpListener,
    transport: Transport,
    tls: Option<Arc<rustls::ServerConfig>>,
    api: Option<Arc<ApiRoute>>,
    limit: Arc<ConnectionLimit>,
    idle: Duration,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("listener address: {e}");
            return;
        }
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept on {local}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limit.try_open() else {
            tracing::debug!(%remote, "connection limit reached; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let client = ClientAddr {
            transport,
            remote,
            local,
        };
        let shard = shard.clone();
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::task::spawn_local(async move {
            let _slot = slot;
            match acceptor {
                None => serve(shard, tcp, client, idle).await,
                Some(acceptor) => match tokio::time::timeout(idle, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let (_, conn) = tls.get_ref();
                        let route =
                            api.filter(|r| r.wants(conn.alpn_protocol(), conn.server_name()));
                        match route {
                            Some(route) => splice(tls, &route, remote).await,
                            None => serve(shard, tls, client, idle).await,
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                },
            }
        });
    }
}

async fn serve<S>(shard: SharedShard, stream: S, client: ClientAddr, idle: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let sink = StreamSink::new();
    shard.borrow_mut().streams.insert(client, sink.clone());
    let writer = tokio::task::spawn_local(write_loop(wr, sink.clone()));
    let reason = read_loop(&shard, &mut rd, client, idle, &sink).await;
    tracing::debug!(%client, "connection closed: {reason}");
    {
        let mut s = shard.borrow_mut();
        s.streams.remove(&client);
        s.server.handle_client_closed(client);
        s.flush(&shard);
    }
    sink.close();
    let _ = writer.await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    shard: &SharedShard,
    rd: &mut R,
    client: ClientAddr,
    idle: Duration,
    sink: &StreamSink,
) -> &'static str {
    let mut buf = vec![0u8; READ_BUF_START];
    let mut filled = 0;
    loop {
        if sink.queue.borrow().closed {
            return "allocation ended";
        }
        // Without an allocation a connection must keep making progress; with one, it lives
        // as long as the allocation does.
        let has_allocation = shard.borrow().server.has_allocation(&client);
        let read = rd.read(&mut buf[filled..]);
        let n = if has_allocation {
            tokio::select! {
                r = read => r,
                _ = sink.closed.notified() => return "allocation ended",
            }
        } else {
            match tokio::time::timeout(idle, read).await {
                Ok(r) => r,
                Err(_) => return "idle timeout",
            }
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
                    match s.server.handle_client_input(frame, client, Instant::now()) {
                        Some(fwd) => s.forward(&fwd, frame, client.transport),
                        None => s.flush(shard),
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
        shard.borrow_mut().schedule_flush();
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() && buf.len() < READ_BUF_MAX {
            // A frame larger than the buffer is arriving.
            buf.resize(READ_BUF_MAX, 0);
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, sink: StreamSink) {
    // Bytes move from the queue into this buffer (reused) and are written from it, so no borrow
    // of the queue is held across an await.
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let closed = {
            let mut q = sink.queue.borrow_mut();
            let n = q.bytes.len().min(64 * 1024);
            out.clear();
            out.extend(q.bytes.drain(..n));
            q.closed
        };
        if out.is_empty() {
            if closed {
                break;
            }
            let _ = wr.flush().await;
            sink.wake.notified().await;
            continue;
        }
        if wr.write_all(&out).await.is_err() {
            sink.queue.borrow_mut().closed = true;
            break;
        }
    }
    let _ = wr.shutdown().await;
}
