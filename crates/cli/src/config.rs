//! `cloudproxy relay` configuration: an optional TOML file, then flags on top, mapped to the
//! library's plain [`RelayConfig`].
//!
//! Every key is optional; a missing key keeps the default of [`RelayConfig::default`] /
//! [`cloudproxy_proto::ServerConfig::default`]. Unknown keys are errors (a typo must not
//! silently fall back to a default). Errors name the file and the key, e.g.
//! `config file relay.toml: peers.allow[1]: "10.0.0.0/33": not a CIDR network ...`.
//! List-valued flags (`--udp`, `--allow-peer`, ...) replace the file's list when given.
//! `relay.example.toml` next to this crate's manifest documents every key.

use std::collections::HashSet;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use cloudproxy_api::{Pool, Region, Transport, Wire as _};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::AppKey;
use cloudproxy_relay::link::LinkConfig;
use cloudproxy_relay::tls::TlsIdentity;
use cloudproxy_relay::{FastPathConfig, FastPathMode, RelayConfig};
use serde::Deserialize;

/// Flags of `cloudproxy relay`. Each overrides the config file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RelayArgs {
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
    /// The control plane to register with, sync app keys from, take admission leases from and
    /// report usage to, e.g. http://127.0.0.1:8480.
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
    /// The relay key (or the operator's) for --control.
    #[arg(
        long,
        env = "CLOUDPROXY_RELAY_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub control_key: Option<String>,
    /// This relay's edge id at the control plane. Default: relay-<hostname-free random>.
    #[arg(long, value_name = "ID")]
    pub edge_id: Option<String>,
    /// The region this relay serves: mainland_china, europe, india, japan, north_america,
    /// southeast_asia.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// static (published, Force modes) or dynamic (Auto).
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Relayed bandwidth this relay can carry, kbit/s.
    #[arg(long, value_name = "KBPS")]
    pub capacity_kbps: Option<u64>,
    /// A public address clients reach, as TRANSPORT:IP:PORT (udp, tcp or tls); repeatable.
    /// Default: the listener addresses.
    #[arg(long = "public", value_name = "TRANSPORT:ADDR")]
    pub public: Vec<String>,
    /// Where to keep the last good sync across restarts.
    #[arg(long, value_name = "FILE")]
    pub sync_cache: Option<PathBuf>,
}

/// The config file, key for key. Field names are the TOML keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    udp: Option<Vec<String>>,
    tcp: Option<Vec<String>>,
    tls: Option<Vec<String>>,
    tls_fallback_port: Option<u16>,
    metrics: Option<String>,
    shards: Option<usize>,
    drain_timeout_secs: Option<u64>,
    stream_idle_timeout_secs: Option<u64>,
    stream_frame_timeout_secs: Option<u64>,
    max_stream_connections: Option<usize>,
    max_stream_connections_per_ip: Option<usize>,
    socket_buffer: Option<usize>,
    fast_path: Option<String>,
    xdp_interface: Option<String>,
    xdp_mode: Option<String>,
    tls_cert: Option<TlsCertSection>,
    auth: Option<AuthSection>,
    relay: Option<RelaySection>,
    peers: Option<PeersSection>,
    lifetimes: Option<LifetimesSection>,
    control: Option<ControlSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSection {
    url: Option<String>,
    key: Option<String>,
    edge_id: Option<String>,
    region: Option<String>,
    pool: Option<String>,
    capacity_kbps: Option<u64>,
    public: Option<Vec<String>>,
    sync_cache: Option<PathBuf>,
    sync_interval_secs: Option<u64>,
    heartbeat_interval_secs: Option<u64>,
    lease_renew_interval_secs: Option<u64>,
    usage_interval_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    serve_api: Option<bool>,
    api_server_name: Option<String>,
}

/// The control link's settings from a `[control]` section or flags (flags win).
struct ControlValues<'a> {
    url: Option<&'a str>,
    key: Option<&'a str>,
    edge_id: Option<&'a str>,
    region: Option<&'a str>,
    pool: Option<&'a str>,
    capacity_kbps: Option<u64>,
    public: &'a [String],
    sync_cache: Option<&'a Path>,
}

fn apply_control(config: &mut RelayConfig, v: ControlValues<'_>, from: &str) -> anyhow::Result<()> {
    let nothing = v.url.is_none()
        && v.key.is_none()
        && v.edge_id.is_none()
        && v.region.is_none()
        && v.pool.is_none()
        && v.capacity_kbps.is_none()
        && v.public.is_empty()
        && v.sync_cache.is_none();
    if nothing {
        return Ok(());
    }
    let link = config.control.get_or_insert_with(LinkConfig::default);
    if let Some(url) = v.url {
        if !url.starts_with("http://") {
            bail!("{from}control url '{url}': expected http://HOST:PORT");
        }
        link.url = url.to_owned();
    }
    if let Some(k) = v.key {
        link.key = k.to_owned();
    }
    if let Some(id) = v.edge_id {
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            bail!("{from}edge id '{id}': 1 to 64 of A-Z a-z 0-9 _ . -");
        }
        link.edge_id = id.to_owned();
    }
    if let Some(r) = v.region {
        let Some(region) = Region::parse(r) else {
            let known: Vec<&str> = Region::ALL.iter().map(|r| r.as_str()).collect();
            bail!("{from}region '{r}': expected one of {}", known.join(", "));
        };
        link.region = region;
    }
    if let Some(p) = v.pool {
        link.pool = match p {
            "static" => Pool::Static,
            "dynamic" => Pool::Dynamic,
            _ => bail!("{from}pool '{p}': expected static or dynamic"),
        };
    }
    if let Some(c) = v.capacity_kbps {
        link.capacity_kbps = c;
    }
    if !v.public.is_empty() {
        link.public = v
            .public
            .iter()
            .map(|p| parse_public(p).map_err(|e| anyhow::anyhow!("{from}public '{p}': {e}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(c) = v.sync_cache {
        link.cache = Some(c.to_owned());
    }
    Ok(())
}

/// `udp:203.0.113.7:3478`, `tls:[2001:db8::7]:443`.
fn parse_public(s: &str) -> Result<(Transport, SocketAddr), String> {
    let (t, addr) = s
        .split_once(':')
        .ok_or("expected TRANSPORT:IP:PORT, e.g. tls:203.0.113.7:443")?;
    let Some(transport) = Transport::parse(t) else {
        return Err(format!("transport '{t}': expected udp, tcp or tls"));
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not IP:PORT"))?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err("needs a concrete address and port clients can reach".into());
    }
    Ok((transport, addr))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsCertSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    realm: Option<String>,
    static_secret: Option<String>,
    app_keys: Option<Vec<AppKeySection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppKeySection {
    app_id: String,
    key_id: String,
    secret: String,
    not_after: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelaySection {
    ipv4: Option<String>,
    ipv6: Option<String>,
    ports: Option<String>,
    max_allocations: Option<usize>,
    user_quota: Option<usize>,
    software: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersSection {
    allow: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifetimesSection {
    allocation_default_secs: Option<u64>,
    allocation_max_secs: Option<u64>,
    permission_secs: Option<u64>,
    channel_secs: Option<u64>,
    nonce_secs: Option<u64>,
    channel_cooldown_secs: Option<u64>,
}

/// Reads the config file (if any), applies the flags on top and checks the result.
pub fn relay_config(file: Option<&Path>, flags: &RelayArgs) -> anyhow::Result<RelayConfig> {
    let mut config = RelayConfig::default();
    let mut relay_ip_given = !flags.relay_ip.is_empty();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config file {}: cannot read", path.display()))?;
        let parsed: FileConfig = toml::from_str(&text)
            .map_err(|e| anyhow!("config file {}: {}", path.display(), e.to_string().trim()))?;
        relay_ip_given |= parsed
            .relay
            .as_ref()
            .is_some_and(|r| r.ipv4.is_some() || r.ipv6.is_some());
        apply_file(&mut config, parsed, path)
            .map_err(|e| anyhow!("config file {}: {e:#}", path.display()))?;
    }
    apply_flags(&mut config, flags)?;
    if !relay_ip_given {
        relay_ip_from_listeners(&mut config);
    }
    validate(&config)?;
    Ok(config)
}

/// `--relay-ip` (for `relay` and `up`): at most one IPv4 and one IPv6 unicast address.
pub(crate) fn set_relay_ips(config: &mut RelayConfig, ips: &[IpAddr]) -> anyhow::Result<()> {
    let (mut v4, mut v6) = (None, None);
    for &ip in ips {
        check_relay_ip("--relay-ip", ip)?;
        let duplicate = match ip {
            IpAddr::V4(a) => v4.replace(a).is_some(),
            IpAddr::V6(a) => v6.replace(a).is_some(),
        };
        if duplicate {
            bail!("--relay-ip: at most one IPv4 and one IPv6 address");
        }
    }
    config.server.relay_ipv4 = v4;
    config.server.relay_ipv6 = v6;
    Ok(())
}

/// With no relay address given, a relay whose listeners all share one specific address relays
/// on that address (as coturn does), instead of the loopback default: listening on 10.0.0.5
/// means clients reach 10.0.0.5, so their relayed addresses must be there too.
pub(crate) fn relay_ip_from_listeners(config: &mut RelayConfig) {
    let mut ips: Vec<IpAddr> = config
        .udp
        .iter()
        .chain(&config.tcp)
        .chain(&config.tls)
        .map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    if let [ip] = ips[..] {
        if ip.is_unspecified() || ip.is_multicast() {
            return;
        }
        match ip {
            IpAddr::V4(v4) => {
                config.server.relay_ipv4 = Some(v4);
                config.server.relay_ipv6 = None;
            }
            IpAddr::V6(v6) => {
                config.server.relay_ipv4 = None;
                config.server.relay_ipv6 = Some(v6);
            }
        }
    }
}

/// An error about one key: `key: "value": what is wrong`.
fn bad(key: impl Display, value: &str, what: impl Display) -> anyhow::Error {
    anyhow!("{key}: {value:?}: {what}")
}

const SOCKET_ADDR_HINT: &str =
    "not a socket address (expected IP:PORT, e.g. 0.0.0.0:3478 or [::]:3478)";

fn parse_addrs(key: &str, list: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|_| bad(format_args!("{key}[{i}]"), s, SOCKET_ADDR_HINT))
        })
        .collect()
}

/// `LOW-HIGH` with 1 <= LOW <= HIGH (a single `PORT` is a range of one).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let hint = "expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, e.g. 49152-65535";
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().map_err(|_| hint.to_owned())?;
    let hi: u16 = hi.trim().parse().map_err(|_| hint.to_owned())?;
    if lo == 0 || lo > hi {
        return Err(hint.to_owned());
    }
    Ok(lo..=hi)
}

fn positive(key: &str, v: u64) -> anyhow::Result<Duration> {
    if v == 0 {
        bail!("{key}: must be at least 1");
    }
    Ok(Duration::from_secs(v))
}

fn at_least_one(key: &str, v: usize) -> anyhow::Result<usize> {
    if v == 0 {
        bail!("{key}: must be at least 1");
    }
    Ok(v)
}

/// A relay address is advertised to clients in XOR-RELAYED-ADDRESS, so it must be a unicast
/// address someone can send to.
fn check_relay_ip(key: &str, ip: IpAddr) -> anyhow::Result<()> {
    let bad_kind = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(v4) if v4.is_multicast() || v4.is_broadcast() => Some("not unicast"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("not unicast"),
        _ => None,
    };
    match bad_kind {
        Some(kind) => Err(bad(
            key,
            &ip.to_string(),
            format_args!(
                "{kind}; relayed addresses are sent to clients, give this host's reachable address"
            ),
        )),
        None => Ok(()),
    }
}

fn secret(key: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    if s.is_empty() {
        bail!("{key}: must not be empty");
    }
    Ok(s.as_bytes().to_vec())
}

fn apply_file(config: &mut RelayConfig, file: FileConfig, path: &Path) -> anyhow::Result<()> {
    // Relative certificate paths are relative to the config file, not the working directory.
    let base = path.parent().unwrap_or(Path::new(""));

    if let Some(c) = &file.control {
        apply_control(
            config,
            ControlValues {
                url: c.url.as_deref(),
                key: c.key.as_deref(),
                edge_id: c.edge_id.as_deref(),
                region: c.region.as_deref(),
                pool: c.pool.as_deref(),
                capacity_kbps: c.capacity_kbps,
                public: c.public.as_deref().unwrap_or_default(),
                sync_cache: c.sync_cache.as_deref(),
            },
            "[control] ",
        )?;
        if let Some(link) = config.control.as_mut() {
            let fields = [
                (
                    "sync_interval_secs",
                    c.sync_interval_secs,
                    &mut link.sync_interval,
                ),
                (
                    "heartbeat_interval_secs",
                    c.heartbeat_interval_secs,
                    &mut link.heartbeat_interval,
                ),
                (
                    "lease_renew_interval_secs",
                    c.lease_renew_interval_secs,
                    &mut link.lease_renew_interval,
                ),
                (
                    "usage_interval_secs",
                    c.usage_interval_secs,
                    &mut link.usage_interval,
                ),
                (
                    "request_timeout_secs",
                    c.request_timeout_secs,
                    &mut link.request_timeout,
                ),
            ];
            for (name, value, slot) in fields {
                if let Some(v) = value {
                    *slot = positive(&format!("control.{name}"), v)?;
                }
            }
            if let Some(b) = c.serve_api {
                link.serve_api = b;
            }
            if let Some(n) = &c.api_server_name {
                link.api_server_name = Some(n.clone());
            }
        }
    }

    if let Some(list) = &file.udp {
        config.udp = parse_addrs("udp", list)?;
    }
    if let Some(list) = &file.tcp {
        config.tcp = parse_addrs("tcp", list)?;
    }
    if let Some(list) = &file.tls {
        config.tls = parse_addrs("tls", list)?;
    }
    if let Some(port) = file.tls_fallback_port {
        config.tls_fallback_port = (port != 0).then_some(port);
    }
    if let Some(m) = &file.metrics {
        config.metrics = if m.eq_ignore_ascii_case("off") {
            None
        } else {
            Some(m.parse().map_err(|_| {
                bad(
                    "metrics",
                    m,
                    format_args!("{SOCKET_ADDR_HINT}, or \"off\" to disable"),
                )
            })?)
        };
    }
    if let Some(n) = file.shards {
        config.shards = n;
    }
    if let Some(s) = file.drain_timeout_secs {
        config.drain_timeout = Duration::from_secs(s);
    }
    if let Some(s) = file.stream_idle_timeout_secs {
        config.stream_idle_timeout = positive("stream_idle_timeout_secs", s)?;
    }
    if let Some(s) = file.stream_frame_timeout_secs {
        config.stream_frame_timeout = positive("stream_frame_timeout_secs", s)?;
    }
    if let Some(n) = file.max_stream_connections {
        config.max_stream_connections = at_least_one("max_stream_connections", n)?;
    }
    if let Some(n) = file.max_stream_connections_per_ip {
        config.max_stream_connections_per_ip = at_least_one("max_stream_connections_per_ip", n)?;
    }
    if let Some(n) = file.socket_buffer {
        config.socket_buffer = Some(at_least_one("socket_buffer", n)?);
    }
    config.fast_path = fast_path(
        file.fast_path.as_deref(),
        file.xdp_interface,
        file.xdp_mode.as_deref(),
    )?;

    if let Some(tls) = file.tls_cert {
        match (tls.cert, tls.key, tls.self_signed_names) {
            (Some(cert), Some(key), None) => {
                config.tls_identity = TlsIdentity::Pem {
                    cert: base.join(cert),
                    key: base.join(key),
                };
            }
            (None, None, Some(names)) => {
                if names.is_empty() {
                    bail!("tls_cert.self_signed_names: must not be empty");
                }
                config.tls_identity = TlsIdentity::SelfSigned { names };
            }
            (None, None, None) => {}
            (Some(_), Some(_), Some(_)) => {
                bail!("tls_cert: give either cert and key, or self_signed_names, not both")
            }
            (Some(_), None, _) => bail!("tls_cert: cert is set but key is missing"),
            (None, Some(_), _) => bail!("tls_cert: key is set but cert is missing"),
        }
    }

    if let Some(auth) = file.auth {
        let server = &mut config.server;
        if let Some(realm) = auth.realm {
            if realm.is_empty() {
                bail!("auth.realm: must not be empty");
            }
            server.realm = realm;
        }
        if let Some(s) = auth.static_secret {
            server.auth.static_secret = Some(secret("auth.static_secret", &s)?);
        }
        let mut seen = HashSet::new();
        for (i, k) in auth.app_keys.unwrap_or_default().into_iter().enumerate() {
            let key = format!("auth.app_keys[{i}]");
            // The username is `<expiry>:<app-id>:<key-id>[:...]`, split on ':'.
            for (name, v) in [("app_id", &k.app_id), ("key_id", &k.key_id)] {
                if v.is_empty() || v.contains(':') {
                    return Err(bad(
                        format_args!("{key}.{name}"),
                        v,
                        "must be non-empty and contain no ':'",
                    ));
                }
            }
            if !seen.insert((k.app_id.clone(), k.key_id.clone())) {
                bail!(
                    "{key}: app_id {:?} key_id {:?} appears twice",
                    k.app_id,
                    k.key_id
                );
            }
            server.auth.app_keys.push(AppKey {
                secret: secret(&format!("{key}.secret"), &k.secret)?,
                app_id: k.app_id,
                key_id: k.key_id,
                not_after: k.not_after,
            });
        }
    }

    if let Some(relay) = file.relay {
        let server = &mut config.server;
        let ipv4 = relay
            .ipv4
            .map(|s| {
                let ip: Ipv4Addr = s
                    .parse()
                    .map_err(|_| bad("relay.ipv4", &s, "not an IPv4 address"))?;
                check_relay_ip("relay.ipv4", ip.into())?;
                anyhow::Ok(ip)
            })
            .transpose()?;
        let ipv6 = relay
            .ipv6
            .map(|s| {
                let ip: Ipv6Addr = s
                    .parse()
                    .map_err(|_| bad("relay.ipv6", &s, "not an IPv6 address"))?;
                check_relay_ip("relay.ipv6", ip.into())?;
                anyhow::Ok(ip)
            })
            .transpose()?;
        // Naming either family means "exactly these": `ipv6 = ".."` alone relays on IPv6 only.
        if ipv4.is_some() || ipv6.is_some() {
            server.relay_ipv4 = ipv4;
            server.relay_ipv6 = ipv6;
        }
        if let Some(p) = relay.ports {
            server.relay_ports = parse_port_range(&p).map_err(|e| bad("relay.ports", &p, e))?;
        }
        if let Some(n) = relay.max_allocations {
            server.max_allocations = at_least_one("relay.max_allocations", n)?;
        }
        if let Some(n) = relay.user_quota {
            server.max_allocations_per_user = at_least_one("relay.user_quota", n)?;
        }
        if let Some(s) = relay.software {
            server.software = (!s.is_empty()).then_some(s);
        }
    }

    if let Some(allow) = file.peers.and_then(|p| p.allow) {
        let rules = allow
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<PeerRule>()
                    .map_err(|e| bad(format_args!("peers.allow[{i}]"), s, e))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        config.server.peer_policy = PeerPolicy::new(rules);
    }

    if let Some(l) = file.lifetimes {
        let t = &mut config.server.lifetimes;
        let fields = [
            (
                "allocation_default_secs",
                l.allocation_default_secs,
                &mut t.allocation_default,
            ),
            (
                "allocation_max_secs",
                l.allocation_max_secs,
                &mut t.allocation_max,
            ),
            ("permission_secs", l.permission_secs, &mut t.permission),
            ("channel_secs", l.channel_secs, &mut t.channel),
            ("nonce_secs", l.nonce_secs, &mut t.nonce),
            (
                "channel_cooldown_secs",
                l.channel_cooldown_secs,
                &mut t.channel_cooldown,
            ),
        ];
        for (name, value, slot) in fields {
            if let Some(v) = value {
                *slot = positive(&format!("lifetimes.{name}"), v)?;
            }
        }
        if t.allocation_default > t.allocation_max {
            bail!(
                "lifetimes: allocation_default_secs ({}) exceeds allocation_max_secs ({})",
                t.allocation_default.as_secs(),
                t.allocation_max.as_secs()
            );
        }
    }
    Ok(())
}

fn apply_flags(config: &mut RelayConfig, flags: &RelayArgs) -> anyhow::Result<()> {
    apply_control(
        config,
        ControlValues {
            url: flags.control.as_deref(),
            key: flags.control_key.as_deref(),
            edge_id: flags.edge_id.as_deref(),
            region: flags.region.as_deref(),
            pool: flags.pool.as_deref(),
            capacity_kbps: flags.capacity_kbps,
            public: &flags.public,
            sync_cache: flags.sync_cache.as_deref(),
        },
        "--",
    )?;
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

/// `fast_path`, `xdp_interface` and `xdp_mode`, from the file or flags, as one setting.
fn fast_path(
    kind: Option<&str>,
    interface: Option<String>,
    mode: Option<&str>,
) -> anyhow::Result<Option<FastPathConfig>> {
    match kind {
        None | Some("off") => Ok(None),
        Some("xdp") => {
            let Some(interface) = interface.filter(|i| !i.is_empty()) else {
                bail!(
                    "fast_path = \"xdp\" needs the interface: --xdp-interface IF (xdp_interface)"
                );
            };
            let mode = match mode {
                None | Some("native") => FastPathMode::Native,
                Some("generic") => FastPathMode::Generic,
                Some(other) => bail!("xdp_mode {other:?}: use \"native\" or \"generic\""),
            };
            Ok(Some(FastPathConfig { interface, mode }))
        }
        Some(other) => bail!("fast_path {other:?}: use \"xdp\" or \"off\""),
    }
}

/// Checks that hold whatever the values came from.
fn validate(config: &RelayConfig) -> anyhow::Result<()> {
    let server = &config.server;
    if server.relay_ipv4.is_none() && server.relay_ipv6.is_none() {
        bail!("no relay address: set --relay-ip, or [relay] ipv4 / ipv6 in the config file");
    }
    let (lo, hi) = (*server.relay_ports.start(), *server.relay_ports.end());
    if lo == 0 || lo > hi {
        bail!("relay port range {lo}-{hi}: need 1 <= LOW <= HIGH");
    }
    if config.shards > 0 && usize::from(hi - lo) + 1 < config.shards {
        bail!(
            "relay port range {lo}-{hi} has fewer ports than the {} shards",
            config.shards
        );
    }
    if config.udp.is_empty() && config.tcp.is_empty() && config.tls.is_empty() {
        bail!("no listeners: give at least one of udp, tcp, tls");
    }
    if let Some(link) = &config.control {
        if link.key.is_empty() {
            bail!(
                "a control plane needs a key: --control-key, CLOUDPROXY_RELAY_KEY or [control] key"
            );
        }
    }
    for (name, list) in [
        ("udp", &config.udp),
        ("tcp", &config.tcp),
        ("tls", &config.tls),
    ] {
        let mut seen = HashSet::new();
        if let Some(dup) = list.iter().find(|a| !seen.insert(**a)) {
            bail!("{name} listener {dup} is given twice");
        }
    }
    // TCP, TLS and metrics listeners share the TCP port space (port 0 means "any", no clash).
    let mut stream: Vec<(&str, SocketAddr)> = config.tcp.iter().map(|a| ("tcp", *a)).collect();
    stream.extend(config.tls.iter().map(|a| ("tls", *a)));
    stream.extend(config.metrics.iter().map(|a| ("metrics", *a)));
    for (i, (name, a)) in stream.iter().enumerate() {
        if a.port() == 0 {
            continue;
        }
        if let Some((other, _)) = stream[i + 1..].iter().find(|(_, b)| b == a) {
            bail!("{name} and {other} listeners both use {a}");
        }
    }
    Ok(())
}

/// Things that are allowed but probably not what the operator meant.
pub fn warnings(config: &RelayConfig) -> Vec<String> {
    let mut out = Vec::new();
    if config.server.peer_policy.rules().next().is_none() {
        out.push(
            "no peers are allowed (default deny): every CreatePermission will be refused; \
             use --allow-peer or [peers] allow"
                .to_owned(),
        );
    }
    let public_listener = config
        .udp
        .iter()
        .chain(&config.tcp)
        .chain(&config.tls)
        .any(|a| !a.ip().is_loopback());
    let loopback_relay = config.server.relay_ipv4.is_some_and(|ip| ip.is_loopback())
        && config.server.relay_ipv6.is_none_or(|ip| ip.is_loopback());
    if public_listener && loopback_relay {
        out.push(
            "listening beyond loopback but relaying on a loopback address: remote clients \
             cannot reach their relayed addresses; set --relay-ip or [relay] ipv4 / ipv6"
                .to_owned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        relay: RelayArgs,
    }

    fn flags(args: &[&str]) -> RelayArgs {
        Flags::try_parse_from(std::iter::once("relay").chain(args.iter().copied()))
            .unwrap()
            .relay
    }

    /// A config file in a unique temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cloudproxy-cli-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("relay.toml");
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn from_file(contents: &str, args: &[&str]) -> anyhow::Result<RelayConfig> {
        let f = TempFile::new(contents);
        relay_config(Some(&f.0), &flags(args))
    }

    fn file_error(contents: &str) -> String {
        let f = TempFile::new(contents);
        let e = relay_config(Some(&f.0), &flags(&["--static-secret", "s"])).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&f.0.display().to_string()),
            "{msg:?} should name the file"
        );
        msg
    }

    #[test]
    fn defaults_without_file() {
        let c = relay_config(None, &flags(&["--static-secret", "s"])).unwrap();
        let d = RelayConfig::default();
        assert_eq!(c.udp, d.udp);
        assert_eq!(c.tcp, d.tcp);
        assert_eq!(c.tls, d.tls);
        assert_eq!(c.metrics, d.metrics);
        assert_eq!(c.shards, d.shards);
        assert_eq!(c.drain_timeout, d.drain_timeout);
        assert_eq!(c.stream_idle_timeout, d.stream_idle_timeout);
        assert_eq!(c.tls_fallback_port, d.tls_fallback_port);
        assert!(matches!(c.tls_identity, TlsIdentity::SelfSigned { .. }));
        assert_eq!(c.server.realm, d.server.realm);
        assert_eq!(c.server.relay_ipv4, d.server.relay_ipv4);
        assert_eq!(c.server.relay_ipv6, d.server.relay_ipv6);
        assert_eq!(c.server.relay_ports, d.server.relay_ports);
        assert_eq!(c.server.max_allocations, d.server.max_allocations);
        assert_eq!(c.server.peer_policy, d.server.peer_policy);
        assert_eq!(c.server.auth.static_secret.as_deref(), Some(&b"s"[..]));
        // An empty file is the same as no file.
        let e = from_file("", &["--static-secret", "s"]).unwrap();
        assert_eq!(e.udp, d.udp);
        assert_eq!(e.server.relay_ports, d.server.relay_ports);
    }

    #[test]
    fn no_credentials_is_left_for_start_up_to_generate() {
        let c = relay_config(None, &RelayArgs::default()).unwrap();
        assert!(c.server.auth.static_secret.is_none());
        assert!(c.server.auth.app_keys.is_empty());
    }

    #[test]
    fn unknown_keys_are_named() {
        let msg = file_error("udpp = [\"127.0.0.1:3478\"]\n");
        assert!(msg.contains("udpp"), "{msg}");
        let msg = file_error("[relay]\nipv4 = \"127.0.0.1\"\nbogus = 1\n");
        assert!(msg.contains("bogus"), "{msg}");
        let msg = file_error(
            "[[auth.app_keys]]\napp_id = \"a\"\nkey_id = \"k\"\nsecret = \"s\"\nnot_afterr = 5\n",
        );
        assert!(msg.contains("not_afterr"), "{msg}");
        let msg = file_error("shards = \"four\"\n");
        assert!(msg.contains("shards"), "{msg}");
        let msg = file_error("udp = [\n");
        assert!(msg.contains("TOML parse error"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let msg = file_error("[peers]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n");
        assert!(
            msg.contains(r#"peers.allow[1]: "10.0.0.0/33": not a CIDR network"#),
            "{msg}"
        );
        let msg = file_error("[peers]\nallow = [\"10.0.0.0/8:9-1\"]\n");
        assert!(
            msg.contains(r#"peers.allow[0]: "10.0.0.0/8:9-1": bad port range"#),
            "{msg}"
        );
        let msg = file_error("tcp = [\"127.0.0.1:1\", \"localhost:3478\"]\n");
        assert!(
            msg.contains(r#"tcp[1]: "localhost:3478": not a socket address"#),
            "{msg}"
        );
        let msg = file_error("[relay]\nports = \"6000-5000\"\n");
        assert!(msg.contains(r#"relay.ports: "6000-5000""#), "{msg}");
        let msg = file_error("[relay]\nipv4 = \"::1\"\n");
        assert!(
            msg.contains(r#"relay.ipv4: "::1": not an IPv4 address"#),
            "{msg}"
        );
        let msg = file_error("[relay]\nipv4 = \"0.0.0.0\"\n");
        assert!(msg.contains("relay.ipv4"), "{msg}");
        let msg = file_error("metrics = \"nope\"\n");
        assert!(msg.contains(r#"metrics: "nope""#), "{msg}");
        let msg = file_error("[tls_cert]\ncert = \"c.pem\"\n");
        assert!(
            msg.contains("tls_cert: cert is set but key is missing"),
            "{msg}"
        );
        let msg =
            file_error("[[auth.app_keys]]\napp_id = \"a:b\"\nkey_id = \"k\"\nsecret = \"s\"\n");
        assert!(msg.contains("auth.app_keys[0].app_id"), "{msg}");
        let msg = file_error("[lifetimes]\npermission_secs = 0\n");
        assert!(msg.contains("lifetimes.permission_secs"), "{msg}");
        let msg = file_error("[lifetimes]\nallocation_default_secs = 7200\n");
        assert!(msg.contains("allocation_default_secs"), "{msg}");
    }

    #[test]
    fn file_values_are_mapped() {
        let c = from_file(
            r#"
            udp = ["127.0.0.1:0", "[::1]:0"]
            tcp = []
            tls = ["127.0.0.1:5349"]
            tls_fallback_port = 0
            metrics = "off"
            shards = 2
            drain_timeout_secs = 5
            stream_idle_timeout_secs = 3
            [tls_cert]
            cert = "certs/cert.pem"
            key = "/abs/key.pem"
            [auth]
            realm = "example.org"
            [[auth.app_keys]]
            app_id = "app1"
            key_id = "k1"
            secret = "sekrit"
            not_after = 1700000000
            [relay]
            ipv6 = "::1"
            ports = "50000-50009"
            user_quota = 3
            software = ""
            [peers]
            allow = ["127.0.0.0/8:3480", "[2001:db8::]/32:5000-6000"]
            [lifetimes]
            permission_secs = 60
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.udp.len(), 2);
        assert!(c.tcp.is_empty());
        assert_eq!(c.tls, vec!["127.0.0.1:5349".parse().unwrap()]);
        assert_eq!(c.tls_fallback_port, None);
        assert_eq!(c.metrics, None);
        assert_eq!(c.shards, 2);
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.stream_idle_timeout, Duration::from_secs(3));
        match &c.tls_identity {
            TlsIdentity::Pem { cert, key } => {
                assert!(cert.ends_with("certs/cert.pem") && cert.is_absolute());
                assert_eq!(key, Path::new("/abs/key.pem"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.server.realm, "example.org");
        assert_eq!(c.server.auth.static_secret, None);
        assert_eq!(c.server.auth.app_keys.len(), 1);
        assert_eq!(c.server.auth.app_keys[0].secret, b"sekrit");
        assert_eq!(c.server.auth.app_keys[0].not_after, Some(1700000000));
        assert_eq!(c.server.relay_ipv4, None, "naming only ipv6 disables ipv4");
        assert_eq!(c.server.relay_ipv6, Some(Ipv6Addr::LOCALHOST));
        assert_eq!(c.server.relay_ports, 50000..=50009);
        assert_eq!(c.server.max_allocations_per_user, 3);
        assert_eq!(c.server.software, None);
        assert!(c
            .server
            .peer_policy
            .permits("127.0.0.1".parse().unwrap(), 3480));
        assert!(!c
            .server
            .peer_policy
            .permits("127.0.0.1".parse().unwrap(), 3481));
        assert!(c
            .server
            .peer_policy
            .permits("2001:db8::7".parse().unwrap(), 5500));
        assert_eq!(c.server.lifetimes.permission, Duration::from_secs(60));
        assert_eq!(
            c.server.lifetimes.allocation_default,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = r#"
            udp = ["127.0.0.1:3478"]
            metrics = "127.0.0.1:9000"
            shards = 4
            [auth]
            static_secret = "from-file"
            realm = "file.example"
            [relay]
            ipv4 = "127.0.0.1"
            ports = "40000-40100"
            max_allocations = 10
            [peers]
            allow = ["10.0.0.0/8"]
        "#;
        let c = from_file(
            file,
            &[
                "--udp",
                "127.0.0.1:0",
                "--udp",
                "[::1]:0",
                "--static-secret",
                "from-flag",
                "--realm",
                "flag.example",
                "--allow-peer",
                "127.0.0.1:3480",
                "--no-metrics",
                "--relay-ip",
                "::1",
                "--relay-ports",
                "50000-50010",
                "--shards",
                "1",
                "--drain-timeout",
                "7",
                "--max-allocations",
                "99",
                "--user-quota",
                "2",
                "--cert",
                "c.pem",
                "--key",
                "k.pem",
            ],
        )
        .unwrap();
        assert_eq!(
            c.udp,
            vec![
                "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
                "[::1]:0".parse().unwrap()
            ]
        );
        assert_eq!(c.metrics, None);
        assert_eq!(c.shards, 1);
        assert_eq!(c.drain_timeout, Duration::from_secs(7));
        assert_eq!(
            c.server.auth.static_secret.as_deref(),
            Some(&b"from-flag"[..])
        );
        assert_eq!(c.server.realm, "flag.example");
        assert!(c
            .server
            .peer_policy
            .permits("127.0.0.1".parse().unwrap(), 3480));
        assert!(!c
            .server
            .peer_policy
            .permits("10.0.0.1".parse().unwrap(), 3480));
        assert_eq!(c.server.relay_ipv4, None);
        assert_eq!(c.server.relay_ipv6, Some(Ipv6Addr::LOCALHOST));
        assert_eq!(c.server.relay_ports, 50000..=50010);
        assert_eq!(c.server.max_allocations, 99);
        assert_eq!(c.server.max_allocations_per_user, 2);
        assert!(matches!(c.tls_identity, TlsIdentity::Pem { .. }));

        // Unset flags leave the file's values alone.
        let c = from_file(file, &[]).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(c.shards, 4);
        assert_eq!(
            c.server.auth.static_secret.as_deref(),
            Some(&b"from-file"[..])
        );
        assert_eq!(c.server.relay_ports, 40000..=40100);
    }

    #[test]
    fn flag_errors_are_clear() {
        let e =
            relay_config(None, &flags(&["--static-secret", "s", "--cert", "c.pem"])).unwrap_err();
        assert!(e.to_string().contains("--cert needs --key"), "{e}");
        let e = relay_config(
            None,
            &flags(&[
                "--static-secret",
                "s",
                "--relay-ip",
                "127.0.0.1",
                "--relay-ip",
                "127.0.0.2",
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--relay-ip"), "{e}");
        let e = relay_config(None, &flags(&["--static-secret", ""])).unwrap_err();
        assert!(e.to_string().contains("--static-secret"), "{e}");
        let e = relay_config(
            None,
            &flags(&["--static-secret", "s", "--tcp", "127.0.0.1:9478"]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:9478"), "{e}");
        // Parse errors are clap's, naming the flag.
        for bad in [
            &["--allow-peer", "10.0.0.0/33"][..],
            &["--relay-ports", "9-1"],
            &["--udp", "localhost:1"],
            &["--metrics", "127.0.0.1:1", "--no-metrics"],
        ] {
            let e = match Flags::try_parse_from(std::iter::once("relay").chain(bad.iter().copied()))
            {
                Ok(_) => panic!("{bad:?} should not parse"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(bad[0]), "{e}");
        }
    }

    #[test]
    fn the_relay_address_follows_one_specific_listener_address() {
        let c = relay_config(
            None,
            &flags(&[
                "--static-secret",
                "s",
                "--udp",
                "10.0.0.5:3478",
                "--tcp",
                "10.0.0.5:3478",
                "--tls",
                "10.0.0.5:443",
            ]),
        )
        .unwrap();
        assert_eq!(c.server.relay_ipv4, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(config_warnings_are_quiet(&c));
        // An IPv6 listener: relay on IPv6 only.
        let c = relay_config(
            None,
            &flags(&[
                "--static-secret",
                "s",
                "--udp",
                "[2001:db8::5]:3478",
                "--tcp",
                "[2001:db8::5]:3478",
                "--tls",
                "[2001:db8::5]:443",
            ]),
        )
        .unwrap();
        assert_eq!(c.server.relay_ipv4, None);
        assert_eq!(c.server.relay_ipv6, Some("2001:db8::5".parse().unwrap()));
        // Several addresses, or the wildcard: the default stays (and warns).
        let c = relay_config(
            None,
            &flags(&[
                "--static-secret",
                "s",
                "--udp",
                "0.0.0.0:3478",
                "--tcp",
                "0.0.0.0:3478",
                "--tls",
                "0.0.0.0:443",
            ]),
        )
        .unwrap();
        assert_eq!(c.server.relay_ipv4, Some(Ipv4Addr::LOCALHOST));
        assert!(!config_warnings_are_quiet(&c));
        // A given relay address wins.
        let c = relay_config(
            None,
            &flags(&[
                "--static-secret",
                "s",
                "--udp",
                "10.0.0.5:3478",
                "--tcp",
                "10.0.0.5:3478",
                "--tls",
                "10.0.0.5:443",
                "--relay-ip",
                "203.0.113.9",
            ]),
        )
        .unwrap();
        assert_eq!(c.server.relay_ipv4, Some(Ipv4Addr::new(203, 0, 113, 9)));
    }

    fn config_warnings_are_quiet(c: &RelayConfig) -> bool {
        !warnings(c)
            .iter()
            .any(|w| w.contains("relaying on a loopback"))
    }

    #[test]
    fn fast_path_settings() {
        let c = relay_config(
            None,
            &flags(&[
                "--static-secret",
                "s",
                "--fast-path",
                "xdp",
                "--xdp-interface",
                "eth1",
            ]),
        )
        .unwrap();
        assert_eq!(
            c.fast_path,
            Some(FastPathConfig {
                interface: "eth1".into(),
                mode: FastPathMode::Native
            })
        );
        let c = relay_config(
            None,
            &flags(&[
                "--static-secret",
                "s",
                "--fast-path",
                "xdp",
                "--xdp-interface",
                "v0",
                "--xdp-mode",
                "generic",
            ]),
        )
        .unwrap();
        assert_eq!(c.fast_path.unwrap().mode, FastPathMode::Generic);
        let e = relay_config(
            None,
            &flags(&["--static-secret", "s", "--fast-path", "xdp"]),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("--xdp-interface"), "{e:#}");
        assert_eq!(
            fast_path(Some("off"), Some("eth0".into()), None).unwrap(),
            None
        );
        assert!(fast_path(Some("dpdk"), None, None).is_err());
        assert!(fast_path(Some("xdp"), Some("eth0".into()), Some("hw")).is_err());
        assert_eq!(
            relay_config(None, &flags(&["--static-secret", "s"]))
                .unwrap()
                .fast_path,
            None
        );
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("49152-65535"), Ok(49152..=65535));
        assert_eq!(parse_port_range("5000"), Ok(5000..=5000));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10-9").is_err());
        assert!(parse_port_range("1-70000").is_err());
        assert!(parse_port_range("a-b").is_err());
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.example.toml");
        // The example keeps its secret commented out, so it needs one from a flag.
        let c = relay_config(Some(&path), &flags(&["--static-secret", "s"]))
            .unwrap_or_else(|e| panic!("{e:#}"));
        // The example documents the defaults; spot-check that it says what the code does.
        let d = RelayConfig::default();
        assert_eq!(c.udp, d.udp);
        assert_eq!(c.server.relay_ports, d.server.relay_ports);
        assert_eq!(c.server.lifetimes.channel, d.server.lifetimes.channel);
        assert_eq!(c.drain_timeout, d.drain_timeout);
        assert_eq!(c.stream_frame_timeout, d.stream_frame_timeout);
        assert_eq!(
            c.max_stream_connections_per_ip,
            d.max_stream_connections_per_ip
        );
        assert!(c.server.auth.static_secret.is_some());

        // Every key is documented (set or commented out).
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "udp",
            "tcp",
            "tls",
            "tls_fallback_port",
            "metrics",
            "shards",
            "drain_timeout_secs",
            "stream_idle_timeout_secs",
            "stream_frame_timeout_secs",
            "max_stream_connections",
            "max_stream_connections_per_ip",
            "socket_buffer",
            "fast_path",
            "xdp_interface",
            "xdp_mode",
            "[tls_cert]",
            "cert",
            "key",
            "self_signed_names",
            "[auth]",
            "realm",
            "static_secret",
            "[[auth.app_keys]]",
            "app_id",
            "key_id",
            "secret",
            "not_after",
            "[relay]",
            "ipv4",
            "ipv6",
            "ports",
            "max_allocations",
            "user_quota",
            "software",
            "[peers]",
            "allow",
            "[lifetimes]",
            "allocation_default_secs",
            "allocation_max_secs",
            "permission_secs",
            "channel_secs",
            "nonce_secs",
            "channel_cooldown_secs",
        ] {
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l == key || l.starts_with(&format!("{key} = "))
            });
            assert!(documented, "relay.example.toml does not document {key}");
        }
    }

    #[test]
    fn warns_about_likely_mistakes() {
        let c = relay_config(
            None,
            &flags(&["--static-secret", "s", "--udp", "0.0.0.0:3478"]),
        )
        .unwrap();
        let w = warnings(&c);
        assert_eq!(w.len(), 2, "{w:?}");
        let c = relay_config(
            None,
            &flags(&["--static-secret", "s", "--allow-peer", "127.0.0.1"]),
        )
        .unwrap();
        assert!(warnings(&c).is_empty());
    }
}
