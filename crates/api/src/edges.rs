//! Relays ("edges") as the API registers and lists them: their public listeners, heartbeats,
//! regions' capacity, the allow-list versions a change published, and the address blocks the
//! relay key may publish an edge's listeners in.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::error::FieldError;
use crate::limits;
use crate::vocab::{Pool, Region, Transport};

/// One public listener of a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Listener {
    /// The transport the listener speaks.
    pub transport: Transport,
    /// The public address clients connect to.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "203.0.113.10"))]
    pub ip: IpAddr,
    /// The public port.
    #[cfg_attr(feature = "openapi", schema(example = 443))]
    pub port: u16,
}

/// A relay's registration (`PUT /v1/edges/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EdgeInput {
    /// The region the relay serves.
    pub region: Region,
    /// The pool it belongs to: static (published, Force modes) or dynamic (Auto).
    pub pool: Pool,
    /// Relayed bandwidth this relay can carry, in kbit/s, 0 to 10⁹ (1 Tbit/s); static relays'
    /// capacities add up to the region's reservable capacity.
    pub capacity_kbps: u64,
    /// Public addresses and ports per transport.
    pub listeners: Vec<Listener>,
    /// When the allow-list change this causes takes effect (Unix seconds, 0 to 253402300799);
    /// default now. A future date announces the change ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<i64>,
}

impl EdgeInput {
    /// Every field problem at once.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.listeners.is_empty() {
            errors.push(FieldError {
                field: "listeners".into(),
                message: "must list at least one public address".into(),
            });
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.ip.is_unspecified() || l.ip.is_multicast() {
                errors.push(FieldError {
                    field: format!("listeners[{i}].ip"),
                    message: "must be a unicast address clients can reach".into(),
                });
            }
            if l.port == 0 {
                errors.push(FieldError {
                    field: format!("listeners[{i}].port"),
                    message: "must be between 1 and 65535".into(),
                });
            }
        }
        limits::check_into(
            &mut errors,
            "capacity_kbps",
            self.capacity_kbps,
            0,
            limits::MAX_CAPACITY_KBPS,
        );
        if let Some(t) = self.effective_at {
            limits::check_into(&mut errors, "effective_at", t, 0, limits::MAX_UNIX_SECONDS);
        }
        errors
    }
}

/// A registered relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Edge {
    /// The relay's id, chosen by the relay (its `--relay-id`).
    pub id: String,
    /// The region the relay serves.
    pub region: Region,
    /// Its pool: static relays are published in the allow-list, dynamic ones are not.
    pub pool: Pool,
    /// Relayed bandwidth it can carry, in kbit/s.
    pub capacity_kbps: u64,
    /// Its public addresses and ports per transport.
    pub listeners: Vec<Listener>,
    /// When it was first registered (Unix seconds).
    pub created_at: i64,
    /// When its registration last changed (Unix seconds).
    pub updated_at: i64,
    /// The last heartbeat (Unix seconds), if any.
    pub heartbeat_at: Option<i64>,
    /// Relayed bandwidth at the last heartbeat, kbit/s.
    pub load_kbps: u64,
    /// Allocations at the last heartbeat.
    pub allocations: u64,
}

/// `POST /v1/edges/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// 0 to 10⁹ (1 Tbit/s).
    pub load_kbps: u64,
    /// 0 to 10⁷.
    pub allocations: u64,
}

impl Heartbeat {
    /// Every field problem at once.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let max_kbps = limits::MAX_CAPACITY_KBPS;
        limits::check_into(&mut errors, "load_kbps", self.load_kbps, 0, max_kbps);
        let max_allocations = limits::MAX_ALLOCATIONS;
        limits::check_into(
            &mut errors,
            "allocations",
            self.allocations,
            0,
            max_allocations,
        );
        errors
    }
}

/// What an edge change did: the edge (absent after a delete) and the allow-list versions it
/// published.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeUpdate {
    /// The edge as it is now; absent after a delete.
    pub edge: Option<Edge>,
    /// The allow-list versions the change published, one per affected region (empty for a dynamic relay).
    pub published: Vec<Published>,
}

/// A region's relays and capacity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionSummary {
    /// The region.
    pub region: Region,
    /// The region's display name.
    pub name: String,
    /// Static (published) relays registered in the region.
    pub static_edges: u64,
    /// Dynamic (Auto) relays registered in the region.
    pub dynamic_edges: u64,
    /// Sum of the static relays' capacities, kbit/s.
    pub static_capacity_kbps: u64,
    /// Held by approved, active and suspended enablement requests.
    pub reserved_kbps: u64,
    /// Static capacity not yet reserved, kbit/s (never below 0).
    pub available_kbps: u64,
}

/// A newly published allow-list version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Published {
    /// The region whose table changed.
    pub region: Region,
    /// The new version number, one more than the previous.
    pub version: u64,
    /// When the version takes effect (Unix seconds).
    pub effective_at: i64,
}

/// `PUT /v1/edges/{id}/cidrs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EdgeCidrsInput {
    /// `203.0.113.0/24`, `2001:db8::/48`, or a bare address; bits past the prefix must be
    /// zero. At most 64; empty: the relay key may not register this edge.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["203.0.113.0/28"])))]
    pub cidrs: Vec<Cidr>,
}

impl EdgeCidrsInput {
    /// Every field problem at once.
    pub fn validate(&self) -> Vec<FieldError> {
        let max = limits::MAX_EDGE_CIDRS;
        if self.cidrs.len() > max {
            return vec![FieldError {
                field: "cidrs".into(),
                message: format!("at most {max} blocks"),
            }];
        }
        Vec::new()
    }
}

/// An edge's CIDRs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeCidrs {
    /// The edge the blocks belong to.
    pub edge_id: String,
    /// The blocks the relay key may publish this edge's listeners in.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub cidrs: Vec<Cidr>,
    /// When the operator last set them (Unix seconds); absent: never.
    pub updated_at: Option<i64>,
}
