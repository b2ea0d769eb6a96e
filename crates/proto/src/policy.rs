//! Peer policy: which peers the relay may forward to.
//!
//! The relay is default-deny (RFC 8656 §21.3 "Open relay" concerns, coturn CVE-2020-26262):
//! it forwards only to the configured upstream ranges. On top of the rules sit two layers of
//! built-in denials that a broad rule such as `0.0.0.0/0` or `::/0` does not open:
//!
//! 1. **Special ranges**: unspecified, "this network" 0.0.0.0/8, loopback, link-local,
//!    multicast, 240.0.0.0/4 (reserved, and the limited broadcast address). A rule that lies
//!    wholly inside one of them opens it, e.g. `127.0.0.0/8` for tests, like coturn's
//!    `--allow-loopback-peers`.
//! 2. **Hard denials**: the cloud metadata and host-service addresses (169.254.169.254,
//!    169.254.170.2, 100.100.100.200, 168.63.129.16, 192.0.0.192, fd00:ec2::/116), and the
//!    relay's own transport addresses — every address of the host (and the advertised relay
//!    addresses) at the relay's listener ports and relayed port range, so a client cannot make
//!    the relay send to itself or to another allocation (a relay loop). Only a rule naming that
//!    exact address (a /32 or /128) opens one of these; [`PeerPolicy::overrides`] lists such
//!    rules so the relay can say so at start.
//!
//! IPv6 forms that embed an IPv4 address are judged as the IPv4 address they carry: mapped
//! (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), translated (`::ffff:0:a.b.c.d`), NAT64
//! (`64:ff9b::a.b.c.d`, `64:ff9b:1::a.b.c.d`), 6to4 (`2002:AABB:CCDD::/48`) and Teredo (the
//! client address, de-obfuscated). So `64:ff9b::7f00:1` is loopback and `2002:a9fe:a9fe::1` is
//! the metadata address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One allowed upstream: a network and a port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRule {
    /// The allowed network; a host address is a `/32` or `/128`.
    pub net: IpNet,
    /// The allowed destination ports (the whole range 1-65535 when the rule names none).
    pub ports: RangeInclusive<u16>,
}

/// Error parsing a peer rule such as `10.0.0.0/8`, `192.0.2.7:5000-5100` or `[2001:db8::]/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerRuleError {
    /// The part before the ports is not a CIDR network or address.
    #[error("not a CIDR network (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")]
    BadNet,
    /// The port part is not `PORT` or `LOW-HIGH` within 1-65535 with LOW <= HIGH.
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

/// The relay's own transport addresses: any of `ips` at a port in `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddrs {
    /// Every address of the host and the advertised relay addresses (normalized).
    pub ips: Vec<IpAddr>,
    /// Listener ports and the relayed port range.
    pub ports: Vec<RangeInclusive<u16>>,
}

impl OwnAddrs {
    fn contains(&self, ip: IpAddr, port: u16) -> bool {
        self.ips.contains(&ip) && self.ports.iter().any(|r| r.contains(&port))
    }
}

/// The set of allowed peers. `Default` denies every peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    rules: Vec<(PeerRule, bool)>,
    own: OwnAddrs,
}

/// Why a peer is refused, or that it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A rule opens the peer.
    Allowed,
    /// No rule covers it.
    NoRule,
    /// A special range (loopback, link-local, ...) no rule inside it opens.
    Special,
    /// A cloud metadata address; only an exact rule opens it.
    Metadata,
    /// One of the relay's own transport addresses; only an exact rule opens it.
    Own,
}

impl PeerPolicy {
    /// A policy that allows exactly `rules` (special ranges only when a rule lies inside them).
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

    /// Sets the relay's own transport addresses (the driver knows them once it has bound).
    pub fn set_own(
        &mut self,
        ips: impl IntoIterator<Item = IpAddr>,
        ports: Vec<RangeInclusive<u16>>,
    ) {
        let mut ips: Vec<IpAddr> = ips.into_iter().map(normalize_ip).collect();
        ips.sort();
        ips.dedup();
        self.own = OwnAddrs { ips, ports };
    }

    /// The relay's own transport addresses, as last set with [`PeerPolicy::set_own`].
    pub fn own(&self) -> &OwnAddrs {
        &self.own
    }

    /// The allowed ranges, in the order they were added.
    pub fn rules(&self) -> impl Iterator<Item = &PeerRule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// The rules that open a built-in denial, each with what it opens, e.g.
    /// `("127.0.0.0/8", "special range 127.0.0.0/8")`: to be logged at start.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (r, explicit) in &self.rules {
            if *explicit {
                let within = special_nets()
                    .find(|s| s.contains(&r.net))
                    .map_or_else(String::new, |s| s.to_string());
                out.push((r.to_string(), format!("special range {within}")));
            }
            if let Some(ip) = exact(r) {
                if is_metadata(ip) {
                    out.push((r.to_string(), "a cloud metadata address".into()));
                }
                if self.own.ips.contains(&ip) {
                    out.push((r.to_string(), "one of the relay's own addresses".into()));
                }
            }
        }
        out
    }

    /// Whether the relay may send to `ip` at any port (CreatePermission installs per IP). The
    /// relay's own addresses pass here (other ports of the host may be fine); the port is
    /// checked where one is known (ChannelBind, Send).
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        self.judge(ip, None) == Verdict::Allowed
    }

    /// Whether the relay may send to `ip:port`.
    pub fn permits(&self, ip: IpAddr, port: u16) -> bool {
        port != 0 && self.judge(ip, Some(port)) == Verdict::Allowed
    }

    /// The verdict for `ip` (and `port`, when known), with the reason of a refusal.
    pub fn judge(&self, ip: IpAddr, port: Option<u16>) -> Verdict {
        let ip = normalize_ip(ip);
        let port_ok = |r: &PeerRule| port.is_none_or(|p| r.ports.contains(&p));
        let hard = if is_metadata(ip) {
            Some(Verdict::Metadata)
        } else if port.is_some_and(|p| self.own.contains(ip, p)) {
            Some(Verdict::Own)
        } else {
            None
        };
        if let Some(why) = hard {
            let opened = self
                .rules
                .iter()
                .any(|(r, _)| exact(r) == Some(ip) && port_ok(r));
            return if opened { Verdict::Allowed } else { why };
        }
        let special = is_special(ip);
        let covered = self
            .rules
            .iter()
            .any(|(r, explicit)| r.net.contains(&ip) && port_ok(r) && (!special || *explicit));
        match (covered, special) {
            (true, _) => Verdict::Allowed,
            (false, true) => Verdict::Special,
            (false, false) => Verdict::NoRule,
        }
    }
}

/// The one address a rule names, if it is a /32 or /128.
fn exact(r: &PeerRule) -> Option<IpAddr> {
    (r.net.prefix_len() == r.net.max_prefix_len()).then(|| r.net.addr())
}

/// IPv6 forms that carry an IPv4 address are judged as that address (see the module docs).
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| {
        IpAddr::V4(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ))
    };
    match s {
        // IPv4-compatible (deprecated), but not :: and ::1.
        [0, 0, 0, 0, 0, 0, hi, lo] if !(hi == 0 && lo <= 1) => v4(hi, lo),
        // IPv4-translated (RFC 2765 SIIT).
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => v4(hi, lo),
        // NAT64: the well-known prefix (RFC 6052) and the local-use one as a /96 (RFC 8215).
        [0x64, 0xff9b, 0 | 1, 0, 0, 0, hi, lo] => v4(hi, lo),
        // 6to4 (RFC 3056): 2002:AABB:CCDD::/48.
        [0x2002, hi, lo, ..] => v4(hi, lo),
        // Teredo (RFC 4380): the client's address, bit-inverted, in the last 32 bits.
        [0x2001, 0, _, _, _, _, hi, lo] => v4(!hi, !lo),
        _ => ip,
    }
}

/// Cloud metadata and host-service addresses: a relay in a cloud must never reach them for
/// a client, whatever the rules say (only an exact rule opens one).
fn is_metadata(ip: IpAddr) -> bool {
    const V4: [Ipv4Addr; 5] = [
        Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
        Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
        Ipv4Addr::new(168, 63, 129, 16),   // Azure WireServer
        Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud (legacy)
    ];
    match ip {
        IpAddr::V4(v4) => V4.contains(&v4),
        // AWS's IPv6 service addresses (IMDS fd00:ec2::254, DNS ::253, NTP ::123): /116.
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[..7] == [0xfd00, 0xec2, 0, 0, 0, 0, 0] && s[7] <= 0xfff
        }
    }
}

/// A rule over an embedded-IPv4 form becomes the IPv4 rule it means. Only forms that carry the
/// IPv4 address in their last 32 bits map a prefix onto an IPv4 prefix; a 6to4 or Teredo rule
/// converts only when it names one address.
fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n)
            if n.prefix_len() == 128
                || (n.prefix_len() >= 96 && !matches!(n.addr().segments()[0], 0x2001 | 0x2002)) =>
        {
            match normalize_ip(IpAddr::V6(n.addr())) {
                IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - 96).expect("<= 32")),
                IpAddr::V6(_) => net,
            }
        }
        other => other,
    }
}

fn special_nets() -> impl Iterator<Item = IpNet> {
    const V4: [(Ipv4Addr, u8); 5] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8),
        (Ipv4Addr::new(127, 0, 0, 0), 8),
        (Ipv4Addr::new(169, 254, 0, 0), 16),
        (Ipv4Addr::new(224, 0, 0, 0), 4),
        // Reserved (RFC 1112 "class E"), including the limited broadcast 255.255.255.255.
        (Ipv4Addr::new(240, 0, 0, 0), 4),
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

    /// What `p` says of each `(ip, port)`, in order.
    fn verdicts(p: &PeerPolicy, peers: &[(&str, u16)]) -> Vec<bool> {
        peers
            .iter()
            .map(|(ip, port)| p.permits(ip.parse().unwrap(), *port))
            .collect()
    }

    #[test]
    fn default_denies_everything() {
        let p = PeerPolicy::default();
        let peers = [("192.0.2.1", 5000), ("127.0.0.1", 5000)];
        assert_eq!(verdicts(&p, &peers), [false, false]);
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
        let peers = [
            ("127.0.0.1", 3480),
            ("::ffff:127.0.0.1", 3480),
            ("169.254.169.254", 80),
            ("10.0.0.1", 80),
        ];
        assert_eq!(verdicts(&p, &peers), [true, true, false, false]);
    }

    #[test]
    fn port_ranges_are_honoured() {
        let p = policy(&["10.0.0.0/8:5000-5010", "[2001:db8::]/32:443"]);
        let (v4, v6) = ("10.1.2.3".parse().unwrap(), "2001:db8::1".parse().unwrap());
        for port in [1, 4999, 5000, 5005, 5010, 5011, 65535] {
            let inside = (5000..=5010).contains(&port);
            assert_eq!(p.permits(v4, port), inside, "{v4} port {port}");
        }
        for port in [442, 443, 444] {
            assert_eq!(p.permits(v6, port), port == 443, "{v6} port {port}");
        }
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
