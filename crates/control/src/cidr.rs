//! Aggregating addresses into the fewest CIDR blocks that cover exactly those addresses.
//!
//! Firewall teams prefer `203.0.113.0/30` to four lines. The aggregation never widens: a block
//! is emitted only when every address in it is in the input, so the allow-list opens nothing
//! that is not a published relay.
//!
//! [`Cidr`] also parses and tests blocks: the CIDRs the operator gives an edge, inside which
//! the relay key may publish its addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use cloudproxy_api::cidr::{Cidr, CidrError};

/// The smallest set of blocks covering exactly `addrs` (duplicates ignored), IPv4 blocks
/// first, each family in address order.
pub fn aggregate(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<Cidr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in addrs {
        match a {
            IpAddr::V4(a) => v4.push(u128::from(u32::from(a))),
            IpAddr::V6(a) => v6.push(u128::from(a)),
        }
    }
    let mut out = Vec::new();
    for (mut values, bits) in [(v4, 32u32), (v6, 128u32)] {
        values.sort_unstable();
        values.dedup();
        for (start, end) in runs(&values) {
            cover(start, end, bits, &mut out);
        }
    }
    out
}

/// Maximal runs of consecutive values in a sorted, deduplicated list, as inclusive ranges.
fn runs(values: &[u128]) -> Vec<(u128, u128)> {
    let mut out: Vec<(u128, u128)> = Vec::new();
    for &v in values {
        match out.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(v) => *end = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// Covers the inclusive range `start..=end` with the fewest aligned blocks: at each step the
/// largest block that starts at `start` (aligned) and does not pass `end`.
fn cover(mut start: u128, end: u128, bits: u32, out: &mut Vec<Cidr>) {
    loop {
        // Host bits we may use: limited by the alignment of `start`...
        let align = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        // ...and by the length of what is left (end - start + 1, which may be 2^128).
        let remaining = end - start; // one less than the count
        let fit = if remaining == u128::MAX {
            128
        } else {
            127 - (remaining + 1).leading_zeros()
        };
        let host_bits = align.min(fit);
        out.push(Cidr {
            addr: to_addr(start, bits),
            prefix: (bits - host_bits) as u8,
        });
        let size_minus_one = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        match start.checked_add(size_minus_one) {
            Some(last) if last < end => start = last + 1,
            _ => return,
        }
    }
}

fn to_addr(value: u128, bits: u32) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(list: &[&str]) -> Vec<String> {
        aggregate(list.iter().map(|s| s.parse().unwrap()))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parse_and_contain() {
        let c: Cidr = "203.0.113.0/24".parse().unwrap();
        assert!(c.contains("203.0.113.255".parse().unwrap()));
        assert!(!c.contains("203.0.114.0".parse().unwrap()));
        assert!(c.contains("::ffff:203.0.113.7".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let one: Cidr = "198.51.100.7".parse().unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("198.51.100.7".parse().unwrap()));
        assert!(!one.contains("198.51.100.6".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db9::1".parse().unwrap()));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"203.0.113.0/24\"");
        for bad in [
            "203.0.113.0/33",
            "203.0.113.1/24",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "",
            "::/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let e = "203.0.113.1/24".parse::<Cidr>().unwrap_err().to_string();
        assert!(e.contains("203.0.113.0/24"), "{e}");
    }

    #[test]
    fn singles_stay_single() {
        assert_eq!(agg(&["203.0.113.7"]), ["203.0.113.7"]);
        assert_eq!(
            agg(&["203.0.113.9", "203.0.113.7"]),
            ["203.0.113.7", "203.0.113.9"]
        );
        assert_eq!(agg(&["2001:db8::1"]), ["2001:db8::1"]);
    }

    #[test]
    fn aligned_runs_merge() {
        assert_eq!(
            agg(&["203.0.113.0", "203.0.113.1", "203.0.113.2", "203.0.113.3"]),
            ["203.0.113.0/30"]
        );
        assert_eq!(agg(&["2001:db8::", "2001:db8::1"]), ["2001:db8::/127"]);
    }

    #[test]
    fn unaligned_runs_split_without_widening() {
        // .1 .. .6 = .1/32, .2/31, .4/31, .6/32
        let list: Vec<String> = (1..=6).map(|i| format!("198.51.100.{i}")).collect();
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        assert_eq!(
            agg(&refs),
            [
                "198.51.100.1",
                "198.51.100.2/31",
                "198.51.100.4/31",
                "198.51.100.6"
            ]
        );
    }

    #[test]
    fn duplicates_and_families() {
        assert_eq!(
            agg(&["2001:db8::1", "10.0.0.1", "10.0.0.1", "10.0.0.0"]),
            ["10.0.0.0/31", "2001:db8::1"]
        );
    }

    #[test]
    fn extremes() {
        assert_eq!(agg(&["255.255.255.255"]), ["255.255.255.255"]);
        assert_eq!(agg(&["0.0.0.0"]), ["0.0.0.0"]);
        assert_eq!(
            agg(&["255.255.255.254", "255.255.255.255"]),
            ["255.255.255.254/31"]
        );
        let all: Vec<Cidr> = aggregate((0..=255u8).map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, 2, i))));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].to_string(), "10.1.2.0/24");
        assert_eq!(
            Cidr {
                addr: "10.0.0.1".parse().unwrap(),
                prefix: 32
            }
            .with_prefix(),
            "10.0.0.1/32"
        );
    }

    #[test]
    fn coverage_is_exact() {
        // Every address of every block is in the input, and every input address is covered.
        let input: Vec<u32> = vec![3, 4, 5, 6, 7, 8, 9, 17, 31, 32, 33, 64, 65, 66, 67];
        let blocks = aggregate(
            input
                .iter()
                .map(|&i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
        );
        let mut covered = Vec::new();
        for b in &blocks {
            let IpAddr::V4(a) = b.addr else { panic!() };
            let base = u32::from(a);
            for i in 0..(1u32 << (32 - b.prefix)) {
                covered.push(base + i - 0x0a00_0000);
            }
        }
        covered.sort_unstable();
        assert_eq!(covered, input);
    }
}
