//! I/O drivers for the cloudproxy relay. See ARCHITECTURE.md.
//!
//! [`Relay::start`] binds every listener (so bind errors come back at once, naming the
//! address), then spawns one event loop per shard, each a thread with a single-threaded tokio
//! runtime that owns one sans-IO [`cloudproxy_proto::Server`]. UDP and TCP listeners are bound
//! once per shard with `SO_REUSEPORT`, so the kernel spreads clients over the shards and a
//! client's packets always reach the shard that owns its allocation. Nothing is shared between
//! shards on the data path but the metric counters (atomics).

pub mod metrics;
pub mod tls;

mod batch;
mod config;
mod event_loop;
mod fastpath;
pub mod host;
pub mod link;
mod shard;
mod sink;
mod sockets;
mod stream;
mod udp;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use cloudproxy_proto::{Shared, Transport};
use config::ServerReload;
use event_loop::ShardControl;
use socket2::{Protocol, Type};
use sockets::{bind_tcp, bind_udp, probe};
use tokio::sync::mpsc;

pub use cloudproxy_xdp::Mode as FastPathMode;
pub use config::{FastPathConfig, RelayConfig, LISTENER_BUFFER};
pub use metrics::Metrics;

/// The addresses the relay actually bound (port 0 in the config becomes a real port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    /// The TURN-over-UDP listeners, in configuration order.
    pub udp: Vec<SocketAddr>,
    /// The TURN-over-TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// The TURN-over-TLS listeners.
    pub tls: Vec<SocketAddr>,
    /// The Prometheus `/metrics` HTTP listener, if configured.
    pub metrics: Option<SocketAddr>,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A listener could not be bound (address in use, not local, no permission).
    #[error("cannot bind {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener: "UDP", "TCP", "TLS" or "metrics".
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The TLS certificate or key could not be loaded or generated.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The configuration is inconsistent (e.g. no listener at all).
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The control-plane link could not be set up (bad URL, HTTP client).
    #[error("control plane link: {0}")]
    ControlPlane(String),
    /// An event-loop thread or runtime could not be created.
    #[error("cannot start event loop: {0}")]
    Runtime(#[source] io::Error),
}

/// What a reload changed, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Whether the TLS listeners now present a newly read certificate.
    pub certificate: bool,
    /// Settings that differ in the new configuration but only take effect on a restart
    /// (listeners, relay addresses and ports, ...): named, and left as they were.
    pub needs_restart: Vec<&'static str>,
}

/// A running relay. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    addrs: BoundAddrs,
    metrics: Arc<Metrics>,
    controls: Vec<mpsc::UnboundedSender<ShardControl>>,
    threads: Vec<JoinHandle<()>>,
    metrics_stop: Option<tokio::sync::oneshot::Sender<()>>,
    link: Option<link::Link>,
    /// The configuration in force (reloads replace the reloadable parts).
    config: std::sync::Mutex<RelayConfig>,
    shared: Shared,
    certs: Option<Arc<tls::CertStore>>,
}

impl Relay {
    /// Binds every listener and starts the event loops.
    pub fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        Self::start_with_metrics(config, Arc::new(Metrics::new()))
    }

    /// Like [`Relay::start`], counting into `metrics` (shared with the caller, e.g. a test
    /// or an embedding process that serves them itself).
    pub fn start_with_metrics(
        mut config: RelayConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Relay, RelayError> {
        if let Some(c) = &config.control {
            config.server.admission = Some(c.pool);
        }
        if config.server.relay_ipv4.is_none() && config.server.relay_ipv6.is_none() {
            return Err(RelayError::Config(
                "no relay address (IPv4 or IPv6) configured",
            ));
        }
        if config.udp.is_empty() && config.tcp.is_empty() && config.tls.is_empty() {
            return Err(RelayError::Config("no listener configured"));
        }
        let shards = match config.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let api = config.control.as_ref().and_then(|c| {
            let upstream = c.upstream().filter(|_| c.serve_api)?;
            Some(Arc::new(stream::ApiRoute {
                upstream,
                server_name: c.api_server_name.clone(),
            }))
        });
        let certs = if config.tls.is_empty() {
            None
        } else {
            Some(tls::CertStore::load(&config.tls_identity)?)
        };
        let tls_config = match &certs {
            None => None,
            Some(store) => {
                let c = tls::server_config_with(store.clone())?;
                Some(if api.is_some() { tls::with_http(&c) } else { c })
            }
        };

        // Bind everything first, shard 0 resolving port 0, the others joining with SO_REUSEPORT.
        let mut addrs = BoundAddrs::default();
        let mut udp: Vec<Vec<UdpSocket>> = (0..shards).map(|_| Vec::new()).collect();
        let listener_buffer = Some(config.socket_buffer.unwrap_or(LISTENER_BUFFER));
        for &want in &config.udp {
            let mut addr = want;
            for (i, per_shard) in udp.iter_mut().enumerate() {
                let bound = if i == 0 {
                    probe(addr, Type::DGRAM, Protocol::UDP)
                        .and_then(|()| bind_udp(addr, listener_buffer))
                } else {
                    bind_udp(addr, listener_buffer)
                };
                let s = bound.map_err(|source| RelayError::Bind {
                    what: "UDP",
                    addr,
                    source,
                })?;
                if i == 0 {
                    addr = s.local_addr().map_err(RelayError::Runtime)?;
                    addrs.udp.push(addr);
                }
                per_shard.push(s);
            }
        }
        let mut tcp: Vec<Vec<(TcpListener, Transport)>> = (0..shards).map(|_| Vec::new()).collect();
        let plain = config.tcp.iter().map(|a| (*a, false));
        let secure = config.tls.iter().map(|a| (*a, true));
        for (want, is_tls) in plain.chain(secure) {
            let what = if is_tls { "TLS" } else { "TCP" };
            let transport = if is_tls {
                Transport::Tls
            } else {
                Transport::Tcp
            };
            let mut addr = want;
            for (i, per_shard) in tcp.iter_mut().enumerate() {
                let bound = if i == 0 {
                    probe(addr, Type::STREAM, Protocol::TCP).and_then(|()| bind_tcp(addr))
                } else {
                    bind_tcp(addr)
                };
                let l = match bound {
                    Ok(l) => l,
                    Err(e)
                        if i == 0
                            && is_tls
                            && e.kind() == io::ErrorKind::PermissionDenied
                            && config.tls_fallback_port.is_some() =>
                    {
                        let port = config.tls_fallback_port.unwrap_or_default();
                        tracing::warn!(
                            "cannot bind TLS listener on {addr} ({e}): privileged port needs root or \
                             CAP_NET_BIND_SERVICE; using fallback port {port} instead"
                        );
                        eprintln!(
                            "warning: cannot bind TLS on {addr} ({e}); using fallback port {port}"
                        );
                        addr.set_port(port);
                        bind_tcp(addr).map_err(|source| RelayError::Bind { what, addr, source })?
                    }
                    Err(source) => return Err(RelayError::Bind { what, addr, source }),
                };
                if i == 0 {
                    addr = l.local_addr().map_err(RelayError::Runtime)?;
                    if is_tls {
                        addrs.tls.push(addr);
                    } else {
                        addrs.tcp.push(addr);
                    }
                }
                per_shard.push((l, transport));
            }
        }
        let metrics_listener = match config.metrics {
            Some(addr) => {
                let l = bind_tcp(addr).map_err(|source| RelayError::Bind {
                    what: "metrics",
                    addr,
                    source,
                })?;
                addrs.metrics = Some(l.local_addr().map_err(RelayError::Runtime)?);
                Some(l)
            }
            None => None,
        };

        set_own_addrs(&mut config, &addrs);
        for (rule, opens) in config.server.peer_policy.overrides() {
            tracing::warn!("peer rule {rule} opens a built-in denial: {opens}");
        }

        let fast_path = config
            .fast_path
            .as_ref()
            .and_then(|f| start_fast_path(f, &addrs));
        config.server.channel_events = fast_path.is_some();
        let shared = Shared::from_config(&config.server, &mut rand::rng());
        let streams = Arc::new(stream::ConnectionLimit::new(
            config.max_stream_connections,
            config.max_stream_connections_per_ip,
            metrics.clone(),
        ));
        metrics.expect_shards(shards);
        let (link, mut shard_links) = match config.control.clone() {
            Some(c) => {
                metrics.set_governed();
                let listeners = (addrs.udp.iter().map(|a| (Transport::Udp, *a)))
                    .chain(addrs.tcp.iter().map(|a| (Transport::Tcp, *a)))
                    .chain(addrs.tls.iter().map(|a| (Transport::Tls, *a)))
                    .collect();
                let (link, shard_links) = link::start(c, shards, listeners, metrics.clone())?;
                (Some(link), shard_links.into_iter().map(Some).collect())
            }
            None => (None, Vec::new()),
        };
        shard_links.resize_with(shards, || None);
        let mut controls = Vec::new();
        let mut threads = Vec::new();
        for ((index, (udp, tcp)), link) in udp.into_iter().zip(tcp).enumerate().zip(shard_links) {
            let (tx, rx) = mpsc::unbounded_channel();
            controls.push(tx);
            let shard = event_loop::ShardSetup {
                index,
                server: config.server.clone(),
                udp,
                tcp,
                tls: tls_config.clone(),
                api: api.clone(),
                shared: shared.clone(),
                metrics: metrics.clone(),
                streams: streams.clone(),
                stream_deadlines: stream::Deadlines {
                    allocate: config.stream_idle_timeout,
                    frame: config.stream_frame_timeout,
                },
                socket_buffer: config.socket_buffer,
                control: rx,
                link,
                fast_path: fast_path.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("relay-shard-{index}"))
                .spawn(move || shard.run())
                .map_err(RelayError::Runtime)?;
            threads.push(t);
        }
        let metrics_stop = match metrics_listener {
            Some(l) => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let m = metrics.clone();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(RelayError::Runtime)?;
                let t = std::thread::Builder::new()
                    .name("relay-metrics".into())
                    .spawn(move || {
                        rt.block_on(async move {
                            let l = match tokio::net::TcpListener::from_std(l) {
                                Ok(l) => l,
                                Err(e) => {
                                    tracing::error!("metrics listener: {e}");
                                    return;
                                }
                            };
                            let stop = async move {
                                let _ = stopped.await;
                            };
                            if let Err(e) = metrics::serve(l, m, stop).await {
                                tracing::error!("metrics endpoint failed: {e}");
                            }
                        })
                    })
                    .map_err(RelayError::Runtime)?;
                threads.push(t);
                Some(stop)
            }
            None => None,
        };
        Ok(Relay {
            addrs,
            metrics,
            controls,
            threads,
            metrics_stop,
            link,
            config: std::sync::Mutex::new(config),
            shared,
            certs,
        })
    }

    /// The addresses actually bound (real ports where the configuration said 0).
    pub fn local_addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// The relay's counters and gauges.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops taking new allocations (they get 508); existing allocations keep flowing.
    pub fn drain(&self) {
        self.metrics.draining.set(1);
        for c in &self.controls {
            let _ = c.send(ShardControl::Drain);
        }
    }

    /// Allocations held now, over every shard.
    pub fn allocations(&self) -> i64 {
        self.metrics.allocations.get()
    }

    /// Applies a new configuration without dropping a session: the TLS certificate and key
    /// (new handshakes present the new one; established sessions keep theirs), static and
    /// per-app credentials, the peer policy (permissions and channels toward peers it now
    /// denies stop at once) and the allocation quotas. Other settings that differ are named in
    /// [`Reloaded::needs_restart`] and left as they were.
    ///
    /// Everything that can fail (reading the certificate) is done before anything changes, so
    /// an error leaves the old configuration wholly in force. Counted in
    /// `cloudproxy_config_reloads_total{outcome}`.
    pub fn reload(&self, new: RelayConfig) -> Result<Reloaded, RelayError> {
        let r = self.reload_inner(new);
        self.metrics.config_reloaded(r.is_ok());
        r
    }

    fn reload_inner(&self, mut new: RelayConfig) -> Result<Reloaded, RelayError> {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = Reloaded::default();
        // Only PEM files can be renewed; a self-signed certificate stays as generated.
        let key = match (&self.certs, &new.tls_identity) {
            (Some(_), identity @ tls::TlsIdentity::Pem { .. }) => {
                Some(tls::certified_key(identity)?)
            }
            _ => None,
        };
        if new.server.relay_ipv4.is_none() && new.server.relay_ipv6.is_none() {
            return Err(RelayError::Config(
                "no relay address (IPv4 or IPv6) configured",
            ));
        }
        done.needs_restart = restart_only_changes(&current, &new);
        // Interfaces may have gained or lost addresses since the start.
        set_own_addrs(&mut new, &self.addrs);
        for (rule, opens) in new.server.peer_policy.overrides() {
            tracing::warn!("peer rule {rule} opens a built-in denial: {opens}");
        }
        if let (Some(store), Some(key)) = (&self.certs, key) {
            store.replace(key);
            done.certificate = true;
        }
        self.shared.ledger.set_limits(
            new.server.max_allocations_per_user,
            new.server.max_allocations,
        );
        let reload = Arc::new(ServerReload {
            auth: new.server.auth.clone(),
            peer_policy: new.server.peer_policy.clone(),
            max_allocations: new.server.max_allocations,
            max_allocations_per_user: new.server.max_allocations_per_user,
        });
        for c in &self.controls {
            let _ = c.send(ShardControl::Reload(reload.clone()));
        }
        current.server.auth = new.server.auth;
        current.server.peer_policy = new.server.peer_policy;
        current.server.max_allocations = new.server.max_allocations;
        current.server.max_allocations_per_user = new.server.max_allocations_per_user;
        current.tls_identity = new.tls_identity;
        Ok(done)
    }

    /// Stops every event loop and waits for them.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        for c in &self.controls {
            let _ = c.send(ShardControl::Stop);
        }
        if let Some(s) = self.metrics_stop.take() {
            let _ = s.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // After the shards: its last usage report includes everything they relayed.
        self.link.take();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Loads and attaches the XDP program, or says in one line why the relay runs on the socket
/// path only.
fn start_fast_path(f: &FastPathConfig, addrs: &BoundAddrs) -> Option<fastpath::SharedFastPath> {
    // The kernel matches a client's datagram by the listener address it was sent to.
    if let Some(a) = addrs.udp.iter().find(|a| a.ip().is_unspecified()) {
        tracing::warn!(
            "XDP fast path off: UDP listener {a} has no specific address to match; \
             relaying on the socket path"
        );
        return None;
    }
    match cloudproxy_xdp::FastPath::load(&f.interface, f.mode) {
        Ok(p) => {
            tracing::info!(
                interface = %f.interface,
                mode = ?f.mode,
                "XDP fast path on: ChannelData over UDP forwarded in the kernel"
            );
            Some(Arc::new(std::sync::Mutex::new(p)))
        }
        Err(e) => {
            tracing::warn!("XDP fast path off, relaying on the socket path: {e}");
            None
        }
    }
}

/// Tells the peer policy the relay's own transport addresses: every host address (and the
/// advertised relay and listener addresses, which may be a public address a NAT maps here)
/// at every listener port and in the relayed port range.
fn set_own_addrs(config: &mut RelayConfig, addrs: &BoundAddrs) {
    let mut ips = host::addresses().unwrap_or_else(|e| {
        tracing::warn!("cannot list the host's addresses ({e}); denying only the configured ones");
        Vec::new()
    });
    let listeners = addrs.udp.iter().chain(&addrs.tcp).chain(&addrs.tls);
    ips.extend(
        listeners
            .clone()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified()),
    );
    ips.extend(config.server.relay_ipv4.map(IpAddr::V4));
    ips.extend(config.server.relay_ipv6.map(IpAddr::V6));
    let mut ports: Vec<_> = listeners.map(|a| a.port()..=a.port()).collect();
    ports.push(config.server.relay_ports.clone());
    config.server.peer_policy.set_own(ips, ports);
}

/// The settings a reload cannot change in a running relay that differ between `old` and `new`.
fn restart_only_changes(old: &RelayConfig, new: &RelayConfig) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("udp listeners", old.udp != new.udp);
    check("tcp listeners", old.tcp != new.tcp);
    check("tls listeners", old.tls != new.tls);
    check("metrics listener", old.metrics != new.metrics);
    check("shards", old.shards != new.shards);
    check("relay_ipv4", o.relay_ipv4 != n.relay_ipv4);
    check("relay_ipv6", o.relay_ipv6 != n.relay_ipv6);
    check("relay port range", o.relay_ports != n.relay_ports);
    check("realm", o.realm != n.realm);
    check(
        "tls certificate kind (self-signed or PEM)",
        matches!(old.tls_identity, tls::TlsIdentity::SelfSigned { .. })
            != matches!(new.tls_identity, tls::TlsIdentity::SelfSigned { .. }),
    );
    check(
        "control plane",
        old.control.is_some() != new.control.is_some(),
    );
    check(
        "max_stream_connections",
        old.max_stream_connections != new.max_stream_connections,
    );
    check(
        "max_stream_connections_per_ip",
        old.max_stream_connections_per_ip != new.max_stream_connections_per_ip,
    );
    check(
        "stream timeouts",
        old.stream_idle_timeout != new.stream_idle_timeout
            || old.stream_frame_timeout != new.stream_frame_timeout,
    );
    changed
}
