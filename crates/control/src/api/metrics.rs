//! `GET /metrics`: the control plane's Prometheus (OpenMetrics text) endpoint.
//!
//! Every request is counted and timed by a layer around the whole router, labelled with the
//! route *template* that matched (`/v1/apps/{id}`, from axum's `MatchedPath`), never the raw
//! path: ids in paths would make one series per app, request and edge, and a scanner's
//! made-up paths one per guess. Requests no route matched are labelled `unmatched`.
//!
//! Relay syncs are counted on their own, and the live leases and the database pool are read
//! when the endpoint is scraped. The series hold no ids, names or keys: aggregate counts only,
//! so the endpoint needs no key, like `/healthz` (it is also reachable through a relay's TLS
//! port, as the rest of the API is).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;
use crate::time::now_unix;

const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// The layer: times the rest of the stack and records the answer under the matched route.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let response = next.run(req).await;
    state.metrics().record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub(crate) async fn serve(State(state): State<AppState>) -> Result<Response, ApiError> {
    let live_leases = state.store().live_lease_count(now_unix()).await?;
    let out = state
        .metrics()
        .render(live_leases, state.store().pool_stats());
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], out).into_response())
}
