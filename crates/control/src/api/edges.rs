//! Regions, relay registration and the allow-list table. The allow-list endpoints and the
//! HTML page are public (no key): firewall teams read them.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};

use crate::allowlist::render::{self, Format};
use crate::allowlist::AllowList;
use crate::caller::{Operator, RelayCaller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_fields, Api, JsonBody, Params, PathId};
use crate::limits;
use crate::model::{Region, Wire};
use crate::state::AppState;
use crate::store::{Edge, EdgeCidrs, EdgeCidrsInput, EdgeInput, EdgeUpdate, RegionSummary};
use crate::time::now_unix;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/regions", get(list_regions))
        .route("/v1/edges", get(list_edges))
        .route(
            "/v1/edges/{id}",
            put(put_edge).get(get_edge).delete(delete_edge),
        )
        .route(
            "/v1/edges/{id}/cidrs",
            put(put_edge_cidrs).get(get_edge_cidrs),
        )
        .route("/v1/allowlist", get(all_allowlists))
        .route("/v1/allowlist/{region}", get(region_allowlist))
        .route("/v1/allowlist/{region}/history", get(allowlist_history))
        // A console page: the console's security headers and language cookie.
        .route(
            "/allowlist",
            get(allowlist_page).layer(axum::middleware::from_fn(crate::console::headers)),
        )
}

/// A region in a path: an unknown one is an unknown id (404).
fn region_of(s: &str) -> Result<Region, ApiError> {
    Region::parse(s).ok_or_else(|| {
        let known: Vec<&str> = Region::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::not_found(format!(
            "region '{s}' not found; regions are {}",
            known.join(", ")
        ))
    })
}

/// Edge ids are what relays call themselves: 1 to 64 of `A-Z a-z 0-9 _ . -`.
pub(super) fn check_edge_id(id: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            "id",
            "must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

#[utoipa::path(get, path = "/v1/regions", tag = "regions",
    responses((status = 200, body = Vec<RegionSummary>)))]
pub(super) async fn list_regions(api: Api<Operator>) -> ApiResult<Vec<RegionSummary>> {
    Ok(Json(api.store().region_summaries().await?))
}

/// Registers or replaces a relay. Changes to static relays publish a new allow-list version.
/// With the relay key, every listener must be inside the CIDRs the operator gave the edge
/// (403 otherwise).
#[utoipa::path(put, path = "/v1/edges/{id}", tag = "edges", request_body = EdgeInput,
    responses((status = 200, body = EdgeUpdate)))]
pub(super) async fn put_edge(
    api: Api<RelayCaller>,
    PathId(id): PathId,
    JsonBody(input): JsonBody<EdgeInput>,
) -> ApiResult<EdgeUpdate> {
    check_edge_id(&id)?;
    check_fields(input.validate())?;
    Ok(Json(
        api.store()
            .put_edge(&id, &input, api.caller, now_unix())
            .await?,
    ))
}

/// Sets the CIDRs a relay key may publish this edge's addresses in (operator only; the edge
/// need not be registered yet). Empty: the relay key may not register it.
#[utoipa::path(put, path = "/v1/edges/{id}/cidrs", tag = "edges", request_body = EdgeCidrsInput,
    responses((status = 200, body = EdgeCidrs)))]
pub(super) async fn put_edge_cidrs(
    api: Api<Operator>,
    PathId(id): PathId,
    JsonBody(input): JsonBody<EdgeCidrsInput>,
) -> ApiResult<EdgeCidrs> {
    check_edge_id(&id)?;
    check_fields(input.validate())?;
    Ok(Json(
        api.store()
            .set_edge_cidrs(&id, &input.cidrs, now_unix())
            .await?,
    ))
}

/// The CIDRs the operator gave this edge (empty when none).
#[utoipa::path(get, path = "/v1/edges/{id}/cidrs", tag = "edges",
    responses((status = 200, body = EdgeCidrs)))]
pub(super) async fn get_edge_cidrs(api: Api<Operator>, PathId(id): PathId) -> ApiResult<EdgeCidrs> {
    check_edge_id(&id)?;
    Ok(Json(api.store().edge_cidrs(&id).await?))
}

#[utoipa::path(get, path = "/v1/edges", tag = "edges",
    params(("region" = Option<String>, Query, description = "only this region's relays")),
    responses((status = 200, body = Vec<Edge>)))]
pub(super) async fn list_edges(api: Api<Operator>, params: Params) -> ApiResult<Vec<Edge>> {
    let region = match params.0.get("region") {
        Some(r) => Some(
            Region::parse(r)
                .ok_or_else(|| ApiError::field("region", format!("unknown region '{r}'")))?,
        ),
        None => None,
    };
    Ok(Json(api.store().list_edges(region).await?))
}

#[utoipa::path(get, path = "/v1/edges/{id}", tag = "edges",
    responses((status = 200, body = Edge)))]
pub(super) async fn get_edge(api: Api<Operator>, PathId(id): PathId) -> ApiResult<Edge> {
    Ok(Json(api.store().get_edge(&id).await?))
}

/// Deregisters a relay; `effective_at` dates the allow-list change (default now).
#[utoipa::path(delete, path = "/v1/edges/{id}", tag = "edges",
    params(("effective_at" = Option<i64>, Query, description = "Unix seconds, 0 to 253402300799")),
    responses((status = 200, body = EdgeUpdate)))]
pub(super) async fn delete_edge(
    api: Api<Operator>,
    PathId(id): PathId,
    params: Params,
) -> ApiResult<EdgeUpdate> {
    let effective_at = params.int::<i64>("effective_at")?;
    if let Some(t) = effective_at {
        limits::check("effective_at", t, 0, limits::MAX_UNIX_SECONDS)?;
    }
    Ok(Json(
        api.store()
            .delete_edge(&id, effective_at, now_unix())
            .await?,
    ))
}

/// Every region's allow-list in effect now. Public.
#[utoipa::path(get, path = "/v1/allowlist", tag = "allowlist",
    responses((status = 200, body = Vec<AllowList>)),
    security(()))]
pub(super) async fn all_allowlists(
    State(state): State<AppState>,
) -> Result<Json<Vec<AllowList>>, ApiError> {
    Ok(Json(current_all(&state).await?))
}

async fn current_all(state: &AppState) -> Result<Vec<AllowList>, ApiError> {
    let now = now_unix();
    let mut lists = Vec::with_capacity(Region::ALL.len());
    for &region in Region::ALL {
        lists.push(state.store().current_allowlist(region, now).await?);
    }
    Ok(lists)
}

/// A region's allow-list in effect now (or `version`), as JSON, CSV, nftables or iptables.
/// Public.
#[utoipa::path(get, path = "/v1/allowlist/{region}", tag = "allowlist",
    params(
        ("region" = String, Path, description = "e.g. japan"),
        ("format" = Option<String>, Query, description = "json (default), csv, nftables, iptables"),
        ("version" = Option<u64>, Query, description = "a published version; default: the one in effect"),
    ),
    responses((status = 200, body = AllowList)),
    security(()))]
pub(super) async fn region_allowlist(
    State(state): State<AppState>,
    PathId(region): PathId,
    params: Params,
) -> Result<Response, ApiError> {
    let region = region_of(&region)?;
    let format = match params.0.get("format") {
        None => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::field(
                "format",
                format!("unknown format '{f}'; use json, csv, nftables or iptables"),
            )
        })?,
    };
    let list = match params.int::<u64>("version")? {
        Some(v) => state.store().allowlist_version(region, v).await?,
        None => state.store().current_allowlist(region, now_unix()).await?,
    };
    let text = match format {
        Format::Json => return Ok(Json(list).into_response()),
        Format::Csv => render::csv(&list),
        Format::Nftables => render::nftables(&list),
        Format::Iptables => render::iptables(&list),
    };
    Ok(([(CONTENT_TYPE, format.content_type())], text).into_response())
}

/// Every version of a region's allow-list, newest first, with changes and effective dates
/// (announced future versions included). Public.
#[utoipa::path(get, path = "/v1/allowlist/{region}/history", tag = "allowlist",
    responses((status = 200, body = Vec<AllowList>)),
    security(()))]
pub(super) async fn allowlist_history(
    State(state): State<AppState>,
    PathId(region): PathId,
) -> Result<Json<Vec<AllowList>>, ApiError> {
    let region = region_of(&region)?;
    Ok(Json(state.store().allowlist_history(region).await?))
}

/// The HTML page, in English or Japanese (`Accept-Language`, `?lang=en|ja`). Public.
#[utoipa::path(get, path = "/allowlist", tag = "allowlist",
    params(("lang" = Option<String>, Query, description = "en or ja")),
    responses((status = 200, content_type = "text/html", body = String)),
    security(()))]
pub(super) async fn allowlist_page(
    State(state): State<AppState>,
    ctx: crate::console::Ctx,
) -> Response {
    crate::console::allowlist_page(&state, &ctx).await
}
