//! Admission leases: the central count of proxy users per channel and concurrent channels.
//!
//! A relay asks for a lease before it answers a Force-mode Allocate, renews the leases of its
//! live allocations every few seconds, and releases them when the allocations end. A lease
//! that is not renewed expires, so the counts of a relay that crashed or was cut off
//! disappear on their own after the lease TTL.
//!
//! Counting happens in one transaction per acquisition under the app's lock (`FOR UPDATE` on
//! PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so two relays — or two control-plane processes —
//! racing for the last place in a channel cannot both get it.
//!
//! Both limits are per app and channel across every region and mode: a channel's proxy users
//! are counted together whichever Force mode each uses. The limits applied are those of the
//! enablement (app, region, mode) the new lease is for.

use super::{found, parse_wire, with_pool, with_tx, Lease, LeaseInput, Store};
use crate::error::StoreError;
use crate::model::{AppStatus, QualityTier, UsageMode};

/// Binds a lease's eight columns, in table order, to `$1`…`$8`.
macro_rules! bind_lease {
    ($q:expr, $l:expr, $expires:expr) => {
        $q.bind(&$l.lease_id)
            .bind(&$l.app_id)
            .bind($l.region.as_str())
            .bind($l.mode.as_str())
            .bind(&$l.channel)
            .bind(&$l.user)
            .bind(&$l.relay_id)
            .bind($expires)
    };
}

impl Store {
    /// Grants a lease for `l`, or refuses: [`StoreError::Forbidden`] when the app is not
    /// active for that mode in that region, [`StoreError::Quota`] when the channel is full
    /// or the app has its maximum of concurrent channels.
    pub async fn acquire_lease(
        &self,
        l: &LeaseInput,
        ttl: i64,
        now: i64,
    ) -> Result<Lease, StoreError> {
        let expires_at = now + ttl;
        let lease = with_tx!(self, |tx, pg| {
            let q_app = if pg {
                "SELECT status FROM apps WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT status FROM apps WHERE id = $1"
            };
            let status: Option<(String,)> = sqlx::query_as(q_app)
                .bind(&l.app_id)
                .fetch_optional(&mut *tx)
                .await?;
            let (status,) = found(status, "app", &l.app_id)?;
            if parse_wire::<AppStatus>("app status", &status)? != AppStatus::Active {
                return Err(StoreError::Forbidden(format!(
                    "app '{}' is suspended",
                    l.app_id
                )));
            }
            let limits: Option<(i64, i64, String)> = sqlx::query_as(
                "SELECT max_concurrent_channels, max_proxy_users_per_channel, quality \
                 FROM enablement_requests WHERE app_id = $1 AND region = $2 AND mode = $3 \
                 AND state = 'active' ORDER BY max_proxy_users_per_channel DESC LIMIT 1",
            )
            .bind(&l.app_id)
            .bind(l.region.as_str())
            .bind(l.mode.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some((max_channels, max_users, quality)) = limits else {
                return Err(StoreError::Forbidden(format!(
                    "app '{}' is not enabled for {} in {}",
                    l.app_id,
                    l.mode.as_str(),
                    l.region.as_str()
                )));
            };
            let quality: QualityTier = parse_wire("quality", &quality)?;
            sqlx::query("DELETE FROM leases WHERE app_id = $1 AND expires_at <= $2")
                .bind(&l.app_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let count = |q: &'static str| sqlx::query_as::<_, (i64,)>(q).bind(&l.app_id);
            let (known,) = count("SELECT COUNT(*) FROM leases WHERE app_id = $1 AND id = $2")
                .bind(&l.lease_id)
                .fetch_one(&mut *tx)
                .await?;
            if known == 0 {
                let (mine,) = count(
                    "SELECT COUNT(*) FROM leases WHERE app_id = $1 AND channel = $2 \
                     AND user_id = $3",
                )
                .bind(&l.channel)
                .bind(&l.user)
                .fetch_one(&mut *tx)
                .await?;
                if mine == 0 {
                    let (users,) = count(
                        "SELECT COUNT(DISTINCT user_id) FROM leases WHERE app_id = $1 \
                         AND channel = $2",
                    )
                    .bind(&l.channel)
                    .fetch_one(&mut *tx)
                    .await?;
                    if users >= max_users {
                        return Err(StoreError::Quota(format!(
                            "channel '{}' of app '{}' already has {users} proxy users, its \
                             maximum (max_proxy_users_per_channel {max_users})",
                            l.channel, l.app_id
                        )));
                    }
                    let (in_channel,) =
                        count("SELECT COUNT(*) FROM leases WHERE app_id = $1 AND channel = $2")
                            .bind(&l.channel)
                            .fetch_one(&mut *tx)
                            .await?;
                    if in_channel == 0 {
                        let (channels,) =
                            count("SELECT COUNT(DISTINCT channel) FROM leases WHERE app_id = $1")
                                .fetch_one(&mut *tx)
                                .await?;
                        if channels >= max_channels {
                            return Err(StoreError::Quota(format!(
                                "app '{}' already has {channels} channels through the proxy, \
                                 its maximum (max_concurrent_channels {max_channels})",
                                l.app_id
                            )));
                        }
                    }
                }
            }
            bind_lease!(
                sqlx::query(
                    "INSERT INTO leases (id, app_id, region, mode, channel, user_id, relay_id, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
                ),
                l,
                expires_at
            )
            .execute(&mut *tx)
            .await?;
            // The central count is the exact concurrency across relays: keep the day's peak.
            let (live,) = count("SELECT COUNT(*) FROM leases WHERE app_id = $1 AND mode = $2")
                .bind(l.mode.as_str())
                .fetch_one(&mut *tx)
                .await?;
            let day = crate::time::day(now);
            super::usage::add_usage!(
                tx,
                pg,
                &l.app_id,
                &day,
                UsageMode::from(l.mode),
                Some(quality),
                (0, 0, live)
            )?;
            Lease {
                lease_id: l.lease_id.clone(),
                expires_at,
                quality,
            }
        });
        Ok(lease)
    }

    /// Extends the leases of a relay's live allocations, re-creating any that expired (during
    /// a control-plane outage, say) without a quota check: those allocations exist already.
    /// Leases of deleted apps are skipped. Returns how many were renewed.
    pub async fn renew_leases(
        &self,
        leases: &[LeaseInput],
        ttl: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let expires_at = now + ttl;
        let renewed = with_tx!(self, |tx, pg| {
            sqlx::query("DELETE FROM leases WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let mut renewed = 0;
            for l in leases {
                let done = bind_lease!(
                    sqlx::query(
                        "INSERT INTO leases (id, app_id, region, mode, channel, user_id, \
                         relay_id, expires_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                         WHERE EXISTS (SELECT 1 FROM apps WHERE id = $2) \
                         ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
                    ),
                    l,
                    expires_at
                )
                .execute(&mut *tx)
                .await?;
                renewed += done.rows_affected();
            }
            renewed
        });
        Ok(renewed)
    }

    /// Ends leases of `relay_id`. Unknown ids are ignored (already expired or released).
    pub async fn release_leases(&self, relay_id: &str, ids: &[String]) -> Result<u64, StoreError> {
        let released = with_tx!(self, |tx, pg| {
            let mut n = 0;
            for id in ids {
                n += sqlx::query("DELETE FROM leases WHERE id = $1 AND relay_id = $2")
                    .bind(id)
                    .bind(relay_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            n
        });
        Ok(released)
    }
}

impl Store {
    /// Leases not yet expired at `now` (every app, relay and region): what `/metrics` reports.
    pub async fn live_lease_count(&self, now: i64) -> Result<i64, StoreError> {
        let q = "SELECT COUNT(*) FROM leases WHERE expires_at > $1";
        let (n,): (i64,) = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(now)
            .fetch_one(pool)
            .await?);
        Ok(n)
    }
}
