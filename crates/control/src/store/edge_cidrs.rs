//! The address blocks the operator gives an edge, and the rule they enforce: a relay key
//! publishes only addresses inside them.
//!
//! Relays register themselves (`PUT /v1/edges/{id}`) with the relay key, which every relay
//! of the fleet shares. Without this rule, anyone holding that key could publish any address
//! into the public allow-list — which firewall teams open — or into the Auto-mode proxy list.
//! So the operator gives each edge its CIDRs (`PUT /v1/edges/{id}/cidrs`, operator key), and
//! a registration with the relay key must have every listener inside them; an edge without
//! CIDRs may not be registered with the relay key at all. The operator's own key registers
//! anything, as before. Dynamic relays are held to the same rule: the proxy list is public
//! too.

use super::{with_pool, EdgeCidrs, Store};
use crate::allowlist::Listener;
use crate::cidr::Cidr;
use crate::error::StoreError;

/// The stored JSON of an edge's CIDRs (a missing row is none).
pub(crate) fn parse_cidrs(id: &str, row: Option<(String,)>) -> Result<Vec<Cidr>, StoreError> {
    match row {
        None => Ok(Vec::new()),
        Some((json,)) => serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("CIDRs of edge {id}: {e}"))),
    }
}

/// `Forbidden` naming each listener outside `cidrs`, for a registration with the relay key.
pub(crate) fn check_within(
    id: &str,
    listeners: &[Listener],
    cidrs: &[Cidr],
) -> Result<(), StoreError> {
    let outside: Vec<String> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| !cidrs.iter().any(|c| c.contains(l.ip)))
        .map(|(i, l)| format!("listeners[{i}].ip {}", l.ip))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    let given = if cidrs.is_empty() {
        "none".to_owned()
    } else {
        cidrs
            .iter()
            .map(Cidr::with_prefix)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(StoreError::Forbidden(format!(
        "the relay key may publish only addresses inside the CIDRs the operator gave edge \
         '{id}' ({given}); outside them: {}. The operator sets them with \
         PUT /v1/edges/{id}/cidrs",
        outside.join(", ")
    )))
}

impl Store {
    /// Sets edge `id`'s CIDRs (the edge need not be registered yet).
    pub async fn set_edge_cidrs(
        &self,
        id: &str,
        cidrs: &[Cidr],
        now: i64,
    ) -> Result<EdgeCidrs, StoreError> {
        let json = serde_json::to_string(cidrs).expect("plain data serializes");
        let q = "INSERT INTO edge_cidrs (edge_id, cidrs, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (edge_id) DO UPDATE SET cidrs = excluded.cidrs, \
                 updated_at = excluded.updated_at";
        with_pool!(self, |pool| sqlx::query(q)
            .bind(id)
            .bind(&json)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(EdgeCidrs {
            edge_id: id.to_owned(),
            cidrs: cidrs.to_vec(),
            updated_at: Some(now),
        })
    }

    /// Edge `id`'s CIDRs (none when the operator never set them).
    pub async fn edge_cidrs(&self, id: &str) -> Result<EdgeCidrs, StoreError> {
        let q = "SELECT cidrs, updated_at FROM edge_cidrs WHERE edge_id = $1";
        let row: Option<(String, i64)> = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        let updated_at = row.as_ref().map(|r| r.1);
        Ok(EdgeCidrs {
            edge_id: id.to_owned(),
            cidrs: parse_cidrs(id, row.map(|r| (r.0,)))?,
            updated_at,
        })
    }
}
