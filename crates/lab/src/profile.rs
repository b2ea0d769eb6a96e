//! Firewall profiles and the nftables ruleset each one becomes.
//!
//! The ruleset lives in the router namespace only. Its shape, for every profile:
//!
//! ```text
//! table inet lab {
//!     set published { type ipv4_addr; elements = { … } }  # the profile's proxy addresses
//!     counter outside { }  # client packets to addresses outside `published` (dropped)
//!     counter dropped { }  # every client packet the profile refused
//!     counter lost { }     # packets `Loss` dropped at random, both directions
//!     chain forward {
//!         type filter hook forward priority filter; policy drop;
//!         numgen random mod 100 < N counter name "lost" drop    # Loss only, before any accept
//!         ct state established,related accept                  # return traffic
//!         iifname "to-relay" oifname "to-media" accept          # relay ↔ media, always
//!         iifname "to-media" oifname "to-relay" accept
//!         iifname "to-client" jump from_client
//!     }
//!     chain input {                                            # the router's own addresses
//!         type filter hook input priority filter; policy accept;
//!         ct state established,related accept
//!         iifname "to-client" jump from_client
//!     }
//!     chain from_client {
//!         …the profile's accept rules…
//!         ip daddr @published counter name "dropped" drop      # published address, wrong port
//!         counter name "outside" counter name "dropped" drop   # everything else is outside
//!     }
//! }
//! ```
//!
//! Nothing reaches the client unless the client started the conversation (relay and media
//! answers come back as `established`); that is how the locked-down networks behave too.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::{LabError, CLIENT_GATEWAY, IF_CLIENT, IF_MEDIA, IF_RELAY};

/// What the firewall between the client and everything else lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// The client may reach anything. (Auto should connect directly.)
    Open,
    /// The client's UDP is dropped; TCP to any address and port is allowed, nothing else.
    UdpBlocked,
    /// The client may send only UDP, and only to these published proxy addresses and ports.
    PublishedUdpOnly {
        /// The published proxies (IPv4).
        proxies: Vec<SocketAddr>,
    },
    /// The client may open only TCP connections to port 443 of these published proxy addresses.
    PublishedTls443Only {
        /// The published proxies (IPv4).
        proxies: Vec<IpAddr>,
    },
    /// The client may send nothing at all.
    Nothing {
        /// Addresses still counted as published (the client's proxies, refused like the rest),
        /// so a test can show the client tried nothing else.
        published: Vec<IpAddr>,
    },
    /// Everything is allowed, but `percent`% of forwarded packets are dropped at random, in each
    /// direction (so about `1 - (1 - p)²` of round trips fail).
    Loss {
        /// 0 to 100.
        percent: u8,
    },
    /// The corporate web proxy: the client may reach nothing but an HTTP proxy on the router's
    /// client-side address ([`crate::CLIENT_GATEWAY`]) at `proxy_port`
    /// ([`crate::Lab::start_http_proxy`] starts tinyproxy there). The router's own traffic —
    /// the proxy's upstream connections — may only open TCP to port 443 of `relays`; anything
    /// else it tries is dropped and counted in `proxy_refused`.
    HttpProxyOnly {
        /// The proxy's port on [`crate::CLIENT_GATEWAY`].
        proxy_port: u16,
        /// The relay addresses the proxy may tunnel to (port 443), also the published set.
        relays: Vec<IpAddr>,
    },
    /// The inspecting firewall: the client may open TCP to port 443 of these addresses, and a
    /// flow passes only if its first data segment is a TLS handshake record (`0x16 0x03`).
    /// A flow whose first data is anything else has that segment (and its retransmissions)
    /// dropped and counted in `not_tls`.
    TlsOnlyDpi {
        /// The relay addresses (port 443), also the published set.
        proxies: Vec<IpAddr>,
    },
    /// `base`, and TCP to the `signaling` addresses (a web page's origin and its WebRTC
    /// endpoint), which join the published set: a browser needs HTTP for its signaling even
    /// on a network that passes only TURN over UDP, and a Force mode must then reach nothing
    /// but these and the proxies.
    WithSignaling {
        /// The profile whose rules apply besides the signaling addresses.
        base: Box<Profile>,
        /// TCP addresses the client may open (IPv4).
        signaling: Vec<SocketAddr>,
    },
}

/// The firewall's named counters, in packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Client packets dropped because they went to an address outside the published set.
    pub outside: u64,
    /// All client packets the profile refused (`outside` included; random loss not).
    pub dropped: u64,
    /// Packets [`Profile::Loss`] dropped at random, in both directions.
    pub lost: u64,
    /// Client data segments to TCP 443 that [`Profile::TlsOnlyDpi`] dropped as not TLS.
    pub not_tls: u64,
    /// Connections the router itself (the HTTP proxy of [`Profile::HttpProxyOnly`]) tried to
    /// open elsewhere than the relays' port 443, dropped.
    pub proxy_refused: u64,
}

impl Profile {
    /// A short name for test output: `open`, `udp-blocked`, ….
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Open => "open",
            Profile::UdpBlocked => "udp-blocked",
            Profile::PublishedUdpOnly { .. } => "published-udp-only",
            Profile::PublishedTls443Only { .. } => "published-tls443-only",
            Profile::Nothing { .. } => "nothing",
            Profile::Loss { .. } => "loss",
            Profile::HttpProxyOnly { .. } => "http-proxy-only",
            Profile::TlsOnlyDpi { .. } => "tls-only-dpi",
            Profile::WithSignaling { base, .. } => base.name(),
        }
    }

    /// The published proxy addresses (the `published` set), without duplicates.
    pub fn published(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = match self {
            Profile::PublishedUdpOnly { proxies } => proxies.iter().map(SocketAddr::ip).collect(),
            Profile::PublishedTls443Only { proxies } => proxies.clone(),
            Profile::Nothing { published } => published.clone(),
            Profile::HttpProxyOnly { relays, .. } => relays.clone(),
            Profile::TlsOnlyDpi { proxies } => proxies.clone(),
            Profile::WithSignaling { base, signaling } => {
                let mut ips = base.published();
                ips.extend(signaling.iter().map(SocketAddr::ip));
                ips
            }
            _ => Vec::new(),
        };
        ips.sort();
        ips.dedup();
        ips
    }

    /// The nftables ruleset for the router namespace, as `nft -f` reads it.
    pub fn ruleset(&self) -> Result<String, LabError> {
        let published = self
            .published()
            .into_iter()
            .map(ipv4)
            .collect::<Result<Vec<_>, _>>()?;
        let mut allow = Vec::new();
        let mut loss = None;
        let mut extra = Extra::default();
        self.rules(&mut allow, &mut loss, &mut extra)?;
        Ok(render(&published, &allow, loss, extra))
    }

    /// The `from_client` accept rules of this profile, its random loss and extra chains.
    fn rules(
        &self,
        allow: &mut Vec<String>,
        loss: &mut Option<u8>,
        extra: &mut Extra,
    ) -> Result<(), LabError> {
        match self {
            Profile::Open => allow.push("accept".to_owned()),
            Profile::UdpBlocked => allow.push("meta l4proto tcp accept".to_owned()),
            Profile::PublishedUdpOnly { proxies } => {
                for proxy in proxies {
                    let ip = ipv4(proxy.ip())?;
                    allow.push(format!("ip daddr {ip} udp dport {} accept", proxy.port()));
                }
            }
            Profile::PublishedTls443Only { proxies } => {
                for &proxy in proxies {
                    allow.push(format!("ip daddr {} tcp dport 443 accept", ipv4(proxy)?));
                }
            }
            Profile::Nothing { .. } => {}
            Profile::Loss { percent } if *percent > 100 => {
                return Err(LabError::LossPercent(*percent))
            }
            Profile::Loss { percent } => {
                allow.push("accept".to_owned());
                *loss = (*percent > 0).then_some(*percent);
            }
            Profile::HttpProxyOnly { proxy_port, .. } => {
                allow.push(format!(
                    "ip daddr {CLIENT_GATEWAY} tcp dport {proxy_port} accept \
                     comment \"the HTTP proxy, and nothing else\""
                ));
                extra.proxy_upstream_443_only = true;
            }
            Profile::TlsOnlyDpi { proxies } => {
                for &proxy in proxies {
                    allow.push(format!("ip daddr {} tcp dport 443 accept", ipv4(proxy)?));
                }
                extra.tls_only_443 = true;
            }
            Profile::WithSignaling { base, signaling } => {
                base.rules(allow, loss, extra)?;
                for to in signaling {
                    allow.push(format!(
                        "ip daddr {} tcp dport {} accept comment \"signaling\"",
                        ipv4(to.ip())?,
                        to.port()
                    ));
                }
            }
        }
        Ok(())
    }
}

fn ipv4(ip: IpAddr) -> Result<Ipv4Addr, LabError> {
    match ip {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err(LabError::Ipv6(ip)),
    }
}

/// Chains some profiles add to the common shape.
#[derive(Debug, Default, Clone, Copy)]
struct Extra {
    /// [`Profile::TlsOnlyDpi`]: the `tls_check` chain on client flows to published:443.
    tls_only_443: bool,
    /// [`Profile::HttpProxyOnly`]: an `output` chain holding the router's own connections to
    /// published:443.
    proxy_upstream_443_only: bool,
}

fn render(published: &[Ipv4Addr], allow: &[String], loss: Option<u8>, extra: Extra) -> String {
    const ESTABLISHED: &str = "ct state established,related accept";
    let to_from_client = format!("iifname \"{IF_CLIENT}\" jump from_client");
    let mut s = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(s, "table inet lab {{");
    let _ = writeln!(s, "    set published {{");
    let _ = writeln!(s, "        type ipv4_addr");
    if !published.is_empty() {
        let list: Vec<String> = published.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(s, "        elements = {{ {} }}", list.join(", "));
    }
    let _ = writeln!(s, "    }}");
    for counter in ["outside", "dropped", "lost", "not_tls", "proxy_refused"] {
        let _ = writeln!(s, "    counter {counter} {{ }}");
    }
    let mut forward = Vec::new();
    if let Some(percent) = loss {
        forward.push(format!(
            "numgen random mod 100 < {percent} counter name \"lost\" drop"
        ));
    }
    if extra.tls_only_443 {
        // Before the established-flow accept: the verdict is on the first data segment, which
        // travels in an established flow. Classified flows (ct mark 1) skip the check.
        forward.push(format!(
            "iifname \"{IF_CLIENT}\" ip daddr @published tcp dport 443 ct mark 0 jump tls_check"
        ));
    }
    forward.extend([
        ESTABLISHED.to_owned(),
        format!("iifname \"{IF_RELAY}\" oifname \"{IF_MEDIA}\" accept"),
        format!("iifname \"{IF_MEDIA}\" oifname \"{IF_RELAY}\" accept"),
        to_from_client.clone(),
    ]);
    chain(&mut s, "forward", Some(("forward", "drop")), &forward);
    chain(
        &mut s,
        "input",
        Some(("input", "accept")),
        &[ESTABLISHED.to_owned(), to_from_client],
    );
    if extra.tls_only_443 {
        // `@ih` is the TCP payload. On a segment without payload (SYN, pure ACK) loading it
        // fails and the rule does not match, so only data is judged.
        chain(
            &mut s,
            "tls_check",
            None,
            &[
                "@ih,0,16 0x1603 ct mark set 1 return comment \"a TLS handshake record: the flow is TLS\"".into(),
                "@ih,0,16 != 0x1603 counter name \"not_tls\" drop comment \"first data is not TLS\"".into(),
                "@ih,0,8 != 0x16 counter name \"not_tls\" drop comment \"a one-byte segment\"".into(),
            ],
        );
    }
    if extra.proxy_upstream_443_only {
        chain(
            &mut s,
            "output",
            Some(("output", "accept")),
            &[
                ESTABLISHED.to_owned(),
                "oifname \"lo\" accept".into(),
                format!("oifname \"{IF_RELAY}\" ip daddr @published tcp dport 443 accept"),
                "counter name \"proxy_refused\" drop comment \"the proxy may reach the relays' 443 only\"".into(),
            ],
        );
    }
    let mut from_client = allow.to_vec();
    from_client.push(
        "ip daddr @published counter name \"dropped\" drop \
         comment \"published address, refused protocol or port\""
            .into(),
    );
    from_client.push(
        "counter name \"outside\" counter name \"dropped\" drop \
         comment \"outside the published set\""
            .into(),
    );
    chain(&mut s, "from_client", None, &from_client);
    let _ = writeln!(s, "}}");
    s
}

/// Writes the chain `name` with its `rules`, as a base chain on `hook` (hook and policy) if
/// one is given.
fn chain(s: &mut String, name: &str, hook: Option<(&str, &str)>, rules: &[String]) {
    let _ = writeln!(s, "    chain {name} {{");
    if let Some((hook, policy)) = hook {
        let _ = writeln!(
            s,
            "        type filter hook {hook} priority filter; policy {policy};"
        );
    }
    for rule in rules {
        let _ = writeln!(s, "        {rule}");
    }
    let _ = writeln!(s, "    }}");
}

/// Reads `nft list counters table inet lab`: `counter NAME {` lines, each followed by a
/// `packets N bytes M` line.
pub(crate) fn parse_counters(text: &str) -> Result<Counters, String> {
    let mut counters = Counters::default();
    // The three original counters must be there; the newer ones count 0 when absent.
    let mut seen = [false; 3];
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            current = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("packets ") {
            let packets: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("bad packets line {line:?}"))?;
            let (slot, index) = match current.take().as_deref() {
                Some("outside") => (&mut counters.outside, 0),
                Some("dropped") => (&mut counters.dropped, 1),
                Some("lost") => (&mut counters.lost, 2),
                Some("not_tls") => {
                    counters.not_tls = packets;
                    continue;
                }
                Some("proxy_refused") => {
                    counters.proxy_refused = packets;
                    continue;
                }
                _ => continue,
            };
            *slot = packets;
            seen[index] = true;
        }
    }
    if seen != [true; 3] {
        return Err(format!("missing one of outside/dropped/lost in {text:?}"));
    }
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_udp_allows_each_proxy_port_and_publishes_ips_once() {
        let profile = Profile::PublishedUdpOnly {
            proxies: vec![
                "10.201.2.2:3478".parse().unwrap(),
                "10.201.2.2:3479".parse().unwrap(),
            ],
        };
        let rules = profile.ruleset().unwrap();
        assert!(rules.contains("elements = { 10.201.2.2 }"), "{rules}");
        assert!(rules.contains("ip daddr 10.201.2.2 udp dport 3478 accept"));
        assert!(rules.contains("ip daddr 10.201.2.2 udp dport 3479 accept"));
        assert!(!rules.contains("numgen"));
        let last_rule = rules.lines().rev().nth(2).unwrap().trim();
        assert!(
            last_rule.starts_with("counter name \"outside\""),
            "{last_rule}"
        );
    }

    #[test]
    fn loss_drops_before_accepting_and_rejects_bad_percentages() {
        let rules = Profile::Loss { percent: 5 }.ruleset().unwrap();
        let lost = rules.find("numgen random mod 100 < 5").unwrap();
        assert!(lost < rules.find("ct state established").unwrap());
        assert!(matches!(
            Profile::Loss { percent: 101 }.ruleset(),
            Err(LabError::LossPercent(101))
        ));
    }

    #[test]
    fn ipv6_proxies_are_refused() {
        let profile = Profile::PublishedTls443Only {
            proxies: vec!["::1".parse().unwrap()],
        };
        assert!(matches!(profile.ruleset(), Err(LabError::Ipv6(_))));
    }

    #[test]
    fn nothing_has_an_empty_published_set_and_no_accept() {
        let rules = Profile::Nothing { published: vec![] }.ruleset().unwrap();
        assert!(!rules.contains("elements"));
        let from_client = &rules[rules.find("chain from_client").unwrap()..];
        assert!(!from_client.contains(" accept\n"));
    }

    #[test]
    fn http_proxy_only_lets_the_client_reach_the_proxy_and_the_proxy_the_relays_443() {
        let rules = Profile::HttpProxyOnly {
            proxy_port: 3128,
            relays: vec!["10.201.2.2".parse().unwrap()],
        }
        .ruleset()
        .unwrap();
        let from_client = &rules[rules.find("chain from_client").unwrap()..];
        assert!(from_client.contains("ip daddr 10.201.1.1 tcp dport 3128 accept"));
        assert_eq!(from_client.matches(" accept").count(), 1, "{from_client}");
        let output = &rules[rules.find("chain output").unwrap()..];
        assert!(output.contains("ip daddr @published tcp dport 443 accept"));
        assert!(output.contains("counter name \"proxy_refused\" drop"));
        assert!(rules.contains("elements = { 10.201.2.2 }"));
    }

    #[test]
    fn tls_only_dpi_checks_first_data_before_accepting_established_flows() {
        let rules = Profile::TlsOnlyDpi {
            proxies: vec!["10.201.2.2".parse().unwrap()],
        }
        .ruleset()
        .unwrap();
        let jump = rules.find("jump tls_check").unwrap();
        assert!(jump < rules.find("ct state established").unwrap());
        assert!(rules.contains("@ih,0,16 0x1603 ct mark set 1 return"));
        assert!(rules.contains("counter name \"not_tls\" drop"));
        assert!(rules.contains("ip daddr 10.201.2.2 tcp dport 443 accept"));
        assert!(!Profile::Open.ruleset().unwrap().contains("tls_check"));
    }

    #[test]
    fn with_signaling_accepts_its_tcp_addresses_and_publishes_them_with_the_base_set() {
        let profile = Profile::WithSignaling {
            base: Box::new(Profile::PublishedUdpOnly {
                proxies: vec!["10.201.2.2:3478".parse().unwrap()],
            }),
            signaling: vec![
                "10.201.2.2:80".parse().unwrap(),
                "10.201.2.3:8443".parse().unwrap(),
            ],
        };
        let rules = profile.ruleset().unwrap();
        let from_client = &rules[rules.find("chain from_client").unwrap()..];
        assert!(from_client.contains("ip daddr 10.201.2.2 udp dport 3478 accept"));
        assert!(
            from_client.contains("ip daddr 10.201.2.2 tcp dport 80 accept comment \"signaling\""),
            "{rules}"
        );
        assert!(
            from_client.contains("ip daddr 10.201.2.3 tcp dport 8443 accept comment \"signaling\"")
        );
        assert_eq!(from_client.matches("comment \"signaling\"").count(), 2);
        // The base's proxy and the first signaling address are one IP, published once.
        let ips: Vec<IpAddr> = vec!["10.201.2.2".parse().unwrap(), "10.201.2.3".parse().unwrap()];
        assert_eq!(profile.published(), ips);
        assert!(
            rules.contains("elements = { 10.201.2.2, 10.201.2.3 }"),
            "{rules}"
        );
    }

    #[test]
    fn counters_parse_from_nft_text() {
        let text = "table inet lab {\n\tcounter outside {\n\t\tpackets 3 bytes 180\n\t}\n\
                    \tcounter dropped {\n\t\tpackets 5 bytes 300\n\t}\n\
                    \tcounter lost {\n\t\tpackets 0 bytes 0\n\t}\n}\n";
        let counters = parse_counters(text).unwrap();
        assert_eq!(
            counters,
            Counters {
                outside: 3,
                dropped: 5,
                lost: 0,
                not_tls: 0,
                proxy_refused: 0,
            }
        );
        let more = format!("{text}\tcounter not_tls {{\n\t\tpackets 4 bytes 9\n\t}}\n");
        assert_eq!(parse_counters(&more).unwrap().not_tls, 4);
        assert!(parse_counters("table inet lab {\n}\n").is_err());
    }
}
