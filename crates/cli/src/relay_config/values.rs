//! Parsers and checks every source of a value (file, flags) shares, with errors that name
//! the key.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{anyhow, bail};
use cloudproxy_relay::{FastPathConfig, FastPathMode, RelayConfig};

/// An error about one key: `key: "value": what is wrong`.
pub(super) fn bad(key: impl Display, value: &str, what: impl Display) -> anyhow::Error {
    anyhow!("{key}: {value:?}: {what}")
}

pub(super) const SOCKET_ADDR_HINT: &str =
    "not a socket address (expected IP:PORT, e.g. 0.0.0.0:3478 or [::]:3478)";

pub(super) fn parse_addrs(key: &str, list: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|_| bad(format_args!("{key}[{i}]"), s, SOCKET_ADDR_HINT))
        })
        .collect()
}

/// `LOW-HIGH` with 1 <= LOW <= HIGH (a single `PORT` is a range of one).
pub(super) fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let hint = "expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, e.g. 49152-65535";
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().map_err(|_| hint.to_owned())?;
    let hi: u16 = hi.trim().parse().map_err(|_| hint.to_owned())?;
    if lo == 0 || lo > hi {
        return Err(hint.to_owned());
    }
    Ok(lo..=hi)
}

pub(super) fn positive(key: &str, v: u64) -> anyhow::Result<Duration> {
    if v == 0 {
        bail!("{key}: must be at least 1");
    }
    Ok(Duration::from_secs(v))
}

pub(super) fn at_least_one(key: &str, v: usize) -> anyhow::Result<usize> {
    if v == 0 {
        bail!("{key}: must be at least 1");
    }
    Ok(v)
}

/// `[relay] ipv4` or `ipv6` when given: an address of the family `A` (`family` names it in
/// the error) that relayed traffic may use (see [`check_relay_ip`]).
pub(super) fn relay_address<A>(
    key: &str,
    value: Option<String>,
    family: &str,
) -> anyhow::Result<Option<A>>
where
    A: std::str::FromStr + Into<IpAddr> + Copy,
{
    value
        .map(|s| {
            let ip: A = s.parse().map_err(|_| bad(key, &s, family))?;
            check_relay_ip(key, ip.into())?;
            anyhow::Ok(ip)
        })
        .transpose()
}

/// A relay address is advertised to clients in XOR-RELAYED-ADDRESS, so it must be a unicast
/// address someone can send to.
pub(super) fn check_relay_ip(key: &str, ip: IpAddr) -> anyhow::Result<()> {
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

pub(super) fn secret(key: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    if s.is_empty() {
        bail!("{key}: must not be empty");
    }
    Ok(s.as_bytes().to_vec())
}

/// `fast_path`, `xdp_interface` and `xdp_mode`, from the file or flags, as one setting.
pub(super) fn fast_path(
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
