//! The control plane's metrics registry: requests by route template and status, relay syncs,
//! live leases and the database pool. `api::metrics` serves it as `GET /metrics` and feeds it
//! from a layer around the router; the scheme (why route templates, why no ids) is written
//! there.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::PoolStats;

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

/// The control plane's metrics; one per [`crate::state::AppState`].
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

    pub(crate) fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
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

    /// The OpenMetrics text of every series, after setting the gauges read at scrape time:
    /// the live leases and the database pool.
    pub(crate) fn render(&self, live_leases: i64, pool: PoolStats) -> String {
        self.leases.set(live_leases);
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(i64::from(pool.idle));
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(i64::from(pool.open.saturating_sub(pool.idle)));
        self.pool_max.set(i64::from(pool.max));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
