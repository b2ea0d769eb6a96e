//! Owners, applications, secret rotation and relay sync.
//!
//! An app owner's key reaches only its own apps: any other app id answers 404, exactly as an
//! id that does not exist, so a key cannot even learn which ids are taken.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::caller::{Caller, Operator, RelayCaller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_text, Api, JsonBody, OptionalJsonBody, Params, PathId};
use crate::limits;
use crate::model::AppStatus;
use crate::state::AppState;
use crate::store::{App, CreatedApp, Owner};
use crate::time::now_unix;
use cloudproxy_api::{
    AppInput, CreatedOwner, OwnerInput, OwnerKey, RotateInput, Rotated, SyncResponse,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/owners", post(create_owner).get(list_owners))
        .route("/v1/owners/{id}", get(get_owner))
        .route("/v1/owners/{id}/keys", post(add_owner_key))
        .route("/v1/apps", post(create_app).get(list_apps))
        .route("/v1/apps/{id}", get(get_app).delete(delete_app))
        .route("/v1/apps/{id}/suspend", post(suspend_app))
        .route("/v1/apps/{id}/resume", post(resume_app))
        .route("/v1/apps/{id}/rotate", post(rotate_secret))
        .route("/v1/sync/apps", get(sync_apps))
}

#[utoipa::path(post, path = "/v1/owners", tag = "owners", request_body = OwnerInput,
    responses((status = 201, body = CreatedOwner)))]
pub(super) async fn create_owner(
    api: Api<Operator>,
    JsonBody(input): JsonBody<OwnerInput>,
) -> Result<(StatusCode, Json<CreatedOwner>), ApiError> {
    let name = check_text("name", &input.name, limits::MAX_NAME_CHARS)?;
    let (owner, api_key) = api.store().create_owner(&name, now_unix()).await?;
    Ok((StatusCode::CREATED, Json(CreatedOwner { owner, api_key })))
}

#[utoipa::path(get, path = "/v1/owners", tag = "owners",
    responses((status = 200, body = Vec<Owner>)))]
pub(super) async fn list_owners(api: Api<Operator>) -> ApiResult<Vec<Owner>> {
    Ok(Json(api.store().list_owners().await?))
}

#[utoipa::path(get, path = "/v1/owners/{id}", tag = "owners",
    responses((status = 200, body = Owner)))]
pub(super) async fn get_owner(api: Api<Operator>, PathId(id): PathId) -> ApiResult<Owner> {
    Ok(Json(api.store().get_owner(&id).await?))
}

#[utoipa::path(post, path = "/v1/owners/{id}/keys", tag = "owners",
    responses((status = 201, body = OwnerKey)))]
pub(super) async fn add_owner_key(
    api: Api<Operator>,
    PathId(id): PathId,
) -> Result<(StatusCode, Json<OwnerKey>), ApiError> {
    let api_key = api.store().add_owner_key(&id, now_unix()).await?;
    Ok((
        StatusCode::CREATED,
        Json(OwnerKey {
            owner_id: id,
            api_key,
        }),
    ))
}

#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = AppInput,
    responses((status = 201, body = CreatedApp)))]
pub(super) async fn create_app(
    api: Api,
    JsonBody(input): JsonBody<AppInput>,
) -> Result<(StatusCode, Json<CreatedApp>), ApiError> {
    let name = check_text("name", &input.name, limits::MAX_NAME_CHARS)?;
    let owner = match (&api.caller, input.owner_id.as_deref()) {
        (Caller::Operator, owner) => owner,
        (Caller::Owner(me), None) => Some(me.as_str()),
        (Caller::Owner(me), Some(other)) if other == me => Some(me.as_str()),
        (Caller::Owner(_), Some(_)) => {
            return Err(ApiError::forbidden(
                "app owners create apps for themselves only",
            ))
        }
    };
    let created = api.store().create_app(owner, &name, now_unix()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/apps", tag = "apps",
    responses((status = 200, body = Vec<App>)))]
pub(super) async fn list_apps(api: Api) -> ApiResult<Vec<App>> {
    Ok(Json(api.store().list_apps(api.scope()).await?))
}

#[utoipa::path(get, path = "/v1/apps/{id}", tag = "apps",
    responses((status = 200, body = App)))]
pub(super) async fn get_app(api: Api, PathId(id): PathId) -> ApiResult<App> {
    Ok(Json(api.store().get_app(&id, api.scope()).await?))
}

#[utoipa::path(delete, path = "/v1/apps/{id}", tag = "apps",
    responses((status = 204)))]
pub(super) async fn delete_app(api: Api, PathId(id): PathId) -> Result<StatusCode, ApiError> {
    api.store().delete_app(&id, api.scope()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_status(state: &AppState, id: &str, status: AppStatus) -> ApiResult<App> {
    state.store().set_app_status(id, status, now_unix()).await?;
    Ok(Json(state.store().get_app(id, None).await?))
}

#[utoipa::path(post, path = "/v1/apps/{id}/suspend", tag = "apps",
    responses((status = 200, body = App)))]
pub(super) async fn suspend_app(api: Api<Operator>, PathId(id): PathId) -> ApiResult<App> {
    set_status(&api.state, &id, AppStatus::Suspended).await
}

#[utoipa::path(post, path = "/v1/apps/{id}/resume", tag = "apps",
    responses((status = 200, body = App)))]
pub(super) async fn resume_app(api: Api<Operator>, PathId(id): PathId) -> ApiResult<App> {
    set_status(&api.state, &id, AppStatus::Active).await
}

#[utoipa::path(post, path = "/v1/apps/{id}/rotate", tag = "apps", request_body = RotateInput,
    responses((status = 200, body = Rotated)))]
pub(super) async fn rotate_secret(
    api: Api,
    PathId(id): PathId,
    // The body is optional: an empty one means the default grace period.
    OptionalJsonBody(input): OptionalJsonBody<RotateInput>,
) -> ApiResult<Rotated> {
    let grace = input.grace_seconds.unwrap_or(limits::DEFAULT_GRACE_SECS);
    limits::check("grace_seconds", grace, 0, limits::MAX_GRACE_SECS)?;
    let (credentials, retiring) = api
        .store()
        .rotate_secret(&id, api.scope(), grace, now_unix())
        .await?;
    Ok(Json(Rotated {
        credentials,
        retiring,
    }))
}

#[utoipa::path(get, path = "/v1/sync/apps", tag = "sync",
    params(("edge" = Option<String>, Query, description = "the calling relay's edge id, for the console's sync age")),
    responses((status = 200, body = SyncResponse)))]
pub(super) async fn sync_apps(api: Api<RelayCaller>, params: Params) -> ApiResult<SyncResponse> {
    let now = now_unix();
    // Approvals whose effective date has come reach the relays in this sync.
    api.store().activate_due(now).await?;
    if let Some(edge) = params.0.get("edge") {
        if super::edges::check_edge_id(edge).is_ok() {
            api.edge_synced(edge, now);
        }
    }
    Ok(Json(SyncResponse {
        generated_at: now,
        apps: api.store().sync_apps(now).await?,
    }))
}
