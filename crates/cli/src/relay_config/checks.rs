//! What must hold of a configuration whatever its values came from, and what is allowed but
//! probably a mistake.

use std::collections::HashSet;
use std::net::SocketAddr;

use anyhow::bail;
use cloudproxy_relay::RelayConfig;

/// Checks that hold whatever the values came from.
pub(super) fn validate(config: &RelayConfig) -> anyhow::Result<()> {
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
pub(crate) fn warnings(config: &RelayConfig) -> Vec<String> {
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
