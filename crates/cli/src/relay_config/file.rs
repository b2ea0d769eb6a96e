//! The TOML file, section by section, and how each key maps onto [`RelayConfig`].

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::AppKey;
use cloudproxy_relay::tls::TlsIdentity;
use cloudproxy_relay::RelayConfig;
use serde::Deserialize;

use super::control::{apply_control, ControlSettings};
use super::values::{
    at_least_one, bad, fast_path, parse_addrs, parse_port_range, positive, relay_address, secret,
    SOCKET_ADDR_HINT,
};

/// The config file, key for key. Field names are the TOML keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
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
    control: Option<ControlSettings>,
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

impl FileConfig {
    /// Whether `[relay]` names a relay address (then listeners do not choose it).
    pub(super) fn names_relay_ip(&self) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|r| r.ipv4.is_some() || r.ipv6.is_some())
    }
}

pub(super) fn apply_file(
    config: &mut RelayConfig,
    file: FileConfig,
    path: &Path,
) -> anyhow::Result<()> {
    // Relative certificate paths are relative to the config file, not the working directory.
    let base = path.parent().unwrap_or(Path::new(""));

    if let Some(c) = &file.control {
        apply_control(config, c, "[control] ")?;
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
        let ipv4: Option<Ipv4Addr> =
            relay_address("relay.ipv4", relay.ipv4, "not an IPv4 address")?;
        let ipv6: Option<Ipv6Addr> =
            relay_address("relay.ipv6", relay.ipv6, "not an IPv6 address")?;
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
