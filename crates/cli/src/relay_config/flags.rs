//! The flags of `cloudproxy relay`, and how they override the file.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_relay::tls::TlsIdentity;
use cloudproxy_relay::{FastPathMode, RelayConfig};

use super::control::{apply_control, ControlSettings};
use super::values::{at_least_one, fast_path, parse_port_range, secret, set_relay_ips};

/// Flags of `cloudproxy relay`. Each overrides the config file.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct RelayArgs {
    /// TOML configuration file (see relay.example.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TURN over UDP listener, IP:PORT (repeatable; replaces the file's `udp`).
    #[arg(long, value_name = "ADDR")]
    pub udp: Vec<SocketAddr>,
    /// TURN over TCP listener, IP:PORT (repeatable; replaces the file's `tcp`).
    #[arg(long, value_name = "ADDR")]
    pub tcp: Vec<SocketAddr>,
    /// TURN over TLS listener, IP:PORT (repeatable; replaces the file's `tls`).
    #[arg(long, value_name = "ADDR")]
    pub tls: Vec<SocketAddr>,
    /// An application key, APP_ID:KEY_ID:SECRET (repeatable; adds to the file's
    /// [[auth.app_keys]]). Tokens from `cloudproxy token` are checked against these.
    #[arg(long = "app", value_name = "APP_ID:KEY_ID:SECRET")]
    pub apps: Vec<cloudproxy_proto::AppKey>,
    /// TLS certificate chain, PEM (with --key; default: a self-signed certificate).
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// TLS private key, PEM (with --cert).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Shared secret for TURN REST credentials (coturn's --static-auth-secret).
    #[arg(
        long,
        value_name = "SECRET",
        env = crate::SECRET_ENV,
        hide_env_values = true
    )]
    pub static_secret: Option<String>,
    /// REALM for long-term credentials.
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// Peers the relay may forward to: NET, NET:PORTS or [V6NET]:PORTS, e.g. 10.0.0.0/8,
    /// 127.0.0.1:3480, [2001:db8::]/32:5000-6000 (repeatable; replaces the file's
    /// peers.allow). Default: no peer at all.
    #[arg(long = "allow-peer", value_name = "RULE")]
    pub allow_peer: Vec<PeerRule>,
    /// Prometheus metrics endpoint, IP:PORT.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    pub metrics: Option<SocketAddr>,
    /// Disable the metrics endpoint.
    #[arg(long)]
    pub no_metrics: bool,
    /// Address relayed transport addresses are bound on and advertised to clients (IPv4 or
    /// IPv6; give it twice for both families). Replaces the file's relay.ipv4 and relay.ipv6.
    #[arg(long = "relay-ip", value_name = "IP")]
    pub relay_ip: Vec<IpAddr>,
    /// Relayed transport address port range, LOW-HIGH.
    #[arg(long = "relay-ports", value_name = "LOW-HIGH", value_parser = parse_port_range)]
    pub relay_ports: Option<RangeInclusive<u16>>,
    /// Event loops; 0 means one per core.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// On SIGTERM, how long existing allocations keep flowing before exit.
    #[arg(long = "drain-timeout", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub drain_timeout: Option<Duration>,
    /// Forward ChannelData over UDP (IPv4 and IPv6) in the kernel: `xdp` (needs --xdp-interface, and
    /// root or CAP_BPF + CAP_NET_ADMIN), or `off` (the default). If it cannot load, the relay
    /// says why and relays on the socket path.
    #[arg(long = "fast-path", value_name = "KIND", value_parser = ["xdp", "off"])]
    pub fast_path: Option<String>,
    /// The interface clients and peers reach the relay through, for --fast-path xdp.
    #[arg(long = "xdp-interface", value_name = "IF")]
    pub xdp_interface: Option<String>,
    /// `native` (in the driver; the default) or `generic` (any interface, slower).
    #[arg(long = "xdp-mode", value_name = "MODE", value_parser = ["native", "generic"])]
    pub xdp_mode: Option<String>,
    /// Allocations held at most (486 beyond).
    #[arg(long = "max-allocations", value_name = "N")]
    pub max_allocations: Option<usize>,
    /// Allocations one credential id may hold at once (486 beyond).
    #[arg(long = "user-quota", value_name = "N")]
    pub user_quota: Option<usize>,
    /// The control plane link (`--control`, `--control-key`, `--region`, ...), spelled once
    /// for flags and the `[control]` section.
    #[command(flatten)]
    pub control: ControlSettings,
}

pub(super) fn apply_flags(config: &mut RelayConfig, flags: &RelayArgs) -> anyhow::Result<()> {
    apply_control(config, &flags.control, "--")?;
    if !flags.udp.is_empty() {
        config.udp = flags.udp.clone();
    }
    if !flags.tcp.is_empty() {
        config.tcp = flags.tcp.clone();
    }
    if !flags.tls.is_empty() {
        config.tls = flags.tls.clone();
    }
    match (&flags.cert, &flags.key) {
        (Some(cert), Some(key)) => {
            config.tls_identity = TlsIdentity::Pem {
                cert: cert.clone(),
                key: key.clone(),
            }
        }
        (None, None) => {}
        (Some(_), None) => bail!("--cert needs --key: give both, or neither"),
        (None, Some(_)) => bail!("--key needs --cert: give both, or neither"),
    }
    let server = &mut config.server;
    if let Some(s) = &flags.static_secret {
        server.auth.static_secret = Some(secret("--static-secret", s)?);
    }
    for key in &flags.apps {
        if server
            .auth
            .app_keys
            .iter()
            .any(|k| k.app_id == key.app_id && k.key_id == key.key_id)
        {
            bail!(
                "--app {}:{}: this app key is given twice",
                key.app_id,
                key.key_id
            );
        }
        server.auth.app_keys.push(key.clone());
    }
    if let Some(realm) = &flags.realm {
        if realm.is_empty() {
            bail!("--realm: must not be empty");
        }
        server.realm = realm.clone();
    }
    if !flags.allow_peer.is_empty() {
        server.peer_policy = PeerPolicy::new(flags.allow_peer.iter().cloned());
    }
    if !flags.relay_ip.is_empty() {
        set_relay_ips(config, &flags.relay_ip)?;
    }
    let server = &mut config.server;
    if let Some(ports) = &flags.relay_ports {
        server.relay_ports = ports.clone();
    }
    if let Some(n) = flags.max_allocations {
        server.max_allocations = at_least_one("--max-allocations", n)?;
    }
    if let Some(n) = flags.user_quota {
        server.max_allocations_per_user = at_least_one("--user-quota", n)?;
    }
    if let Some(addr) = flags.metrics {
        config.metrics = Some(addr);
    }
    if flags.no_metrics {
        config.metrics = None;
    }
    if let Some(n) = flags.shards {
        config.shards = n;
    }
    if let Some(d) = flags.drain_timeout {
        config.drain_timeout = d;
    }
    if flags.fast_path.is_some() || flags.xdp_interface.is_some() || flags.xdp_mode.is_some() {
        let current = config.fast_path.take();
        let kind = flags
            .fast_path
            .as_deref()
            .or(current.as_ref().map(|_| "xdp"));
        let interface = flags
            .xdp_interface
            .clone()
            .or_else(|| current.as_ref().map(|c| c.interface.clone()));
        let mode = flags.xdp_mode.as_deref().or(match current.map(|c| c.mode) {
            Some(FastPathMode::Generic) => Some("generic"),
            Some(FastPathMode::Native) => Some("native"),
            None => None,
        });
        config.fast_path = fast_path(kind, interface, mode)?;
    }
    Ok(())
}
