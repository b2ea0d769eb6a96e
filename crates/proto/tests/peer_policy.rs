//! The peer policy as a table: what the relay may send to under the default policy and under
//! an operator's `0.0.0.0/0` + `::/0`, with the relay's own addresses set as a driver sets
//! them. Every address of the hostile-input issue is here: the host's own listener and
//! relayed addresses, cloud metadata addresses, loopback and metadata inside NAT64, 6to4,
//! mapped, compatible, translated and Teredo forms, and 240.0.0.0/4.

use std::net::{IpAddr, SocketAddr};

use cloudproxy_proto::policy::{PeerPolicy, PeerRule, Verdict};

use Verdict::*;

/// Host addresses and the ports the relay listens on and relays from.
fn with_own(mut p: PeerPolicy) -> PeerPolicy {
    let ips = ["192.0.2.10", "10.0.0.5", "127.0.0.1", "::1", "2001:db8::10"]
        .map(|s| s.parse::<IpAddr>().unwrap());
    p.set_own(ips, vec![3478..=3478, 443..=443, 49152..=65535]);
    p
}

fn policy(rules: &[&str]) -> PeerPolicy {
    with_own(PeerPolicy::new(
        rules.iter().map(|r| r.parse::<PeerRule>().unwrap()),
    ))
}

/// (peer, verdict under `0.0.0.0/0` + `::/0`). Under the default policy every one is refused.
const TABLE: &[(&str, Verdict)] = &[
    // Ordinary peers.
    ("8.8.8.8:5000", Allowed),
    ("192.0.2.1:5000", Allowed),
    ("10.1.2.3:5000", Allowed),
    ("100.100.100.201:5000", Allowed),
    ("[2001:db8::1]:5000", Allowed),
    // Special ranges.
    ("127.0.0.1:5000", Special),
    ("127.1.2.3:5000", Special),
    ("0.0.0.0:5000", Special),
    ("0.1.2.3:5000", Special),
    ("169.254.1.1:5000", Special),
    ("224.0.0.1:5000", Special),
    ("239.255.255.250:1900", Special),
    ("240.0.0.1:5000", Special),
    ("255.255.255.255:5000", Special),
    ("[::1]:5000", Special),
    ("[::]:5000", Special),
    ("[fe80::1]:5000", Special),
    ("[ff02::1]:5000", Special),
    // Cloud metadata.
    ("169.254.169.254:80", Metadata),
    ("169.254.170.2:80", Metadata),
    ("100.100.100.200:80", Metadata),
    ("168.63.129.16:80", Metadata),
    ("192.0.0.192:80", Metadata),
    ("[fd00:ec2::254]:80", Metadata),
    ("[fd00:ec2::253]:53", Metadata),
    // Embedded IPv4, judged as the address it carries.
    ("[::ffff:127.0.0.1]:5000", Special),
    ("[::ffff:169.254.169.254]:80", Metadata),
    ("[::127.0.0.1]:5000", Special),
    ("[::ffff:0:127.0.0.1]:5000", Special),
    ("[::ffff:0:169.254.169.254]:80", Metadata),
    ("[64:ff9b::127.0.0.1]:5000", Special),
    ("[64:ff9b::169.254.169.254]:80", Metadata),
    ("[64:ff9b::100.100.100.200]:80", Metadata),
    ("[64:ff9b:1::7f00:1]:5000", Special),
    ("[64:ff9b::8.8.8.8]:5000", Allowed),
    ("[2002:7f00:1::1]:5000", Special),
    ("[2002:a9fe:a9fe::1]:80", Metadata),
    ("[2002:808:808::1]:5000", Allowed),
    ("[2001:0:4136:e378:8000:63bf:80ff:fffe]:5000", Special),
    // The relay's own transport addresses: listeners and relayed addresses (another
    // allocation's), on every interface and in mapped form.
    ("192.0.2.10:3478", Own),
    ("192.0.2.10:50000", Own),
    ("10.0.0.5:443", Own),
    ("[2001:db8::10]:49152", Own),
    ("[::ffff:192.0.2.10]:65535", Own),
    ("[2002:c000:20a::1]:50000", Own),
    // The host at a port the relay does not use (a media service beside it) is a peer.
    ("192.0.2.10:5000", Allowed),
    ("[2001:db8::10]:8443", Allowed),
];

#[test]
fn the_table_under_the_default_policy_and_under_everything() {
    assert!(TABLE.len() >= 40, "{} targets", TABLE.len());
    let default = with_own(PeerPolicy::default());
    let broad = policy(&["0.0.0.0/0", "::/0"]);
    let mut wrong = Vec::new();
    for &(target, expected) in TABLE {
        let a: SocketAddr = target.parse().unwrap_or_else(|_| panic!("{target}"));
        if default.permits(a.ip(), a.port()) {
            wrong.push(format!("{target}: allowed by the default policy"));
        }
        let got = broad.judge(a.ip(), Some(a.port()));
        if got != expected {
            wrong.push(format!("{target}: {got:?}, expected {expected:?}"));
        }
        if broad.permits(a.ip(), a.port()) != (expected == Allowed) {
            wrong.push(format!("{target}: permits() disagrees with judge()"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn port_zero_is_never_a_peer() {
    let broad = policy(&["0.0.0.0/0", "::/0"]);
    assert!(!broad.permits("8.8.8.8".parse().unwrap(), 0));
}

#[test]
fn only_an_exact_rule_opens_a_hard_denial() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // A range around the metadata address opens link-local, not the metadata address.
    let p = policy(&["169.254.0.0/16"]);
    assert!(p.permits(ip("169.254.1.1"), 80));
    assert!(!p.permits(ip("169.254.169.254"), 80));
    let p = policy(&["169.254.169.254"]);
    assert!(p.permits(ip("169.254.169.254"), 80));
    assert!(p.permits(ip("::ffff:169.254.169.254"), 80));

    // Loopback for tests: 127.0.0.0/8 opens loopback peers but not the relay's own ports.
    let p = policy(&["127.0.0.0/8"]);
    assert!(p.permits(ip("127.0.0.1"), 5000));
    assert!(!p.permits(ip("127.0.0.1"), 3478));
    assert!(!p.permits(ip("127.0.0.1"), 50000));
    // CreatePermission is per IP: the host's address may be permitted, its relay ports not.
    assert!(p.permits_ip(ip("127.0.0.1")));

    // The exact address, with a port range, opens exactly that.
    let p = policy(&["0.0.0.0/0", "192.0.2.10:50000"]);
    assert!(p.permits(ip("192.0.2.10"), 50000));
    assert!(!p.permits(ip("192.0.2.10"), 50001));
    assert!(!p.permits(ip("192.0.2.10"), 3478));
}

#[test]
fn overrides_are_listed_for_the_start_up_log() {
    let p = policy(&["0.0.0.0/0", "127.0.0.0/8", "169.254.169.254", "192.0.2.10"]);
    let o = p.overrides();
    let text = format!("{o:?}");
    assert!(
        text.contains("127.0.0.0/8") && text.contains("special range"),
        "{text}"
    );
    assert!(
        text.contains("169.254.169.254") && text.contains("metadata"),
        "{text}"
    );
    assert!(
        text.contains("192.0.2.10") && text.contains("own"),
        "{text}"
    );
    assert!(!text.contains("0.0.0.0/0"), "{text}");
    assert!(policy(&["0.0.0.0/0", "::/0"]).overrides().is_empty());
}
