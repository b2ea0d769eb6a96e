//! Enablement requests in the database. Approval reserves the request's estimated bandwidth
//! against its region's static-pool capacity in one transaction that holds the region's lock
//! (see [`crate::store`]), so concurrent approvals never reserve more than there is.

use super::{found, parse_wire, random_hex, with_pool, with_tx, Store};
use crate::capacity::{self, Decision, RegionLoad};
use crate::enablement::{EnablementInput, EnablementRequest, Step, SyncEnablement};
use crate::error::StoreError;
use crate::model::{Mode, Region, RequestState, Wire};

#[derive(sqlx::FromRow)]
struct RequestRow {
    id: String,
    app_id: String,
    region: String,
    sdk: String,
    use_case: String,
    max_concurrent_channels: i64,
    max_users_per_channel: i64,
    max_proxy_users_per_channel: i64,
    quality: String,
    mode: String,
    state: String,
    reason: Option<String>,
    estimated_kbps: i64,
    reserved_kbps: i64,
    created_at: i64,
    updated_at: i64,
    activates_at: Option<i64>,
}

impl TryFrom<RequestRow> for EnablementRequest {
    type Error = StoreError;

    fn try_from(r: RequestRow) -> Result<Self, StoreError> {
        let count = |what: &str, v: i64| {
            u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v}")))
        };
        Ok(EnablementRequest {
            region: parse_wire("region", &r.region)?,
            sdk: parse_wire("sdk", &r.sdk)?,
            quality: parse_wire("quality", &r.quality)?,
            mode: parse_wire("mode", &r.mode)?,
            state: parse_wire("state", &r.state)?,
            max_concurrent_channels: count("channels", r.max_concurrent_channels)?,
            max_users_per_channel: count("users", r.max_users_per_channel)?,
            max_proxy_users_per_channel: count("proxy users", r.max_proxy_users_per_channel)?,
            estimated_kbps: r.estimated_kbps.max(0) as u64,
            reserved_kbps: r.reserved_kbps.max(0) as u64,
            id: r.id,
            app_id: r.app_id,
            use_case: r.use_case,
            reason: r.reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
            activates_at: r.activates_at,
        })
    }
}

/// The request columns, then `$tail` (a literal): one SELECT text per use, all `'static`.
macro_rules! select_requests {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, r.app_id, r.region, r.sdk, r.use_case, r.max_concurrent_channels, ",
            "r.max_users_per_channel, r.max_proxy_users_per_channel, r.quality, r.mode, r.state, ",
            "r.reason, r.estimated_kbps, r.reserved_kbps, r.created_at, r.updated_at, r.activates_at ",
            "FROM enablement_requests r JOIN apps a ON a.id = r.app_id ",
            $tail
        )
    };
}

const BY_ID: &str = select_requests!("WHERE r.id = $1 AND ($2 IS NULL OR a.owner_id = $2)");
const BY_ID_FOR_UPDATE: &str =
    select_requests!("WHERE r.id = $1 AND ($2 IS NULL OR a.owner_id = $2) FOR UPDATE OF r");
const LIST: &str = select_requests!(
    "WHERE ($1 IS NULL OR a.owner_id = $1) AND ($2 IS NULL OR r.app_id = $2) ORDER BY r.created_at, r.id"
);

/// Reads one request (scoped to an owner when given), locking its row on PostgreSQL.
macro_rules! fetch_request {
    ($tx:expr, $pg:expr, $id:expr, $owner:expr) => {{
        let row: Option<RequestRow> = sqlx::query_as(if $pg { BY_ID_FOR_UPDATE } else { BY_ID })
            .bind($id)
            .bind($owner)
            .fetch_optional(&mut *$tx)
            .await?;
        EnablementRequest::try_from(found(row, "request", $id)?)?
    }};
}

/// Locks a region (PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serializes writers) and
/// reads its static-pool capacity and reservations.
macro_rules! region_load {
    ($tx:expr, $pg:expr, $region:expr) => {{
        let region: Region = $region;
        if $pg {
            sqlx::query("SELECT code FROM regions WHERE code = $1 FOR UPDATE")
                .bind(region.as_str())
                .execute(&mut *$tx)
                .await?;
        }
        // Summed here with saturating arithmetic, not by SQL `SUM`, which fails past i64 on
        // both backends (see `crate::limits`). Approvals are rare; the rows are few.
        let capacity: Vec<(i64,)> =
            sqlx::query_as("SELECT capacity_kbps FROM edges WHERE region = $1 AND pool = 'static'")
                .bind(region.as_str())
                .fetch_all(&mut *$tx)
                .await?;
        let reserved: Vec<(i64,)> = sqlx::query_as(
            "SELECT reserved_kbps FROM enablement_requests \
             WHERE region = $1 AND state IN ('approved', 'active', 'suspended')",
        )
        .bind(region.as_str())
        .fetch_all(&mut *$tx)
        .await?;
        RegionLoad {
            capacity_kbps: $crate::capacity::saturating_sum(capacity.iter().map(|r| r.0)),
            reserved_kbps: $crate::capacity::saturating_sum(reserved.iter().map(|r| r.0)),
        }
    }};
}

/// Writes a request's lifecycle columns: `$state` with its `$reason`, the bandwidth it holds
/// (`$reserved_kbps`) and when it activates (`$activates_at`), as of `$now`.
macro_rules! write_state {
    ($tx:expr, $id:expr, $state:expr, $reason:expr, $reserved_kbps:expr, $activates_at:expr, $now:expr) => {
        sqlx::query(
            "UPDATE enablement_requests SET state = $2, reason = $3, reserved_kbps = $4, \
             updated_at = $5, activates_at = $6 WHERE id = $1",
        )
        .bind($id)
        .bind(RequestState::as_str($state))
        .bind($reason)
        .bind(i64::try_from($reserved_kbps).unwrap_or(i64::MAX))
        .bind($now)
        .bind($activates_at)
        .execute(&mut *$tx)
        .await?
    };
}

/// A conflict unless `req` is still submitted: only those are approved or rejected.
fn check_submitted(req: &EnablementRequest, decision: &str) -> Result<(), StoreError> {
    if req.state == RequestState::Submitted {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "request '{}' is {}; only a submitted request can be {decision}",
        req.id, req.state
    )))
}

impl Store {
    /// Files a form for an app `owner` may see. The caller has validated it.
    pub async fn create_request(
        &self,
        app_id: &str,
        owner: Option<&str>,
        input: &EnablementInput,
        now: i64,
    ) -> Result<EnablementRequest, StoreError> {
        let id = format!("r{}", random_hex(8));
        let estimate = crate::enablement::estimate_kbps(input);
        with_tx!(self, |tx, pg| {
            let app: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM apps WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)",
            )
            .bind(app_id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
            found(app, "app", app_id)?;
            sqlx::query(
                "INSERT INTO enablement_requests (id, app_id, region, sdk, use_case, \
                 max_concurrent_channels, max_users_per_channel, max_proxy_users_per_channel, \
                 quality, mode, state, reason, estimated_kbps, reserved_kbps, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'submitted', NULL, $11, 0, $12, $12)",
            )
            .bind(&id)
            .bind(app_id)
            .bind(input.region.as_str())
            .bind(input.sdk.as_str())
            .bind(input.use_case.trim())
            .bind(i64::from(input.max_concurrent_channels))
            .bind(i64::from(input.max_users_per_channel))
            .bind(i64::from(input.max_proxy_users_per_channel))
            .bind(input.quality.as_str())
            .bind(input.mode.as_str())
            .bind(i64::try_from(estimate).unwrap_or(i64::MAX))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        self.get_request(&id, None).await
    }

    /// One enablement request, if `scope` (an owner, or `None` for the operator) may see it.
    pub async fn get_request(
        &self,
        id: &str,
        owner: Option<&str>,
    ) -> Result<EnablementRequest, StoreError> {
        let row: Option<RequestRow> = with_pool!(self, |pool| sqlx::query_as(BY_ID)
            .bind(id)
            .bind(owner)
            .fetch_optional(pool)
            .await?);
        found(row, "request", id)?.try_into()
    }

    /// Requests `owner` may see, optionally of one app, oldest first.
    pub async fn list_requests(
        &self,
        owner: Option<&str>,
        app_id: Option<&str>,
    ) -> Result<Vec<EnablementRequest>, StoreError> {
        let rows: Vec<RequestRow> = with_pool!(self, |pool| sqlx::query_as(LIST)
            .bind(owner)
            .bind(app_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Approves a submitted request if its estimate fits into the region's unreserved
    /// static-pool capacity, reserving it; otherwise rejects it with the reason.
    /// Approves a submitted request when its bandwidth fits (else rejects it with the reason).
    /// An approved request is active at once, or from `effective_at` when that is later than
    /// `now` (it waits in `approved` until [`Store::activate_due`] runs at or after it).
    pub async fn approve_request(
        &self,
        id: &str,
        effective_at: Option<i64>,
        now: i64,
    ) -> Result<EnablementRequest, StoreError> {
        let later = effective_at.filter(|&t| t > now);
        with_tx!(self, |tx, pg| {
            let req = fetch_request!(tx, pg, id, None::<&str>);
            check_submitted(&req, "approved")?;
            let load = region_load!(tx, pg, req.region);
            let (state, reason, reserved, activates_at) =
                match capacity::decide(req.region, req.estimated_kbps, load) {
                    Decision::Reserve(kbps) if later.is_some() => {
                        (RequestState::Approved, None, kbps, later)
                    }
                    Decision::Reserve(kbps) => (RequestState::Active, None, kbps, None),
                    Decision::Reject(reason) => (RequestState::Rejected, Some(reason), 0, None),
                };
            write_state!(tx, id, state, reason, reserved, activates_at, now);
        });
        self.get_request(id, None).await
    }

    /// Activates every approved request whose effective date has come; returns how many.
    /// Idempotent, so every control-plane process may run it (before a relay sync and before
    /// requests are shown).
    pub async fn activate_due(&self, now: i64) -> Result<u64, StoreError> {
        let q = "UPDATE enablement_requests SET state = 'active', activates_at = NULL, \
                 updated_at = $1 WHERE state = 'approved' AND activates_at IS NOT NULL \
                 AND activates_at <= $1";
        Ok(with_pool!(self, |pool| sqlx::query(q)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Rejects a submitted request.
    pub async fn reject_request(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<EnablementRequest, StoreError> {
        with_tx!(self, |tx, pg| {
            let req = fetch_request!(tx, pg, id, None::<&str>);
            check_submitted(&req, "rejected")?;
            // A submitted request holds nothing and has no activation date.
            let rejected = RequestState::Rejected;
            write_state!(tx, id, rejected, Some(reason), 0_u64, None::<i64>, now);
        });
        self.get_request(id, None).await
    }

    /// Moves a request one step along its lifecycle; revoking releases its reservation.
    pub async fn step_request(
        &self,
        id: &str,
        owner: Option<&str>,
        step: Step,
        now: i64,
    ) -> Result<EnablementRequest, StoreError> {
        with_tx!(self, |tx, pg| {
            let req = fetch_request!(tx, pg, id, owner);
            let Some(next) = step.next(req.state) else {
                return Err(StoreError::Conflict(format!(
                    "request '{id}' is {}; it cannot {}",
                    req.state,
                    step.as_str()
                )));
            };
            let reserved = if next.reserves() {
                req.reserved_kbps
            } else {
                0
            };
            write_state!(tx, id, next, req.reason, reserved, None::<i64>, now);
        });
        self.get_request(id, None).await
    }

    /// Whether `app_id` (active) has an active enablement for `mode` in `region`.
    pub async fn is_enabled(
        &self,
        app_id: &str,
        region: Region,
        mode: Mode,
    ) -> Result<bool, StoreError> {
        let q = "SELECT COUNT(*) FROM enablement_requests r JOIN apps a ON a.id = r.app_id \
                 WHERE r.app_id = $1 AND r.region = $2 AND r.mode = $3 \
                 AND r.state = 'active' AND a.status = 'active'";
        let (n,): (i64,) = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(app_id)
            .bind(region.as_str())
            .bind(mode.as_str())
            .fetch_one(pool)
            .await?);
        Ok(n > 0)
    }

    /// Active enablements of active apps, with their app id.
    pub(crate) async fn active_enablements(
        &self,
    ) -> Result<Vec<(String, SyncEnablement)>, StoreError> {
        let q = "SELECT r.app_id, r.region, r.mode, r.max_concurrent_channels, \
                 r.max_proxy_users_per_channel, r.quality FROM enablement_requests r \
                 JOIN apps a ON a.id = r.app_id \
                 WHERE r.state = 'active' AND a.status = 'active' ORDER BY r.app_id, r.id";
        let rows: Vec<(String, String, String, i64, i64, String)> =
            with_pool!(self, |pool| sqlx::query_as(q).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(app, region, mode, channels, proxy, quality)| {
                Ok((
                    app,
                    SyncEnablement {
                        region: parse_wire("region", &region)?,
                        mode: parse_wire("mode", &mode)?,
                        max_concurrent_channels: channels.clamp(0, u32::MAX.into()) as u32,
                        max_proxy_users_per_channel: proxy.clamp(0, u32::MAX.into()) as u32,
                        quality: parse_wire("quality", &quality)?,
                    },
                ))
            })
            .collect()
    }
}
