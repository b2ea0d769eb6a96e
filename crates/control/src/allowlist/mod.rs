//! The allow-list table: what a firewall team must open so that Force-mode clients reach
//! their region's published relays. Built from static-pool edges only (Auto's dynamic relays
//! are deliberately never published), without I/O.
//!
//! One row is `service | IP addresses | protocol | ports`:
//!
//! - a relay's `udp` listeners give `force_udp | … | udp | 3478` (signaling and media share the
//!   TURN port: the relay carries everything the client sends);
//! - its `tls` listeners give `force_tcp | … | tcp | 443`;
//! - plain `tcp` listeners are not published: no Force mode uses them.
//!
//! Addresses that need the same ports share a row and are aggregated into CIDR blocks where
//! that covers exactly them ([`crate::cidr`]).
//!
//! ## Versions
//!
//! The store keeps every table it ever published as a numbered version with the date it
//! takes effect: a change to a static relay that changes the table appends version n+1 with
//! its [`diff`] against version n. An operator may date a change in the future to announce it
//! ahead; the *current* version is the newest one whose effective date has come.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cidr;
use crate::model::{Pool, Transport};

pub use cloudproxy_api::allowlist::{AllowList, Change, ChangeKind, Protocol, Row, Service};
pub use cloudproxy_api::edges::Listener;

/// Builds a region's rows from its relays' pools and listeners.
pub fn build<'a>(edges: impl IntoIterator<Item = (Pool, &'a [Listener])>) -> Vec<Row> {
    // (service, protocol) -> address -> ports
    let mut by_service: BTreeMap<(Service, Protocol), BTreeMap<IpAddr, BTreeSet<u16>>> =
        BTreeMap::new();
    for (pool, listeners) in edges {
        if pool != Pool::Static {
            continue;
        }
        for l in listeners {
            let key = match l.transport {
                Transport::Udp => (Service::ForceUdp, Protocol::Udp),
                Transport::Tls => (Service::ForceTcp, Protocol::Tcp),
                Transport::Tcp => continue,
            };
            by_service
                .entry(key)
                .or_default()
                .entry(l.ip)
                .or_default()
                .insert(l.port);
        }
    }
    // Addresses with the same port set share a row.
    let mut rows = Vec::new();
    for ((service, protocol), addrs) in by_service {
        let mut by_ports: BTreeMap<Vec<u16>, Vec<IpAddr>> = BTreeMap::new();
        for (ip, ports) in addrs {
            by_ports
                .entry(ports.into_iter().collect())
                .or_default()
                .push(ip);
        }
        for (ports, ips) in by_ports {
            rows.push(Row {
                service,
                ips: cidr::aggregate(ips)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                protocol,
                ports,
            });
        }
    }
    rows.sort();
    rows
}

/// The changes from `old` to `new` (both as [`build`] returns them): removed rows first.
pub fn diff(old: &[Row], new: &[Row]) -> Vec<Change> {
    let removed = old.iter().filter(|r| !new.contains(r)).map(|r| Change {
        kind: ChangeKind::Removed,
        row: r.clone(),
    });
    let added = new.iter().filter(|r| !old.contains(r)).map(|r| Change {
        kind: ChangeKind::Added,
        row: r.clone(),
    });
    removed.chain(added).collect()
}

/// A row of the table as tests spell it: `service` on `ips` and `ports`, over the protocol
/// that service uses.
#[cfg(test)]
pub(crate) fn row(service: Service, ips: &[&str], ports: &[u16]) -> Row {
    let protocol = match service {
        Service::ForceUdp => Protocol::Udp,
        Service::ForceTcp => Protocol::Tcp,
    };
    Row {
        service,
        ips: ips.iter().map(|ip| ip.to_string()).collect(),
        protocol,
        ports: ports.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(transport: Transport, ip: &str, port: u16) -> Listener {
        Listener {
            transport,
            ip: ip.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn builds_rows_from_static_relays_only() {
        let a = vec![
            l(Transport::Udp, "203.0.113.10", 3478),
            l(Transport::Tls, "203.0.113.10", 443),
            l(Transport::Tcp, "203.0.113.10", 3478),
        ];
        let b = vec![
            l(Transport::Udp, "203.0.113.11", 3478),
            l(Transport::Tls, "203.0.113.11", 443),
        ];
        let dynamic = vec![l(Transport::Udp, "198.51.100.1", 3478)];
        let rows = build([
            (Pool::Static, a.as_slice()),
            (Pool::Static, b.as_slice()),
            (Pool::Dynamic, dynamic.as_slice()),
        ]);
        assert_eq!(
            rows,
            vec![
                row(Service::ForceUdp, &["203.0.113.10/31"], &[3478]),
                row(Service::ForceTcp, &["203.0.113.10/31"], &[443]),
            ]
        );
    }

    #[test]
    fn different_port_sets_get_their_own_rows() {
        let a = vec![l(Transport::Udp, "203.0.113.1", 3478)];
        let b = vec![
            l(Transport::Udp, "203.0.113.2", 3478),
            l(Transport::Udp, "203.0.113.2", 3479),
        ];
        let rows = build([(Pool::Static, a.as_slice()), (Pool::Static, b.as_slice())]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ips, ["203.0.113.1"]);
        assert_eq!(rows[0].ports, [3478]);
        assert_eq!(rows[1].ips, ["203.0.113.2"]);
        assert_eq!(rows[1].ports, [3478, 3479]);
    }

    #[test]
    fn diff_lists_removed_then_added() {
        let old = build([(Pool::Static, &[l(Transport::Udp, "203.0.113.1", 3478)][..])]);
        let new = build([(Pool::Static, &[l(Transport::Udp, "203.0.113.2", 3478)][..])]);
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].kind, ChangeKind::Removed);
        assert_eq!(changes[0].row.ips, ["203.0.113.1"]);
        assert_eq!(changes[1].kind, ChangeKind::Added);
        assert!(diff(&new, &new).is_empty());
    }
}
