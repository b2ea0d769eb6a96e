//! Address blocks (`203.0.113.0/24`, `2001:db8::/48`, a bare address): how the API spells
//! them, parses them strictly and tests membership.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// An address block. A `/32` (IPv4) or `/128` (IPv6) displays as the bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The block's first address (its host bits are zero).
    pub addr: IpAddr,
    /// The prefix length: 0 to 32 for IPv4, 0 to 128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Whether the block is one address (`/32`, `/128`).
    pub fn is_single(&self) -> bool {
        self.prefix == max_prefix(&self.addr)
    }

    /// Always with the prefix length (`203.0.113.7/32`), for tools that want it.
    pub fn with_prefix(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside this block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// judged as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (bits, a, b) = match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => (32, u32::from(net).into(), u32::from(ip).into()),
            (IpAddr::V6(net), IpAddr::V6(ip)) => (128, u128::from(net), u128::from(ip)),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        host_bits >= bits || (a >> host_bits) == (b >> host_bits)
    }
}

/// Why a CIDR does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The text (carried) is neither an address nor `ADDRESS/PREFIX`.
    #[error("'{0}' is not an IP address or ADDRESS/PREFIX")]
    Syntax(String),
    /// The prefix length is longer than the address family allows (32 or 128).
    #[error("'{0}': the prefix length is past the address's bits")]
    Prefix(String),
    /// Bits past the prefix are set, so the operator probably meant another block.
    #[error("'{given}' has bits set past its prefix; the block is {block}")]
    HostBits {
        /// The text as given.
        given: String,
        /// The block with the host bits cleared, suggested in the message.
        block: String,
    },
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    /// `203.0.113.0/24`, `2001:db8::/32`, or a bare address (one address). Bits past the
    /// prefix must be zero, so an operator's typo cannot silently widen or shift the block.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let digits = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
                let p: u8 = p.parse().ok().filter(|_| digits).ok_or_else(syntax)?;
                (a.parse::<IpAddr>().map_err(|_| syntax())?, Some(p))
            }
            None => (s.parse::<IpAddr>().map_err(|_| syntax())?, None),
        };
        let bits = max_prefix(&addr);
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(CidrError::Prefix(s.to_owned()));
        }
        let block = Cidr {
            addr: network(addr, prefix),
            prefix,
        };
        if block.addr != addr {
            return Err(CidrError::HostBits {
                given: s.to_owned(),
                block: block.with_prefix(),
            });
        }
        Ok(block)
    }
}

/// `addr` with the bits past `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.with_prefix())
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}
