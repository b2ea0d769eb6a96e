//! The allow-list table as the API publishes it: what a firewall team must open so that
//! Force-mode clients reach their region's published relays. One row is
//! `service | IP addresses | protocol | ports`; every change publishes a numbered version.

use serde::{Deserialize, Serialize};

use crate::vocab::Region;

/// What an allow-list row is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Force UDP: TURN over UDP, signaling and media.
    ForceUdp,
    /// Force TCP: TURN over TLS on TCP.
    ForceTcp,
}

impl Service {
    /// The service as people read it, e.g. "Force TCP (TURN over TLS)".
    pub fn label(self) -> &'static str {
        match self {
            Service::ForceUdp => "Force UDP (TURN over UDP)",
            Service::ForceTcp => "Force TCP (TURN over TLS)",
        }
    }

    /// The wire spelling (`force_udp`, `force_tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Service::ForceUdp => "force_udp",
            Service::ForceTcp => "force_tcp",
        }
    }
}

/// The IP protocol a firewall rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP (TURN over TLS rides on it).
    Tcp,
}

impl Protocol {
    /// The wire spelling (`udp`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Row {
    /// The Force mode the row serves.
    pub service: Service,
    /// Single addresses or CIDR blocks, IPv4 first.
    #[cfg_attr(feature = "openapi", schema(example = json!(["203.0.113.10", "203.0.113.12/31"])))]
    pub ips: Vec<String>,
    /// The protocol to open.
    pub protocol: Protocol,
    /// Destination ports, ascending.
    pub ports: Vec<u16>,
}

/// How one version differs from the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// Whether the row appeared or went away.
    pub kind: ChangeKind,
    /// The row itself.
    pub row: Row,
}

/// Whether an allow-list row was added or removed by a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The row is new in this version: open it.
    Added,
    /// The row is gone in this version: it may be closed.
    Removed,
}

impl ChangeKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
        }
    }
}

/// One published version of a region's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllowList {
    /// The region the table is for.
    pub region: Region,
    /// 0 when nothing was ever published for the region (then `rows` is empty).
    pub version: u64,
    /// When this version was recorded (Unix seconds).
    pub created_at: i64,
    /// When it takes effect (Unix seconds) and the same as an RFC 3339 UTC date.
    pub effective_at: i64,
    /// `effective_at` as an RFC 3339 UTC date, for people.
    pub effective_date: String,
    /// Every row in force in this version.
    pub rows: Vec<Row>,
    /// What changed against the previous version.
    pub changes: Vec<Change>,
}
