//! What relays call (with the relay key or the operator's): admission leases, usage reports
//! and heartbeats; what clients call: the Auto-mode proxy list; and what owners read: usage.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::edges::check_edge_id;
use crate::caller::RelayCaller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{check_fields, Api, JsonBody, Params, PathId};
use crate::model::{Pool, Region, Wire};
use crate::state::AppState;
use crate::store::{Heartbeat, Lease, LeaseInput, UsageReport};
use crate::time::{day, is_day, now_unix};
use cloudproxy_api::{Changed, Proxy, ProxyList, Release, Renewal, Usage, UsageAck};

/// How many relays `GET /v1/proxies` returns: enough to race and fail over, few enough that
/// the dynamic pool is never listed whole.
const PROXIES_PER_ANSWER: i64 = 3;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/leases", post(acquire_lease))
        .route("/v1/leases/renew", post(renew_leases))
        .route("/v1/leases/release", post(release_leases))
        .route("/v1/usage", post(report_usage))
        .route("/v1/edges/{id}/heartbeat", post(heartbeat))
        .route("/v1/proxies", get(proxies))
        .route("/v1/apps/{id}/usage", get(app_usage))
}

/// Grants a lease for one Force-mode allocation, or refuses it: 403 when the app is not
/// active for that mode in that region, 409 `quota_exceeded` when the channel already has
/// its maximum of proxy users or the app its maximum of channels.
#[utoipa::path(post, path = "/v1/leases", tag = "relays", request_body = LeaseInput,
    responses((status = 201, body = Lease)))]
pub(super) async fn acquire_lease(
    api: Api<RelayCaller>,
    JsonBody(input): JsonBody<LeaseInput>,
) -> Result<(StatusCode, Json<Lease>), ApiError> {
    check_fields(input.validate(""))?;
    let ttl = api.settings().lease_ttl;
    let lease = api.store().acquire_lease(&input, ttl, now_unix()).await?;
    Ok((StatusCode::CREATED, Json(lease)))
}

/// Extends the leases of a relay's live allocations (re-creating expired ones, without a
/// quota check: the allocations exist).
#[utoipa::path(post, path = "/v1/leases/renew", tag = "relays", request_body = Renewal,
    responses((status = 200, body = Changed)))]
pub(super) async fn renew_leases(
    api: Api<RelayCaller>,
    JsonBody(input): JsonBody<Renewal>,
) -> ApiResult<Changed> {
    let errors: Vec<FieldError> = input
        .leases
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.validate(&format!("leases[{i}].")))
        .collect();
    check_fields(errors)?;
    let ttl = api.settings().lease_ttl;
    let changed = api
        .store()
        .renew_leases(&input.leases, ttl, now_unix())
        .await?;
    Ok(Json(Changed {
        changed,
        ttl_seconds: ttl,
    }))
}

/// Ends leases of allocations that ended.
#[utoipa::path(post, path = "/v1/leases/release", tag = "relays", request_body = Release,
    responses((status = 200, body = Changed)))]
pub(super) async fn release_leases(
    api: Api<RelayCaller>,
    JsonBody(input): JsonBody<Release>,
) -> ApiResult<Changed> {
    let changed = api
        .store()
        .release_leases(&input.relay_id, &input.lease_ids)
        .await?;
    Ok(Json(Changed {
        changed,
        ttl_seconds: api.settings().lease_ttl,
    }))
}

/// Applies a relay's usage report once (by `report_id`).
#[utoipa::path(post, path = "/v1/usage", tag = "relays", request_body = UsageReport,
    responses((status = 200, body = UsageAck)))]
pub(super) async fn report_usage(
    api: Api<RelayCaller>,
    JsonBody(report): JsonBody<UsageReport>,
) -> ApiResult<UsageAck> {
    check_fields(report.validate())?;
    let applied = api.store().apply_usage(&report, now_unix()).await?;
    Ok(Json(UsageAck {
        report_id: report.report_id,
        applied,
    }))
}

/// Records a relay's heartbeat and load.
#[utoipa::path(post, path = "/v1/edges/{id}/heartbeat", tag = "relays", request_body = Heartbeat,
    responses((status = 204)))]
pub(super) async fn heartbeat(
    api: Api<RelayCaller>,
    PathId(id): PathId,
    JsonBody(hb): JsonBody<Heartbeat>,
) -> Result<StatusCode, ApiError> {
    check_edge_id(&id)?;
    check_fields(hb.validate())?;
    api.store().heartbeat(&id, &hb, now_unix()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The Auto-mode proxy list: up to three live dynamic-pool relays of the region, least
/// loaded first. Public, like the allow-list; a relay whose heartbeat is older than the
/// heartbeat timeout is never listed, and the pool is never listed whole.
#[utoipa::path(get, path = "/v1/proxies", tag = "relays",
    params(("region" = String, Query, description = "the client's region")),
    responses((status = 200, body = ProxyList)),
    security(()))]
pub(super) async fn proxies(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<ProxyList>, ApiError> {
    let Some(region) = params.get("region") else {
        return Err(ApiError::field("region", "required, e.g. ?region=japan"));
    };
    let region = Region::parse(region).ok_or_else(|| {
        let known: Vec<&str> = Region::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::field(
            "region",
            format!(
                "unknown region '{region}'; regions are {}",
                known.join(", ")
            ),
        )
    })?;
    let since = now_unix() - state.settings().heartbeat_timeout;
    let edges = state
        .store()
        .live_edges(region, Pool::Dynamic, since, PROXIES_PER_ANSWER)
        .await?;
    Ok(Json(ProxyList {
        region,
        proxies: edges
            .into_iter()
            .map(|e| Proxy {
                load: e.load_kbps as f64 / e.capacity_kbps.max(1) as f64,
                id: e.id,
                listeners: e.listeners,
            })
            .collect(),
    }))
}

/// An app's usage per day, mode and tier: allocation minutes, bytes and peak concurrency.
/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: the last 31 days), `?format=csv`.
#[utoipa::path(get, path = "/v1/apps/{id}/usage", tag = "apps",
    params(
        ("from" = Option<String>, Query, description = "first day, YYYY-MM-DD"),
        ("to" = Option<String>, Query, description = "last day, YYYY-MM-DD"),
        ("format" = Option<String>, Query, description = "json (default) or csv"),
    ),
    responses((status = 200, body = Usage)))]
pub(super) async fn app_usage(
    api: Api,
    PathId(id): PathId,
    Params(params): Params,
) -> Result<Response, ApiError> {
    // Another owner's app is 404, as everywhere.
    api.store().get_app(&id, api.scope()).await?;
    let now = now_unix();
    let mut errors = Vec::new();
    let mut day_param = |name: &str, default: String| match params.get(name) {
        Some(d) if is_day(d) => d.clone(),
        Some(_) => {
            errors.push(FieldError {
                field: name.into(),
                message: "must be a date, YYYY-MM-DD".into(),
            });
            default
        }
        None => default,
    };
    let from = day_param("from", day(now - 30 * 86_400));
    let to = day_param("to", day(now));
    let csv = match params.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            errors.push(FieldError {
                field: "format".into(),
                message: format!("unknown format '{other}'; use json or csv"),
            });
            false
        }
    };
    check_fields(errors)?;
    let days = api.store().usage(&id, &from, &to).await?;
    if csv {
        let mut out = String::from("day,mode,quality,minutes,bytes,peak_concurrency\n");
        for d in &days {
            out.push_str(&format!(
                "{},{},{},{:.2},{},{}\n",
                d.day,
                d.mode.as_str(),
                d.quality.map_or("", |q| q.as_str()),
                d.minutes,
                d.bytes,
                d.peak_concurrency
            ));
        }
        return Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    Ok(Json(Usage {
        app_id: id,
        from,
        to,
        days,
    })
    .into_response())
}
