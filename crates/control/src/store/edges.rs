//! Relays ("edges") and regions' capacity.
//!
//! A change to an edge republishes the allow-list of every region it touches, in the same
//! transaction and under the region's lock: when the table built from the region's static
//! relays differs from the latest version, version n+1 is appended with its changes and its
//! effective date (see [`crate::allowlist`]).

use super::allowlist::republish;
use super::edge_cidrs::{check_within, parse_cidrs};
use super::{
    found, parse_wire, touched, with_pool, with_tx, Edge, EdgeInput, EdgeUpdate, Heartbeat,
    RegionSummary, Store,
};
use crate::caller::RelayCaller;
use crate::capacity::{saturating_sum, RegionLoad};
use crate::error::StoreError;
use crate::model::{Pool, Region, Wire};

/// (region, kbit/s): one row to add up.
type RegionKbps = (String, i64);

#[derive(sqlx::FromRow)]
struct EdgeRow {
    id: String,
    region: String,
    pool: String,
    capacity_kbps: i64,
    listeners: String,
    created_at: i64,
    updated_at: i64,
    heartbeat_at: Option<i64>,
    load_kbps: i64,
    allocations: i64,
}

/// `SELECT` of every [`EdgeRow`] column `FROM edges`, then `$rest`.
macro_rules! select_edges {
    ($rest:literal) => {
        concat!(
            "SELECT id, region, pool, capacity_kbps, listeners, created_at, updated_at, ",
            "heartbeat_at, load_kbps, allocations FROM edges ",
            $rest
        )
    };
}

impl TryFrom<EdgeRow> for Edge {
    type Error = StoreError;
    fn try_from(r: EdgeRow) -> Result<Edge, StoreError> {
        Ok(Edge {
            region: parse_wire("region", &r.region)?,
            pool: parse_wire("pool", &r.pool)?,
            listeners: serde_json::from_str(&r.listeners)
                .map_err(|e| StoreError::Corrupt(format!("listeners of edge {}: {e}", r.id)))?,
            capacity_kbps: r.capacity_kbps.max(0) as u64,
            id: r.id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            heartbeat_at: r.heartbeat_at,
            load_kbps: r.load_kbps.max(0) as u64,
            allocations: r.allocations.max(0) as u64,
        })
    }
}

impl Store {
    /// Registers or replaces relay `id` and republishes the allow-lists it touches. With the
    /// relay key, every listener must be inside the CIDRs the operator gave the edge
    /// (`Forbidden` otherwise; see `store::edge_cidrs`).
    pub async fn put_edge(
        &self,
        id: &str,
        input: &EdgeInput,
        by: RelayCaller,
        now: i64,
    ) -> Result<EdgeUpdate, StoreError> {
        let listeners = serde_json::to_string(&input.listeners).expect("plain data serializes");
        let capacity = i64::try_from(input.capacity_kbps)
            .map_err(|_| StoreError::invalid("capacity_kbps", "too large"))?;
        let published = with_tx!(self, |tx, pg| {
            if by == RelayCaller::Relay {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT cidrs FROM edge_cidrs WHERE edge_id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                check_within(id, &input.listeners, &parse_cidrs(id, row)?)?;
            }
            let old: Option<(String,)> = sqlx::query_as("SELECT region FROM edges WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            // Lock regions in one order (PostgreSQL) so two moves cannot deadlock.
            let mut regions = vec![input.region];
            if let Some((old,)) = &old {
                regions.push(parse_wire("region", old)?);
            }
            regions.sort();
            regions.dedup();
            if pg {
                for r in &regions {
                    sqlx::query("SELECT code FROM regions WHERE code = $1 FOR UPDATE")
                        .bind(r.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query(
                "INSERT INTO edges (id, region, pool, capacity_kbps, listeners, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (id) DO UPDATE SET \
                 region = excluded.region, pool = excluded.pool, \
                 capacity_kbps = excluded.capacity_kbps, listeners = excluded.listeners, \
                 updated_at = excluded.updated_at",
            )
            .bind(id)
            .bind(input.region.as_str())
            .bind(input.pool.as_str())
            .bind(capacity)
            .bind(&listeners)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let mut published = Vec::new();
            for r in regions {
                if let Some(p) = republish!(tx, pg, r, input.effective_at, now) {
                    published.push(p);
                }
            }
            published
        });
        Ok(EdgeUpdate {
            edge: Some(self.get_edge(id).await?),
            published,
        })
    }

    /// Removes relay `id` and republishes its region's allow-list.
    pub async fn delete_edge(
        &self,
        id: &str,
        effective_at: Option<i64>,
        now: i64,
    ) -> Result<EdgeUpdate, StoreError> {
        let published = with_tx!(self, |tx, pg| {
            let old: Option<(String,)> =
                sqlx::query_as("DELETE FROM edges WHERE id = $1 RETURNING region")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (region,) = found(old, "edge", id)?;
            let region: Region = parse_wire("region", &region)?;
            republish!(tx, pg, region, effective_at, now)
        });
        Ok(EdgeUpdate {
            edge: None,
            published: published.into_iter().collect(),
        })
    }

    /// One relay's registration, with its listeners and load; `NotFound` for an unknown id.
    pub async fn get_edge(&self, id: &str) -> Result<Edge, StoreError> {
        let q = select_edges!("WHERE id = $1");
        let row: Option<EdgeRow> = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        found(row, "edge", id)?.try_into()
    }

    /// Relays, optionally of one region, by id.
    pub async fn list_edges(&self, region: Option<Region>) -> Result<Vec<Edge>, StoreError> {
        let q = select_edges!("WHERE ($1 IS NULL OR region = $1) ORDER BY id");
        let region = region.map(Region::as_str);
        let rows: Vec<EdgeRow> = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(region)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Records relay `id`'s heartbeat.
    pub async fn heartbeat(&self, id: &str, hb: &Heartbeat, now: i64) -> Result<(), StoreError> {
        // (Validated to far below i64::MAX; saturate rather than wrap if a caller did not.)
        let load = i64::try_from(hb.load_kbps).unwrap_or(i64::MAX);
        let allocations = i64::try_from(hb.allocations).unwrap_or(i64::MAX);
        let q = "UPDATE edges SET heartbeat_at = $2, load_kbps = $3, allocations = $4 \
                 WHERE id = $1";
        let n = with_pool!(self, |pool| sqlx::query(q)
            .bind(id)
            .bind(now)
            .bind(load)
            .bind(allocations)
            .execute(pool)
            .await?
            .rows_affected());
        touched(n, "edge", id)
    }

    /// Relays of `region` and `pool` that sent a heartbeat at or after `since`, least loaded
    /// (load over capacity) first, at most `limit`. (The `+ 1` is in floating point: a
    /// capacity stored before the limits could be i64::MAX.)
    pub async fn live_edges(
        &self,
        region: Region,
        pool: Pool,
        since: i64,
        limit: i64,
    ) -> Result<Vec<Edge>, StoreError> {
        let q = select_edges!(
            "WHERE region = $1 AND pool = $2 AND heartbeat_at >= $3 ORDER BY \
             CAST(load_kbps AS DOUBLE PRECISION) / (CAST(capacity_kbps AS DOUBLE PRECISION) + 1), \
             id LIMIT $4"
        );
        let rows: Vec<EdgeRow> = with_pool!(self, |p| sqlx::query_as(q)
            .bind(region.as_str())
            .bind(pool.as_str())
            .bind(since)
            .bind(limit)
            .fetch_all(p)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Every region's relays, capacity and reservations.
    pub async fn region_summaries(&self) -> Result<Vec<RegionSummary>, StoreError> {
        // One row per relay and per reservation, summed here with saturating arithmetic:
        // SQL `SUM` fails past i64 on both backends (see `crate::limits`).
        let q_edges = "SELECT region, pool, capacity_kbps FROM edges";
        let q_reserved = "SELECT region, reserved_kbps FROM enablement_requests \
                          WHERE state IN ('approved', 'active', 'suspended')";
        let (edges, reserved): (Vec<(String, String, i64)>, Vec<RegionKbps>) =
            with_pool!(self, |pool| {
                let e = sqlx::query_as(q_edges).fetch_all(pool).await?;
                let r = sqlx::query_as(q_reserved).fetch_all(pool).await?;
                (e, r)
            });
        Ok(Region::ALL
            .iter()
            .map(|&region| {
                let here = |r: &String| r == region.as_str();
                let in_pool = |p: Pool| {
                    edges
                        .iter()
                        .filter(move |(r, pool, _)| here(r) && pool == p.as_str())
                        .map(|e| e.2)
                };
                let mut s = RegionSummary {
                    region,
                    name: region.display_name().into(),
                    static_edges: in_pool(Pool::Static).count() as u64,
                    dynamic_edges: in_pool(Pool::Dynamic).count() as u64,
                    static_capacity_kbps: saturating_sum(in_pool(Pool::Static)),
                    reserved_kbps: saturating_sum(
                        reserved.iter().filter(|(r, _)| here(r)).map(|r| r.1),
                    ),
                    available_kbps: 0,
                };
                s.available_kbps = RegionLoad {
                    capacity_kbps: s.static_capacity_kbps,
                    reserved_kbps: s.reserved_kbps,
                }
                .available_kbps();
                s
            })
            .collect())
    }
}
