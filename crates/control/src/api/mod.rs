//! The HTTP API (`/v1/…`): the router and the OpenAPI document. Handlers live in `apps`,
//! `requests`, `edges`, `relay` and `ice_servers`; the state they share is [`crate::state`], the
//! extractors (the state with the caller in the endpoint's role, `Api<Role>`; JSON bodies; path
//! ids) are [`crate::extract`].

mod apps;
mod edges;
mod ice_servers;
mod metrics;
mod openapi;
mod relay;
mod requests;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::ApiError;

pub use crate::caller::{Caller, Operator, RelayCaller};
pub use crate::extract::{parse_json, JsonBody, OptionalJsonBody, Params, PathId};
pub use crate::state::{AppState, Settings};
pub use ice_servers::{IceServer, IceServersRequest, IceServersResponse, ProxyMode};
pub use openapi::ApiDoc;

/// The router of the whole API, for a server or in-process tests.
pub async fn router(state: AppState) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::serve))
        .merge(apps::routes())
        .merge(requests::routes())
        .merge(edges::routes())
        .merge(relay::routes())
        .merge(ice_servers::routes())
        .merge(crate::console::routes())
        .merge(crate::web::library_routes())
        .fallback(|| async { ApiError::not_found("no such path") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Outermost, so it sees every route and the fallbacks (see `metrics`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok", "backend": state.store().backend() }))
}
