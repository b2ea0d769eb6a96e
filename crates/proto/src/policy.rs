//! Peer policy: which peers the relay may forward to.
//!
//! The relay is default-deny (RFC 8656 §21.3 "Open relay" concerns, coturn CVE-2020-26262):
//! it forwards only to the configured upstream ranges. On top of that, a set of *special*
//! ranges (unspecified, "this network" 0.0.0.0/8, loopback, link-local including the cloud
//! metadata address 169.254.169.254, multicast, broadcast, and the IPv4-mapped IPv6 forms of all
//! of those) is denied even when a broad rule such as `0.0.0.0/0` covers it. Such an address is
//! reachable only through a rule that lies wholly inside a special range, e.g.
//! `127.0.0.0/8` for tests, like coturn's `--allow-loopback-peers`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One allowed upstream: a network and a port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRule {
    pub net: IpNet,
    pub ports: RangeInclusive<u16>,
}

/// Error parsing a peer rule such as `10.0.0.0/8`, `192.0.2.7:5000-5100` or `[2001:db8::]/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerRuleError {
    #[error("not a CIDR network (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")]
    BadNet,
    #[error("bad port range (expected PORT or LOW-HIGH, 1..=65535, LOW <= HIGH)")]
    BadPorts,
}

impl FromStr for PeerRule {
    type Err = PeerRuleError;

    /// Accepts `NET`, `NET:PORTS` (IPv4) or `[NET]:PORTS` (IPv6); `NET` may be a bare address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let joined;
        let (net, ports) = if let Some(rest) = s.strip_prefix('[') {
            // `[2001:db8::/32]:443` or `[2001:db8::]/32:443`
            let (addr, after) = rest.split_once(']').ok_or(PeerRuleError::BadNet)?;
            let (prefix, after) = match after.strip_prefix('/') {
                Some(a) => a.split_once(':').map_or((a, ""), |(p, r)| (p, r)),
                None => ("", after.strip_prefix(':').unwrap_or(after)),
            };
            let net = if prefix.is_empty() {
                addr
            } else {
                joined = format!("{addr}/{prefix}");
                &joined
            };
            if after.is_empty() && !s.ends_with(':') {
                (net, None)
            } else {
                (net, Some(after))
            }
        } else if s.matches(':').count() == 1 {
            let (n, p) = s.split_once(':').unwrap_or((s, ""));
            (n, Some(p))
        } else {
            (s, None)
        };
        let net = parse_net(net).ok_or(PeerRuleError::BadNet)?;
        let ports = match ports {
            None => 1..=65535,
            Some(p) => parse_ports(p).ok_or(PeerRuleError::BadPorts)?,
        };
        Ok(PeerRule { net, ports })
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

fn parse_ports(s: &str) -> Option<RangeInclusive<u16>> {
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
        None => {
            let p = s.parse().ok()?;
            (p, p)
        }
    };
    (lo >= 1 && lo <= hi).then_some(lo..=hi)
}

impl fmt::Display for PeerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Printed in the form `FromStr` reads back.
        let all = self.ports == (1..=65535);
        match (self.net, all) {
            (net, true) => write!(f, "{net}")?,
            (IpNet::V4(net), false) => write!(f, "{net}:")?,
            (IpNet::V6(net), false) => write!(f, "[{net}]:")?,
        }
        if !all {
            write!(f, "{}-{}", self.ports.start(), self.ports.end())?;
        }
        Ok(())
    }
}

/// The set of allowed peers. `Default` denies every peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    rules: Vec<(PeerRule, bool)>,
}

impl PeerPolicy {
    pub fn new(rules: impl IntoIterator<Item = PeerRule>) -> Self {
        let mut p = Self::default();
        for r in rules {
            p.allow(r);
        }
        p
    }

    /// Adds an allowed range.
    pub fn allow(&mut self, rule: PeerRule) {
        let rule = PeerRule {
            net: normalize_net(rule.net),
            ports: rule.ports,
        };
        let explicit_special = special_nets().any(|s| s.contains(&rule.net));
        self.rules.push((rule, explicit_special));
    }

    pub fn rules(&self) -> impl Iterator<Item = &PeerRule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// Whether the relay may send to `ip` at any port (CreatePermission installs per IP).
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        let ip = normalize_ip(ip);
        let special = is_special(ip);
        self.rules
            .iter()
            .any(|(r, explicit)| r.net.contains(&ip) && (!special || *explicit))
    }

    /// Whether the relay may send to `ip:port`.
    pub fn permits(&self, ip: IpAddr, port: u16) -> bool {
        let ip = normalize_ip(ip);
        let special = is_special(ip);
        port != 0
            && self.rules.iter().any(|(r, explicit)| {
                r.net.contains(&ip) && r.ports.contains(&port) && (!special || *explicit)
            })
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`, deprecated) IPv6 addresses
/// are judged as the IPv4 address they carry, so `::ffff:127.0.0.1` is loopback.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
                return IpAddr::V4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match normalize_ip(IpAddr::V6(n.addr())) {
            IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - 96).expect("<= 32")),
            IpAddr::V6(_) => net,
        },
        other => other,
    }
}

fn special_nets() -> impl Iterator<Item = IpNet> {
    const V4: [(Ipv4Addr, u8); 5] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8),
        (Ipv4Addr::new(127, 0, 0, 0), 8),
        (Ipv4Addr::new(169, 254, 0, 0), 16),
        (Ipv4Addr::new(224, 0, 0, 0), 4),
        (Ipv4Addr::new(255, 255, 255, 255), 32),
    ];
    const V6: [(Ipv6Addr, u8); 4] = [
        (Ipv6Addr::UNSPECIFIED, 128),
        (Ipv6Addr::LOCALHOST, 128),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
    ];
    V4.into_iter()
        .map(|(a, p)| IpNet::V4(Ipv4Net::new(a, p).expect("valid")))
        .chain(
            V6.into_iter()
                .map(|(a, p)| IpNet::V6(Ipv6Net::new(a, p).expect("valid"))),
        )
}

/// Whether `ip` (already normalized) lies in a range denied unless explicitly allowed.
pub fn is_special(ip: IpAddr) -> bool {
    special_nets().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> PeerPolicy {
        PeerPolicy::new(rules.iter().map(|r| r.parse::<PeerRule>().unwrap()))
    }

    #[test]
    fn default_denies_everything() {
        let p = PeerPolicy::default();
        assert!(!p.permits("192.0.2.1".parse().unwrap(), 5000));
        assert!(!p.permits("127.0.0.1".parse().unwrap(), 5000));
    }

    #[test]
    fn broad_rule_does_not_open_special_ranges() {
        let p = policy(&["0.0.0.0/0", "::/0"]);
        assert!(p.permits("192.0.2.1".parse().unwrap(), 5000));
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
        ] {
            assert!(
                !p.permits(bad.parse().unwrap(), 5000),
                "{bad} must be denied"
            );
        }
    }

    #[test]
    fn explicit_loopback_rule_allows_loopback_and_its_mapped_form() {
        let p = policy(&["127.0.0.0/8"]);
        assert!(p.permits("127.0.0.1".parse().unwrap(), 3480));
        assert!(p.permits("::ffff:127.0.0.1".parse().unwrap(), 3480));
        assert!(!p.permits("169.254.169.254".parse().unwrap(), 80));
        assert!(!p.permits("10.0.0.1".parse().unwrap(), 80));
    }

    #[test]
    fn port_ranges_are_honoured() {
        let p = policy(&["10.0.0.0/8:5000-5010", "[2001:db8::]/32:443"]);
        assert!(p.permits("10.1.2.3".parse().unwrap(), 5005));
        assert!(!p.permits("10.1.2.3".parse().unwrap(), 5011));
        assert!(p.permits("2001:db8::1".parse().unwrap(), 443));
        assert!(!p.permits("2001:db8::1".parse().unwrap(), 444));
        assert!(p.permits_ip("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn bad_rules_are_rejected_with_a_reason() {
        assert_eq!("nonsense".parse::<PeerRule>(), Err(PeerRuleError::BadNet));
        assert_eq!(
            "10.0.0.0/8:70000".parse::<PeerRule>(),
            Err(PeerRuleError::BadPorts)
        );
        assert_eq!(
            "10.0.0.0/8:9-1".parse::<PeerRule>(),
            Err(PeerRuleError::BadPorts)
        );
        assert_eq!(
            "10.0.0.0/33".parse::<PeerRule>(),
            Err(PeerRuleError::BadNet)
        );
    }
}
