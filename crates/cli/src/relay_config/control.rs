//! The control-plane link's settings: one struct that is both the `[control]` section of the
//! file and the flags (`--control`, `--control-key`, `--edge-id`, ...), applied by one
//! function, so each setting is spelled once. Flags are applied after the file and win.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use cloudproxy_api::{Pool, Region, Transport, Wire as _};
use cloudproxy_relay::link::LinkConfig;
use cloudproxy_relay::RelayConfig;
use serde::Deserialize;

use super::values::positive;
use crate::cmd_admin::WireParser;

/// The control plane link. As flags, the file-only keys (intervals, timeouts, the API
/// front door) are not offered.
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ControlSettings {
    /// The control plane to register with, sync app keys from, take admission leases from and
    /// report usage to, e.g. http://127.0.0.1:8480.
    #[arg(id = "control", long = "control", value_name = "URL")]
    pub url: Option<String>,
    /// The relay key (or the operator's) for --control.
    #[arg(
        id = "control_key",
        long = "control-key",
        env = "CLOUDPROXY_RELAY_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key: Option<String>,
    /// This relay's edge id at the control plane. Default: relay-<hostname-free random>.
    #[arg(long, value_name = "ID")]
    pub edge_id: Option<String>,
    /// The region this relay serves: mainland_china, europe, india, japan, north_america,
    /// southeast_asia.
    #[arg(long, value_name = "REGION", value_parser = WireParser::<Region>::new())]
    pub region: Option<Region>,
    /// static (published, Force modes) or dynamic (Auto).
    #[arg(long, value_name = "POOL", value_parser = WireParser::<Pool>::new())]
    pub pool: Option<Pool>,
    /// Relayed bandwidth this relay can carry, kbit/s.
    #[arg(long, value_name = "KBPS")]
    pub capacity_kbps: Option<u64>,
    /// A public address clients reach, as TRANSPORT:IP:PORT (udp, tcp or tls); repeatable.
    /// Default: the listener addresses.
    #[arg(long = "public", value_name = "TRANSPORT:ADDR")]
    #[serde(default)]
    pub public: Vec<String>,
    /// Where to keep the last good sync across restarts.
    #[arg(long, value_name = "FILE")]
    pub sync_cache: Option<PathBuf>,
    #[arg(skip)]
    pub sync_interval_secs: Option<u64>,
    #[arg(skip)]
    pub heartbeat_interval_secs: Option<u64>,
    #[arg(skip)]
    pub lease_renew_interval_secs: Option<u64>,
    #[arg(skip)]
    pub usage_interval_secs: Option<u64>,
    #[arg(skip)]
    pub request_timeout_secs: Option<u64>,
    #[arg(skip)]
    pub serve_api: Option<bool>,
    #[arg(skip)]
    pub api_server_name: Option<String>,
}

/// Applies the settings that are given; `from` prefixes errors (`[control] ` or `--`). Giving
/// none leaves the relay without a control plane.
pub(super) fn apply_control(
    config: &mut RelayConfig,
    v: &ControlSettings,
    from: &str,
) -> anyhow::Result<()> {
    if *v == ControlSettings::default() {
        return Ok(());
    }
    let link = config.control.get_or_insert_with(LinkConfig::default);
    if let Some(url) = &v.url {
        if !url.starts_with("http://") {
            bail!("{from}control url '{url}': expected http://HOST:PORT");
        }
        link.url = url.clone();
    }
    if let Some(k) = &v.key {
        link.key = k.clone();
    }
    if let Some(id) = &v.edge_id {
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            bail!("{from}edge id '{id}': 1 to 64 of A-Z a-z 0-9 _ . -");
        }
        link.edge_id = id.clone();
    }
    if let Some(region) = v.region {
        link.region = region;
    }
    if let Some(pool) = v.pool {
        link.pool = pool;
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
    if let Some(c) = &v.sync_cache {
        link.cache = Some(c.clone());
    }
    let intervals = [
        (
            "sync_interval_secs",
            v.sync_interval_secs,
            &mut link.sync_interval,
        ),
        (
            "heartbeat_interval_secs",
            v.heartbeat_interval_secs,
            &mut link.heartbeat_interval,
        ),
        (
            "lease_renew_interval_secs",
            v.lease_renew_interval_secs,
            &mut link.lease_renew_interval,
        ),
        (
            "usage_interval_secs",
            v.usage_interval_secs,
            &mut link.usage_interval,
        ),
        (
            "request_timeout_secs",
            v.request_timeout_secs,
            &mut link.request_timeout,
        ),
    ];
    for (name, value, slot) in intervals {
        if let Some(secs) = value {
            *slot = positive(&format!("control.{name}"), secs)?;
        }
    }
    if let Some(b) = v.serve_api {
        link.serve_api = b;
    }
    if let Some(n) = &v.api_server_name {
        link.api_server_name = Some(n.clone());
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
