//! Prometheus metrics and the `/metrics` HTTP endpoint.
//!
//! Nothing here is labelled per user or per client address: label values come from small fixed
//! sets (direction, transport, STUN error code), so the series count is bounded no matter what
//! clients send.
//!
//! The data path must not take a lock per packet. prometheus-client's `Family::get_or_create`
//! takes a read lock, so the six traffic label combinations are created once in
//! [`Metrics::new`] and their [`Counter`] handles (each an `Arc<AtomicU64>`) are kept in a fixed
//! array; [`Metrics::traffic`] is an index into it, and counting is one relaxed atomic add.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cloudproxy_proto::Transport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Content type of the OpenMetrics text exposition that [`Metrics::encode`] produces.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which way relayed data went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (Send indication or ChannelData) out of a relayed transport address.
    ClientToPeer,
    /// From a peer into a relayed transport address, on to the client.
    PeerToClient,
}

impl Direction {
    /// The `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToPeer => "client_to_peer",
            Direction::PeerToClient => "peer_to_client",
        }
    }
}

/// Packet and byte counters for one (direction, transport) pair. Cloning a [`Counter`] shares
/// it, so a driver may keep its own copies.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Datagrams or ChannelData frames relayed.
    pub packets: Counter,
    /// Payload bytes relayed.
    pub bytes: Counter,
}

impl Traffic {
    /// Counts one relayed packet of `len` payload bytes.
    #[inline]
    pub fn record(&self, len: usize) {
        self.packets.inc();
        self.bytes.inc_by(len as u64);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    direction: &'static str,
    transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Traffic counted by one shard with plain integers and published to the shared counters in
/// bulk (on every control-path flush, and every 250 ms), so two cores never write the same
/// cache line for every packet.
#[derive(Debug, Default)]
pub struct LocalTraffic {
    counts: [(u64, u64); 6],
}

impl LocalTraffic {
    /// Counts one relayed packet of `len` payload bytes.
    #[inline]
    pub fn record(&mut self, dir: Direction, transport: Transport, len: usize) {
        let c = &mut self.counts[traffic_index(dir, transport)];
        c.0 += 1;
        c.1 += len as u64;
    }

    /// Adds what was counted since the last call to `metrics`.
    pub fn publish(&mut self, metrics: &Metrics) {
        for (i, c) in self.counts.iter_mut().enumerate() {
            if c.0 > 0 {
                metrics.traffic[i].packets.inc_by(c.0);
                metrics.traffic[i].bytes.inc_by(c.1);
                *c = (0, 0);
            }
        }
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::ClientToPeer, Direction::PeerToClient];
const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

fn traffic_index(dir: Direction, transport: Transport) -> usize {
    let d = match dir {
        Direction::ClientToPeer => 0,
        Direction::PeerToClient => 1,
    };
    let t = match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    };
    d * TRANSPORTS.len() + t
}

/// The relay's metrics. Share it as `Arc<Metrics>`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `cloudproxy_allocations`: allocations currently held.
    pub allocations: Gauge,
    /// `cloudproxy_allocations_created_total`: successful Allocate requests.
    pub allocations_created: Counter,
    /// `cloudproxy_stream_connections`: TCP and TLS client connections currently open.
    pub stream_connections: Gauge,
    /// `cloudproxy_draining`: 1 while draining (no new allocations), else 0.
    pub draining: Gauge,
    /// `cloudproxy_control_sync_age_seconds`: seconds since the last successful sync with the
    /// control plane (-1 before the first). Grows while the control plane is unreachable and
    /// the relay works from its last good copy.
    pub control_sync_age: Gauge,
    /// `cloudproxy_control_sync_failures_total`: sync attempts that failed.
    pub control_sync_failures: Counter,
    /// `cloudproxy_control_unchecked_admissions_total`: Force-mode allocations admitted
    /// without the central quota check because the control plane did not answer in time.
    pub control_unchecked_admissions: Counter,
    /// `cloudproxy_usage_reports_pending`: usage reports not yet acknowledged.
    pub usage_reports_pending: Gauge,
    /// `cloudproxy_send_dropped_total`: datagrams the kernel refused to send (a send buffer
    /// that stayed full, or an error about that datagram) and that were therefore dropped.
    pub send_dropped: Counter,
    /// `cloudproxy_malformed_dropped_total`: malformed STUN messages dropped without answer.
    pub malformed_dropped: Counter,
    /// `cloudproxy_reflection_suppressed_total`: answers to unauthenticated requests not sent
    /// because they would have been more than 4× the request.
    pub reflection_suppressed: Counter,
    /// `cloudproxy_config_last_reload_successful`: 1 if the last reload (SIGHUP) took
    /// effect or none was tried, 0 if it was refused and the previous configuration is in force.
    pub config_last_reload_successful: Gauge,
    /// `cloudproxy_event_loop_lag_seconds`: how late an event loop's 10 ms tick ran, all
    /// shards together. A shard that is late does not read its listener, and a listener's
    /// buffer holds a fraction of a second of datagrams; see [`EVENT_LOOP_STALL`].
    pub event_loop_lag: Histogram,
    /// `cloudproxy_event_loop_stalls_total`: ticks later than [`EVENT_LOOP_STALL`].
    pub event_loop_stalls: Counter,
    /// `cloudproxy_fastpath_entries`: channel bindings forwarded in the kernel now.
    pub fastpath_entries: Gauge,
    fastpath_packets: Family<DirectionLabels, Counter>,
    fastpath_bytes: Family<DirectionLabels, Counter>,
    traffic: [Traffic; 6],
    auth_failures: Counter,
    errors: Family<ErrorLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    stream_refused: Family<ReasonLabels, Counter>,
    stream_timeouts: Family<ReasonLabels, Counter>,
    /// Liveness: when each event loop last beat (every 250 ms). Locked by each shard four
    /// times a second and by `/healthz`, never per packet.
    beats: std::sync::Mutex<Vec<std::time::Instant>>,
    /// Readiness under a control plane: a directory (from a sync or the cache) is in force.
    governed: std::sync::atomic::AtomicBool,
    directory: std::sync::atomic::AtomicBool,
}

/// A tick this late is a stall, logged with what the thread did meanwhile.
pub const EVENT_LOOP_STALL: std::time::Duration = std::time::Duration::from_millis(100);

/// An event loop that has not beaten for this long is stalled (`/healthz` answers 503).
const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Registers metrics and hands back each one's handle, so a metric is named once where it is
/// made. The registry keeps a clone, which shares the value (every metric type here is an `Arc`
/// inside).
struct Registrar<'r>(&'r mut Registry);

impl Registrar<'_> {
    /// A counter, gauge or family that starts at zero (a family: with no series); which one is
    /// inferred from the [`Metrics`] field it ends up in.
    fn metric<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.register(name, help, M::default())
    }

    /// A gauge that starts at `value` rather than zero.
    fn gauge_at(&mut self, name: &str, help: &str, value: i64) -> Gauge {
        let gauge: Gauge = self.metric(name, help);
        gauge.set(value);
        gauge
    }

    /// A histogram with these bucket bounds.
    fn histogram(&mut self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(name, help, Histogram::new(buckets.iter().copied()))
    }

    /// Registers `metric` and returns it.
    fn register<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered for the `/metrics` text exposition.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut r = Registrar(&mut registry);

        let allocations = r.metric("cloudproxy_allocations", "Allocations currently held");
        let allocations_created = r.metric("cloudproxy_allocations_created", "Allocations created");
        let stream_connections = r.metric(
            "cloudproxy_stream_connections",
            "TCP and TLS client connections currently open",
        );
        let draining = r.metric(
            "cloudproxy_draining",
            "1 while the relay is draining (refusing new allocations), else 0",
        );

        let control_sync_age = r.gauge_at(
            "cloudproxy_control_sync_age_seconds",
            "Seconds since the last successful control-plane sync (-1: none yet)",
            -1,
        );
        let control_sync_failures = r.metric(
            "cloudproxy_control_sync_failures",
            "Control-plane sync attempts that failed",
        );
        let control_unchecked_admissions = r.metric(
            "cloudproxy_control_unchecked_admissions",
            "Force-mode allocations admitted without the central quota check (control plane unreachable)",
        );
        let usage_reports_pending = r.metric(
            "cloudproxy_usage_reports_pending",
            "Usage reports not yet acknowledged by the control plane",
        );
        let send_dropped = r.metric(
            "cloudproxy_send_dropped",
            "Relayed datagrams dropped because the kernel refused to send them",
        );

        let packets: Family<TrafficLabels, Counter> = r.metric(
            "cloudproxy_packets",
            "Relayed packets, by direction and client transport",
        );
        let bytes: Family<TrafficLabels, Counter> = r.metric(
            "cloudproxy_bytes",
            "Relayed payload bytes, by direction and client transport",
        );
        let traffic = std::array::from_fn(|i| {
            let labels = TrafficLabels {
                direction: DIRECTIONS[i / TRANSPORTS.len()].as_str(),
                transport: TRANSPORTS[i % TRANSPORTS.len()].as_str(),
            };
            Traffic {
                packets: packets.get_or_create(&labels).clone(),
                bytes: bytes.get_or_create(&labels).clone(),
            }
        });

        let auth_failures = r.metric(
            "cloudproxy_auth_failures",
            "Requests refused for bad credentials (wrong password, expired or unknown username)",
        );
        let errors = r.metric(
            "cloudproxy_errors",
            "STUN error responses sent, by error code",
        );

        let malformed_dropped = r.metric(
            "cloudproxy_malformed_dropped",
            "Malformed STUN messages dropped without an answer",
        );
        let reflection_suppressed = r.metric(
            "cloudproxy_reflection_suppressed",
            "Answers to unauthenticated requests not sent because they would exceed 4x the request",
        );
        let stream_refused = r.metric(
            "cloudproxy_stream_refused",
            "TCP/TLS connections refused at accept, by reason: total_limit or per_source_limit",
        );
        let stream_timeouts = r.metric(
            "cloudproxy_stream_timeouts",
            "TCP/TLS connections closed by a deadline, by reason: handshake, allocate or frame",
        );
        let reloads = r.metric(
            "cloudproxy_config_reloads",
            "Configuration reloads (SIGHUP), by outcome: ok, or error (the old one stays in force)",
        );
        let config_last_reload_successful = r.gauge_at(
            "cloudproxy_config_last_reload_successful",
            "1 if the last configuration reload took effect (or none was tried), else 0",
            1,
        );

        let event_loop_lag = r.histogram(
            "cloudproxy_event_loop_lag_seconds",
            "How late the event loops' 10 ms ticks ran (all shards)",
            &[
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
            ],
        );
        let event_loop_stalls = r.metric(
            "cloudproxy_event_loop_stalls",
            "Event-loop ticks later than 100 ms (the shard read none of its sockets meanwhile)",
        );

        let fastpath_entries = r.metric(
            "cloudproxy_fastpath_entries",
            "Channel bindings forwarded in the kernel (XDP) now",
        );
        let fastpath_packets = r.metric(
            "cloudproxy_fastpath_packets",
            "ChannelData packets forwarded in the kernel (XDP), by direction (read every 5 s and when a binding ends)",
        );
        let fastpath_bytes = r.metric(
            "cloudproxy_fastpath_bytes",
            "Payload bytes forwarded in the kernel (XDP), by direction",
        );

        Self {
            registry,
            fastpath_entries,
            fastpath_packets,
            fastpath_bytes,
            event_loop_lag,
            event_loop_stalls,
            allocations,
            allocations_created,
            stream_connections,
            draining,
            control_sync_age,
            control_sync_failures,
            control_unchecked_admissions,
            usage_reports_pending,
            send_dropped,
            traffic,
            auth_failures,
            errors,
            reloads,
            config_last_reload_successful,
            malformed_dropped,
            reflection_suppressed,
            stream_refused,
            stream_timeouts,
            beats: std::sync::Mutex::new(Vec::new()),
            governed: std::sync::atomic::AtomicBool::new(false),
            directory: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The relay runs `shards` event loops, each of which will call [`Metrics::beat`].
    pub fn expect_shards(&self, shards: usize) {
        let now = std::time::Instant::now();
        *self.beats.lock().unwrap_or_else(|e| e.into_inner()) = vec![now; shards];
    }

    /// Event loop `shard` is alive.
    pub fn beat(&self, shard: usize) {
        let mut b = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = b.get_mut(shard) {
            *t = std::time::Instant::now();
        }
    }

    /// A control plane governs this relay: it is ready only once a directory is in force.
    pub fn set_governed(&self) {
        self.governed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A directory (from a sync or the sync cache) is in force.
    pub fn directory_loaded(&self) {
        self.directory
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Err(why)` when an event loop has stalled.
    pub fn health(&self) -> Result<(), String> {
        let b = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let stalled: Vec<String> = b
            .iter()
            .enumerate()
            .filter(|(_, t)| t.elapsed() > STALLED_AFTER)
            .map(|(i, t)| {
                format!(
                    "event loop {i} silent for {:.1} s",
                    t.elapsed().as_secs_f64()
                )
            })
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled.join("; "))
        }
    }

    /// `Err(why)` when the relay should not be sent new clients: unhealthy, draining, or
    /// governed by a control plane without a directory yet.
    pub fn readiness(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        self.health()?;
        if self.draining.get() != 0 {
            return Err("draining: new allocations are refused".into());
        }
        if self.governed.load(Relaxed) && !self.directory.load(Relaxed) {
            return Err("no control-plane directory yet (no sync, no cache)".into());
        }
        Ok(())
    }

    /// Counts what the kernel forwarded for one binding since the last look.
    pub fn fastpath_forwarded(&self, client_to_peer: bool, packets: u64, bytes: u64) {
        let direction = if client_to_peer {
            Direction::ClientToPeer
        } else {
            Direction::PeerToClient
        }
        .as_str();
        let labels = DirectionLabels { direction };
        self.fastpath_packets.get_or_create(&labels).inc_by(packets);
        self.fastpath_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// Counts a TCP/TLS connection refused at accept. Accept path only.
    pub fn stream_refused(&self, reason: &'static str) {
        self.stream_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a TCP/TLS connection closed by one of its deadlines.
    pub fn stream_timed_out(&self, reason: &'static str) {
        self.stream_timeouts
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a configuration reload and sets the last-reload gauge.
    pub fn config_reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { outcome }).inc();
        self.config_last_reload_successful.set(i64::from(ok));
    }

    /// The counters for one direction and client transport. Lock-free.
    #[inline]
    pub fn traffic(&self, dir: Direction, transport: Transport) -> &Traffic {
        &self.traffic[traffic_index(dir, transport)]
    }

    /// Relayed payload bytes so far, every direction and transport.
    pub fn total_bytes(&self) -> u64 {
        self.traffic.iter().map(|t| t.bytes.get()).sum()
    }

    /// Counts a request refused for bad credentials.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Counts an error response with this STUN error code. Control path: takes the family's
    /// lock.
    pub fn error_sent(&self, code: u16) {
        self.errors.get_or_create(&ErrorLabels { code }).inc();
    }

    /// Sets the draining gauge.
    pub fn set_draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }

    /// The OpenMetrics text exposition of every metric (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (OpenMetrics text) and a short pointer at `GET /` on `listener` until
/// `shutdown` completes. Other paths get 404.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .route("/", get(get_root))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn get_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], metrics.encode())
}

/// Liveness: 200 while every event loop runs, 503 naming a stalled one.
async fn get_healthz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    probe(metrics.health(), "ok")
}

/// Readiness: 200 when the relay takes new clients; 503 saying why not (draining, stalled,
/// no control-plane directory yet), so a load balancer stops sending clients.
async fn get_readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    probe(metrics.readiness(), "ready")
}

fn probe(r: Result<(), String>, ok: &str) -> (axum::http::StatusCode, String) {
    match r {
        Ok(()) => (axum::http::StatusCode::OK, format!("{ok}\n")),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}\n"),
        ),
    }
}

async fn get_root() -> &'static str {
    "cloudproxy relay: Prometheus metrics at /metrics, liveness at /healthz, readiness at /readyz\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn traffic_handles_are_distinct_and_labelled() {
        let m = Metrics::new();
        m.traffic(Direction::ClientToPeer, Transport::Udp)
            .record(100);
        m.traffic(Direction::ClientToPeer, Transport::Udp)
            .record(20);
        m.traffic(Direction::PeerToClient, Transport::Tls).record(7);
        let text = m.encode();
        for series in [
            r#"cloudproxy_packets_total{direction="client_to_peer",transport="udp"} 2"#,
            r#"cloudproxy_bytes_total{direction="client_to_peer",transport="udp"} 120"#,
            r#"cloudproxy_bytes_total{direction="peer_to_client",transport="tls"} 7"#,
            // All six combinations exist from the start, at zero.
            r#"cloudproxy_packets_total{direction="peer_to_client",transport="tcp"} 0"#,
        ] {
            assert!(text.contains(series), "no {series} in:\n{text}");
        }
        let mut seen = std::collections::HashSet::new();
        for d in DIRECTIONS {
            for t in TRANSPORTS {
                assert!(seen.insert(traffic_index(d, t)));
            }
        }
        assert_eq!(seen.len(), 6);
        assert!(text.ends_with("# EOF\n"));
    }

    /// One HTTP/1.1 request over a raw socket; returns (status line, headers, body).
    async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").expect("a complete response");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (
            status.to_owned(),
            headers.to_ascii_lowercase(),
            body.to_owned(),
        )
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let metrics = Arc::new(Metrics::new());
        metrics.allocations.set(3);
        metrics.allocations_created.inc_by(5);
        metrics.auth_failure();
        metrics.error_sent(401);
        metrics.error_sent(401);
        metrics.error_sent(486);
        metrics.set_draining(true);
        metrics
            .traffic(Direction::PeerToClient, Transport::Tcp)
            .record(1000);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics.clone(), async {
            let _ = stopped.await;
        }));

        let (status, headers, body) = http_get(addr, "/metrics").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(
            headers.contains(&format!("content-type: {CONTENT_TYPE_OPENMETRICS}")),
            "{headers}"
        );
        for line in [
            "cloudproxy_allocations 3",
            "cloudproxy_allocations_created_total 5",
            "cloudproxy_auth_failures_total 1",
            r#"cloudproxy_errors_total{code="401"} 2"#,
            r#"cloudproxy_errors_total{code="486"} 1"#,
            "cloudproxy_draining 1",
            "cloudproxy_stream_connections 0",
            r#"cloudproxy_packets_total{direction="peer_to_client",transport="tcp"} 1"#,
            r#"cloudproxy_bytes_total{direction="peer_to_client",transport="tcp"} 1000"#,
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }

        let (status, _, body) = http_get(addr, "/").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(body.contains("/metrics"), "{body}");

        let (status, _, _) = http_get(addr, "/nope").await;
        assert!(status.contains(" 404 "), "{status}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
