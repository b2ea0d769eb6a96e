//! Firewall lab: network namespaces, veth pairs and nftables profiles for end-to-end tests of
//! the cloud-proxy modes (issue 3, "The firewall lab").
//!
//! # Topology
//!
//! [`Lab::new`] creates four network namespaces, named `cpl<pid>x<n><role>` so that two labs
//! (in one test binary or in two) never collide and leftovers of a crashed run can be found:
//!
//! ```text
//!   client ns                    router ns                         relay ns
//!  ┌──────────────┐   veth   ┌──────────────────────┐   veth   ┌──────────────────┐
//!  │ eth0         ├──────────┤ to-client  to-relay  ├──────────┤ eth0             │
//!  │ 10.201.1.2   │          │ 10.201.1.1 10.201.2.1│          │ 10.201.2.2 (pub) │
//!  └──────────────┘          │                      │          │ 10.201.2.3 (pool)│
//!                            │ nft: table inet lab  │          │ 10.201.2.4 (2nd) │
//!                            │                      │          └──────────────────┘
//!                            │ sink (veth, far end  │   veth   ┌──────────────────┐
//!                            │ down; default route) ├──────────┤ eth0 10.201.3.2  │
//!                            │          to-media    │          │ lo   10.201.9.2  │
//!                            │          10.201.3.1  │          └──────────────────┘
//!                            └──────────────────────┘              media ns
//! ```
//!
//! - Every leaf namespace has its default route via the router; only the router forwards
//!   (`ip_forward=1` inside the router namespace, nowhere else).
//! - IPv6 is off on the links, so no router solicitation or MLD report reaches the counters;
//!   `lo` keeps `::1`, so programs that bind `[::]` still start.
//! - The veth pairs are created from inside the router namespace with their peers placed straight
//!   into the leaf namespaces, so no interface ever exists in the host's namespace and the
//!   interface names (`to-client`, `eth0`, …) are the same in every lab.
//! - The router's default route points into `sink`, a veth whose far end stays down: a packet
//!   the client sends to an address the lab does not route still passes the forward chain, where
//!   it is counted, and then vanishes instead of leaving the machine. [`UNROUTED_ADDR`] (held by
//!   the media namespace, not routed by the router) exercises that path.
//! - A UDP server meant to answer on several relay addresses must bind each one (or use
//!   `IP_PKTINFO`): bound to `0.0.0.0`, it answers datagrams sent to [`RELAY_POOL_ADDR`] from
//!   [`RELAY_ADDR`], which neither the client nor the router's conntrack takes as the reply.

//! # Firewall
//!
//! The [`Profile`] becomes one nftables table, `table inet lab`, in the router namespace only
//! (see [`profile`] for the rules). Its named counters tell a test what the client sent that the
//! firewall refused: [`Lab::outside_count`] counts packets to addresses outside the published
//! proxy set, the proof that a Force mode contacted nothing else.
//!
//! Two profiles play networks that judge more than addresses: [`Profile::HttpProxyOnly`] (the
//! client reaches only an HTTP proxy, a real tinyproxy that [`Lab::start_http_proxy`] runs in
//! the router namespace) and [`Profile::TlsOnlyDpi`] (TCP 443 passes only when its first data
//! is a TLS handshake record; the `not_tls` counter shows what it dropped).
//!
//! # Processes
//!
//! [`Lab::spawn`] starts a program inside a namespace (`ip netns exec`), hands its stdout lines
//! over a channel so a test can wait for a readiness line, and kills it on drop. [`Lab::run`]
//! runs one to completion within a deadline. Nothing waits without a bound.
//!
//! # Cleanup
//!
//! Dropping a [`Lab`] (also while a test unwinds from a panic) kills its processes and deletes its
//! namespaces, and with them the veths and the ruleset. [`cleanup_stale`] removes what a killed
//! test process left behind; [`Lab::new`] runs it once per process.
//!
//! # Example: the three `cloudproxy` processes across a profile
//!
//! ```no_run
//! use std::time::Duration;
//! use cloudproxy_lab::{Lab, Profile, Role, MEDIA_ADDR, RELAY_ADDR};
//!
//! // env!("CARGO_BIN_EXE_cloudproxy") in the cli crate's tests; the flags are illustrative.
//! let cloudproxy = "/path/to/cloudproxy";
//! let proxy = std::net::SocketAddr::from((RELAY_ADDR, 3478));
//! let Some(lab) = Lab::start_or_skip(Profile::PublishedUdpOnly { proxies: vec![proxy] }) else {
//!     return Ok(()); // not root / no namespaces, and CI unset
//! };
//! let media = lab.spawn(Role::Media, cloudproxy, ["media", "--listen", "0.0.0.0:5000"])?;
//! media.wait_for_line(Duration::from_secs(10), |l| l.contains("listening"))?;
//! let relay = lab.spawn(Role::Relay, cloudproxy, ["relay", "--listen", "10.201.2.2:3478"])?;
//! relay.wait_for_line(Duration::from_secs(10), |l| l.starts_with("udp "))?;
//! let media_addr = format!("{MEDIA_ADDR}:5000");
//! let proxy_addr = proxy.to_string();
//! let join = lab.spawn(
//!     Role::Client,
//!     cloudproxy,
//!     ["join", "--media", &media_addr, "--mode", "udp", "--proxy", &proxy_addr, "--json"],
//! )?;
//! let out = join.finish(Duration::from_secs(30))?;
//! assert!(out.status.success(), "{:?}", out.stderr);
//! assert_eq!(lab.outside_count()?, 0, "Force UDP contacted an unpublished address");
//! # Ok::<(), cloudproxy_lab::LabError>(())
//! ```

mod child;
mod command;
mod error;
mod http_proxy;
mod netns;
pub mod profile;
mod topology;

use std::fmt;
use std::net::Ipv4Addr;

pub use child::{ChildOutput, LabChild};
pub use error::LabError;
pub use http_proxy::{HttpProxyServer, TINYPROXY};
pub use netns::cleanup_stale;
pub use profile::{Counters, Profile};
pub use topology::Lab;

// The router's interface names: the topology creates them, the profiles' rules name them.
/// The router's end of the client's link.
pub(crate) const IF_CLIENT: &str = "to-client";
/// The router's end of the relay's link.
pub(crate) const IF_RELAY: &str = "to-relay";
/// The router's end of the media service's link.
pub(crate) const IF_MEDIA: &str = "to-media";

/// The client's address (on its `eth0`, a /24 whose gateway is [`CLIENT_GATEWAY`]).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
/// The router's address on the client's link; the client's default route.
pub const CLIENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 1);
/// The relay's published address: the one to put in the published allow-list.
pub const RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 2);
/// A second address of the relay namespace, standing in for the dynamic, never published
/// Auto-mode proxy pool. No profile publishes it unless a test puts it in the list.
pub const RELAY_POOL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 3);
/// A third address of the relay namespace, for a second published relay (the failover test
/// runs one relay process on each of [`RELAY_ADDR`] and this one). Published only where a test
/// puts it in the list.
pub const SECOND_RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 4);
/// The router's address on the relay's link.
pub const RELAY_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 1);
/// The media service's address.
pub const MEDIA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 3, 2);
/// The router's address on the media service's link.
pub const MEDIA_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 201, 3, 1);
/// An address of the media namespace (on its loopback) that the router has no route for:
/// packets to it take the router's default route into the sink, like packets to the Internet.
pub const UNROUTED_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 9, 2);
/// Prefix length of the three links.
pub const LINK_PREFIX_LEN: u8 = 24;

/// One of the lab's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The user's machine in the locked-down network; runs `cloudproxy join`.
    Client,
    /// The cloud proxy; runs `cloudproxy relay`.
    Relay,
    /// The media service; runs `cloudproxy media`.
    Media,
    /// The firewall in the middle; holds the nftables ruleset.
    Router,
}

impl Role {
    /// Every role, in creation order.
    pub const ALL: [Role; 4] = [Role::Router, Role::Client, Role::Relay, Role::Media];

    /// The last character of the namespace name (`g` for the router: "gateway").
    pub(crate) fn suffix(self) -> char {
        match self {
            Role::Client => 'c',
            Role::Relay => 'r',
            Role::Media => 'm',
            Role::Router => 'g',
        }
    }

    /// The role's main address; for the router, its address on the client's link.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Role::Client => CLIENT_ADDR,
            Role::Relay => RELAY_ADDR,
            Role::Media => MEDIA_ADDR,
            Role::Router => CLIENT_GATEWAY,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Relay => "relay",
            Role::Media => "media",
            Role::Router => "router",
        })
    }
}
