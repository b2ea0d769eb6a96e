//! The versioned allow-list table in the database: appending a version when a region's table
//! changed ([`republish!`], run inside an edge change's transaction) and reading versions.

use super::{found, parse_wire, with_pool, Store};
use crate::allowlist::AllowList;
use crate::error::StoreError;
use crate::model::Region;
use crate::time::rfc3339;

#[derive(sqlx::FromRow)]
struct VersionRow {
    region: String,
    version: i64,
    created_at: i64,
    effective_at: i64,
    rows_json: String,
    changes_json: String,
}

impl TryFrom<VersionRow> for AllowList {
    type Error = StoreError;
    fn try_from(r: VersionRow) -> Result<AllowList, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("allow-list: {e}"));
        Ok(AllowList {
            region: parse_wire("region", &r.region)?,
            version: r.version.max(0) as u64,
            created_at: r.created_at,
            effective_at: r.effective_at,
            effective_date: rfc3339(r.effective_at),
            rows: serde_json::from_str(&r.rows_json).map_err(corrupt)?,
            changes: serde_json::from_str(&r.changes_json).map_err(corrupt)?,
        })
    }
}

/// Locks `$region` (PostgreSQL) and appends an allow-list version when its table changed.
/// Evaluates to `Option<Published>`.
macro_rules! republish {
    ($tx:expr, $pg:expr, $region:expr, $effective:expr, $now:expr) => {{
        let region: $crate::model::Region = $region;
        if $pg {
            sqlx::query("SELECT code FROM regions WHERE code = $1 FOR UPDATE")
                .bind(region.as_str())
                .execute(&mut *$tx)
                .await?;
        }
        let edges: Vec<(String, String)> =
            sqlx::query_as("SELECT pool, listeners FROM edges WHERE region = $1")
                .bind(region.as_str())
                .fetch_all(&mut *$tx)
                .await?;
        let mut parsed = Vec::with_capacity(edges.len());
        for (pool, listeners) in &edges {
            let pool: $crate::model::Pool = $crate::store::parse_wire("pool", pool)?;
            let listeners: Vec<$crate::allowlist::Listener> = serde_json::from_str(listeners)
                .map_err(|e| $crate::error::StoreError::Corrupt(format!("listeners: {e}")))?;
            parsed.push((pool, listeners));
        }
        let rows = $crate::allowlist::build(parsed.iter().map(|(p, l)| (*p, l.as_slice())));
        let latest: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT version, effective_at, rows_json FROM allowlist_versions WHERE region = $1 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(region.as_str())
        .fetch_optional(&mut *$tx)
        .await?;
        let (version, not_before, old_rows) = match latest {
            Some((v, eff, json)) => {
                let old: Vec<$crate::allowlist::Row> = serde_json::from_str(&json)
                    .map_err(|e| $crate::error::StoreError::Corrupt(format!("allow-list: {e}")))?;
                (v, eff, old)
            }
            None => (0, i64::MIN, Vec::new()),
        };
        if rows == old_rows {
            None
        } else {
            let requested: Option<i64> = $effective;
            let effective = requested.unwrap_or($now).max($now);
            let effective = match requested {
                Some(_) if effective < not_before => {
                    return Err($crate::error::StoreError::invalid(
                        "effective_at",
                        format!(
                            "must not be before the effective date of allow-list version \
                             {version} of {region} ({})",
                            $crate::time::rfc3339(not_before)
                        ),
                    ))
                }
                _ => effective.max(not_before),
            };
            let changes = $crate::allowlist::diff(&old_rows, &rows);
            sqlx::query(
                "INSERT INTO allowlist_versions (region, version, created_at, effective_at, \
                 rows_json, changes_json) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(region.as_str())
            .bind(version + 1)
            .bind($now)
            .bind(effective)
            .bind(serde_json::to_string(&rows).expect("plain data serializes"))
            .bind(serde_json::to_string(&changes).expect("plain data serializes"))
            .execute(&mut *$tx)
            .await?;
            Some($crate::store::Published {
                region,
                version: (version + 1) as u64,
                effective_at: effective,
            })
        }
    }};
}
pub(super) use republish;

/// The columns of an allow-list version, from `allowlist_versions`, then `$rest` (the `WHERE`
/// and the order).
macro_rules! select_versions {
    ($rest:literal) => {
        concat!(
            "SELECT region, version, created_at, effective_at, rows_json, changes_json ",
            "FROM allowlist_versions ",
            $rest
        )
    };
}

impl Store {
    /// The version of `region`'s allow-list in effect at `now` (version 0, empty, if none).
    pub async fn current_allowlist(
        &self,
        region: Region,
        now: i64,
    ) -> Result<AllowList, StoreError> {
        let q = select_versions!(
            "WHERE region = $1 AND effective_at <= $2 ORDER BY version DESC LIMIT 1"
        );
        match self.one_version(q, region, now).await? {
            Some(row) => row.try_into(),
            None => Ok(AllowList {
                region,
                version: 0,
                created_at: 0,
                effective_at: 0,
                effective_date: rfc3339(0),
                rows: Vec::new(),
                changes: Vec::new(),
            }),
        }
    }

    /// One version of `region`'s allow-list.
    pub async fn allowlist_version(
        &self,
        region: Region,
        version: u64,
    ) -> Result<AllowList, StoreError> {
        let q = select_versions!("WHERE region = $1 AND version = $2");
        let v = i64::try_from(version).unwrap_or(i64::MAX);
        let row = self.one_version(q, region, v).await?;
        found(row, "allow-list version", &format!("{region}/{version}"))?.try_into()
    }

    /// Every version of `region`'s allow-list, newest first, future ones included.
    pub async fn allowlist_history(&self, region: Region) -> Result<Vec<AllowList>, StoreError> {
        let q = select_versions!("WHERE region = $1 ORDER BY version DESC");
        let rows: Vec<VersionRow> = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(region.as_str())
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The version row `q` (a [`select_versions!`] query) finds for `region` and its second
    /// parameter (a time or a version number), if any.
    async fn one_version(
        &self,
        q: &'static str,
        region: Region,
        second: i64,
    ) -> Result<Option<VersionRow>, StoreError> {
        Ok(with_pool!(self, |pool| sqlx::query_as(q)
            .bind(region.as_str())
            .bind(second)
            .fetch_optional(pool)
            .await?))
    }
}
