//! The relay's plain configuration struct. The binary fills it from file and flags.

use std::net::SocketAddr;
use std::time::Duration;

use cloudproxy_proto::ServerConfig;

use crate::tls::TlsIdentity;

/// Default SO_RCVBUF / SO_SNDBUF of a UDP listener: 8 MiB, which the kernel counts as 16 MiB
/// (its bookkeeping): about 20,000 small datagrams, 0.8 s of a shard's 25,000 packets/s.
/// Every client of a shard shares that one queue, and whenever the shard thread is off the CPU
/// the queue grows. The OS default (~208 KiB) overflows after a few milliseconds; coturn 4.6.1's
/// 2 MiB (4 MiB counted, 5,000 datagrams) after 0.2 s, which a 2-core machine running the
/// relay beside its own load generator hit every few seconds (BENCHMARKS.md, soak). Past
/// `net.core.rmem_max` it needs CAP_NET_ADMIN; without it the relay warns and runs with what
/// the kernel allows.
pub const LISTENER_BUFFER: usize = 8 << 20;

/// Listener addresses and driver settings around a [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The protocol core's settings (realm, credentials, peer policy, relay ports, limits).
    pub server: ServerConfig,
    /// TURN over UDP listeners. Default `127.0.0.1:3478`.
    pub udp: Vec<SocketAddr>,
    /// TURN over TCP listeners. Default `127.0.0.1:3478`.
    pub tcp: Vec<SocketAddr>,
    /// TURN over TLS listeners. Default `127.0.0.1:443`.
    pub tls: Vec<SocketAddr>,
    /// If a TLS listener's port cannot be bound because it is privileged (443 without root or
    /// CAP_NET_BIND_SERVICE), bind this port instead and say so. Default `Some(5349)`, the
    /// standard `turns:` port (RFC 7065). `None`: fail instead.
    pub tls_fallback_port: Option<u16>,
    /// Certificate for TLS. Default: a self-signed certificate generated at start.
    pub tls_identity: TlsIdentity,
    /// Prometheus `/metrics` endpoint. Default `127.0.0.1:9478`. `None` disables it.
    pub metrics: Option<SocketAddr>,
    /// Event loops (shards). 0 means one per core. Default 0.
    pub shards: usize,
    /// A TCP/TLS connection must hold an allocation within this time of connecting (the TLS
    /// handshake included), or it is closed; bytes that arrive meanwhile do not extend it.
    /// Default 10 s.
    pub stream_idle_timeout: Duration,
    /// Once a message (STUN or ChannelData frame) has started to arrive on a TCP/TLS
    /// connection, the rest must arrive within this time, or the connection is closed: a
    /// client that trickles one byte at a time cannot hold a connection. Default 5 s.
    pub stream_frame_timeout: Duration,
    /// TCP/TLS connections held at once, over all listeners. Default 10 000.
    pub max_stream_connections: usize,
    /// TCP/TLS connections one source IP address may hold at once. Default 1 000: one host
    /// cannot take every slot, while an office behind one NAT address still fits hundreds of
    /// users.
    pub max_stream_connections_per_ip: usize,
    /// On SIGTERM, how long existing allocations keep flowing before the process exits.
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// SO_RCVBUF / SO_SNDBUF for UDP sockets, in bytes. `None`: [`LISTENER_BUFFER`] on the
    /// client-facing listeners and the OS default on relay sockets.
    pub socket_buffer: Option<usize>,
    /// The control plane this relay registers with, syncs from, takes admission leases from
    /// and reports usage to. `None` (the default): a standalone relay with static keys.
    pub control: Option<crate::link::LinkConfig>,
    /// Forward ChannelData over UDP in the kernel (XDP) on this interface. `None` (the
    /// default): everything on the socket path. If the program cannot be loaded or attached,
    /// the relay says why and runs on the socket path.
    pub fast_path: Option<FastPathConfig>,
}

/// Where and how the XDP fast path runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPathConfig {
    /// The interface clients and peers reach the relay through.
    pub interface: String,
    /// How the XDP program attaches: native (in the driver) or generic.
    pub mode: cloudproxy_xdp::Mode,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            server: ServerConfig::default(),
            udp: vec![local(3478)],
            tcp: vec![local(3478)],
            tls: vec![local(443)],
            tls_fallback_port: Some(5349),
            tls_identity: TlsIdentity::default(),
            metrics: Some(local(9478)),
            shards: 0,
            stream_idle_timeout: Duration::from_secs(10),
            stream_frame_timeout: Duration::from_secs(5),
            max_stream_connections: 10_000,
            max_stream_connections_per_ip: 1_000,
            drain_timeout: Duration::from_secs(30),
            socket_buffer: None,
            control: None,
            fast_path: None,
        }
    }
}

/// The part of a reloaded configuration each shard applies to its server.
#[derive(Debug)]
pub(crate) struct ServerReload {
    pub auth: cloudproxy_proto::AuthConfig,
    pub peer_policy: cloudproxy_proto::policy::PeerPolicy,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
}
