//! The control plane's metrics registry: requests by route template and status, relay syncs,
//! live leases and the database pool. `api::metrics` serves it as `GET /metrics` and feeds it
//! from a layer around the router; the scheme (why route templates, why no ids) is written
//! there.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

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

/// Registers metrics and hands back each one's handle, so a metric is named once where it is
/// made; the registry keeps a clone, which shares the value.
struct Registrar<'r>(&'r mut Registry);

impl Registrar<'_> {
    /// A counter, gauge or family that starts at zero (a family: with no series); which one is
    /// inferred from the [`ApiMetrics`] field it ends up in.
    fn metric<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.register(name, help, M::default())
    }

    /// A family of latency histograms over [`BUCKETS`], one per request label set.
    fn latencies(&mut self, name: &str, help: &str) -> Family<RequestLabels, Histogram> {
        let family =
            Family::new_with_constructor((|| Histogram::new(BUCKETS)) as fn() -> Histogram);
        self.register(name, help, family)
    }

    /// Registers `metric` and returns it.
    fn register<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

impl ApiMetrics {
    pub(crate) fn new() -> ApiMetrics {
        let mut registry = Registry::with_prefix("cloudproxy_control");
        let mut r = Registrar(&mut registry);
        let requests = r.metric(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
        );
        let latency = r.latencies(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status",
        );
        let syncs = r.metric(
            "relay_syncs",
            "Relay syncs served (GET /v1/sync/apps answered 200)",
        );
        let leases = r.metric(
            "leases",
            "Admission leases live now (Force-mode proxy users across every relay)",
        );
        let pool = r.metric(
            "db_pool_connections",
            "Database connections open, by state (idle, in_use)",
        );
        let pool_max = r.metric(
            "db_pool_max_connections",
            "The most database connections the pool opens",
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
