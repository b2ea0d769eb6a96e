//! Enablement requests: filing the form, approval with capacity reservation, and the
//! lifecycle after it. Owners file and activate requests for their own apps; the operator
//! approves, rejects, suspends, resumes and revokes.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::caller::Operator;
use crate::enablement::{EnablementInput, EnablementRequest, Step};
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_fields, check_text, Api, JsonBody, OptionalJsonBody, PathId};
use crate::limits;
use crate::model::Wire;
use crate::state::AppState;
use crate::time::now_unix;
use cloudproxy_api::{ApproveInput, RejectInput};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/apps/{id}/requests",
            post(create_request).get(list_app_requests),
        )
        .route("/v1/requests", get(list_requests))
        .route("/v1/requests/{id}", get(get_request))
        .route("/v1/requests/{id}/approve", post(approve_request))
        .route("/v1/requests/{id}/reject", post(reject_request))
        .route("/v1/requests/{id}/{step}", post(step_request))
}

#[utoipa::path(post, path = "/v1/apps/{id}/requests", tag = "requests",
    request_body = EnablementInput,
    responses((status = 201, body = EnablementRequest)))]
pub(super) async fn create_request(
    api: Api,
    PathId(app_id): PathId,
    JsonBody(input): JsonBody<EnablementInput>,
) -> Result<(StatusCode, Json<EnablementRequest>), ApiError> {
    check_fields(input.validate())?;
    let req = api
        .store()
        .create_request(&app_id, api.scope(), &input, now_unix())
        .await?;
    Ok((StatusCode::CREATED, Json(req)))
}

#[utoipa::path(get, path = "/v1/apps/{id}/requests", tag = "requests",
    responses((status = 200, body = Vec<EnablementRequest>)))]
pub(super) async fn list_app_requests(
    api: Api,
    PathId(app_id): PathId,
) -> ApiResult<Vec<EnablementRequest>> {
    // 404 for an app the caller cannot see, rather than an empty list.
    api.store().get_app(&app_id, api.scope()).await?;
    api.store().activate_due(now_unix()).await?;
    Ok(Json(
        api.store()
            .list_requests(api.scope(), Some(&app_id))
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/requests", tag = "requests",
    responses((status = 200, body = Vec<EnablementRequest>)))]
pub(super) async fn list_requests(api: Api) -> ApiResult<Vec<EnablementRequest>> {
    api.store().activate_due(now_unix()).await?;
    Ok(Json(api.store().list_requests(api.scope(), None).await?))
}

#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests",
    responses((status = 200, body = EnablementRequest)))]
pub(super) async fn get_request(api: Api, PathId(id): PathId) -> ApiResult<EnablementRequest> {
    api.store().activate_due(now_unix()).await?;
    Ok(Json(api.store().get_request(&id, api.scope()).await?))
}

/// Approves a submitted request when its estimated bandwidth fits into the region's
/// unreserved static-pool capacity, and activates it: at once, or at `effective_at` (until
/// then it is `approved` with `activates_at`). Otherwise the request is rejected with the
/// reason. Both outcomes answer 200 with the request: read its `state`.
#[utoipa::path(post, path = "/v1/requests/{id}/approve", tag = "requests",
    request_body = ApproveInput,
    responses((status = 200, body = EnablementRequest)))]
pub(super) async fn approve_request(
    api: Api<Operator>,
    PathId(id): PathId,
    // The body is optional: an empty one approves as of now.
    OptionalJsonBody(input): OptionalJsonBody<ApproveInput>,
) -> ApiResult<EnablementRequest> {
    check_fields(input.validate())?;
    Ok(Json(
        api.store()
            .approve_request(&id, input.effective_at, now_unix())
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/requests/{id}/reject", tag = "requests",
    request_body = RejectInput,
    responses((status = 200, body = EnablementRequest)))]
pub(super) async fn reject_request(
    api: Api<Operator>,
    PathId(id): PathId,
    JsonBody(input): JsonBody<RejectInput>,
) -> ApiResult<EnablementRequest> {
    let reason = check_text("reason", &input.reason, limits::MAX_REASON_CHARS)?;
    Ok(Json(
        api.store().reject_request(&id, &reason, now_unix()).await?,
    ))
}

/// One lifecycle step after approval, named by the path's last segment:
/// - `activate`: approved → active (the owner or the operator);
/// - `suspend`: active → suspended (operator); the reservation is kept;
/// - `resume`: suspended → active (operator);
/// - `revoke`: approved | active | suspended → revoked (operator); the reservation is released.
#[utoipa::path(post, path = "/v1/requests/{id}/{step}", tag = "requests",
    params(
        ("id" = String, Path, description = "the request's id"),
        ("step" = String, Path, description = "activate, suspend, resume or revoke"),
    ),
    responses((status = 200, body = EnablementRequest)))]
pub(super) async fn step_request(
    api: Api,
    PathId(id): PathId,
    PathStep(step): PathStep,
) -> ApiResult<EnablementRequest> {
    if step.needs_operator() {
        api.caller.require_operator()?;
    }
    Ok(Json(
        api.store()
            .step_request(&id, api.scope(), step, now_unix())
            .await?,
    ))
}

/// The `{step}` of `/v1/requests/{id}/{step}`; any other word is a path that does not exist.
pub(super) struct PathStep(Step);

impl<S: Send + Sync> FromRequestParts<S> for PathStep {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let no_such_path = || ApiError::not_found("no such path");
        let Path((_, step)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| no_such_path())?;
        Step::parse(&step).map(PathStep).ok_or_else(no_such_path)
    }
}
