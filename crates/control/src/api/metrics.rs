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
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::error::ApiError;
use crate::time::now_unix;

const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// The path relays sync from (counted in `cloudproxy_control_relay_syncs_total`).
const SYNC_ROUTE: &str = "/v1/sync/apps";

/// Latency buckets, seconds: from a cached read (~1 ms) to a request stuck behind the
/// database's lock wait (5 s).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// The control plane's metrics; one per [`AppState`].
pub(crate) struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    syncs: Counter,
    leases: Gauge,
    pool: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
}

impl ApiMetrics {
    pub(crate) fn new() -> ApiMetrics {
        let mut registry = Registry::with_prefix("cloudproxy_control");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status",
            latency.clone(),
        );
        let syncs = Counter::default();
        registry.register(
            "relay_syncs",
            "Relay syncs served (GET /v1/sync/apps answered 200)",
            syncs.clone(),
        );
        let leases = Gauge::default();
        registry.register(
            "leases",
            "Admission leases live now (Force-mode proxy users across every relay)",
            leases.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections open, by state (idle, in_use)",
            pool.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "The most database connections the pool opens",
            pool_max.clone(),
        );
        ApiMetrics {
            registry,
            requests,
            latency,
            syncs,
            leases,
            pool,
            pool_max,
        }
    }

    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
        if route == SYNC_ROUTE && status == 200 {
            self.syncs.inc();
        }
    }
}

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
    state.inner.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub(crate) async fn serve(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = &state.inner.metrics;
    m.leases
        .set(state.store().live_lease_count(now_unix()).await?);
    let pool = state.store().pool_stats();
    m.pool
        .get_or_create(&PoolLabels { state: "idle" })
        .set(i64::from(pool.idle));
    m.pool
        .get_or_create(&PoolLabels { state: "in_use" })
        .set(i64::from(pool.open.saturating_sub(pool.idle)));
    m.pool_max.set(i64::from(pool.max));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], out).into_response())
}
