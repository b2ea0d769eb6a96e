//! Test support: a control plane on SQLite or on a PostgreSQL database of its own, and a
//! small JSON client.
//!
//! PostgreSQL comes from `CLOUDPROXY_TEST_POSTGRES` (a URL whose role may create databases;
//! `.ci/run` starts one). Each test creates its own database there, so tests run in parallel,
//! and drops it at the end. Without the variable the PostgreSQL half of each test is skipped
//! with a loud message — unless `CI` is true, where that is a failure.

#![allow(dead_code)]

use std::time::Duration;

use cloudproxy_control::{Control, ControlConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;

pub(crate) const OPERATOR_KEY: &str = "operator-key-for-tests-0123456789";
pub(crate) const RELAY_KEY: &str = "relay-key-for-tests-0123456789";
/// Every test's whole body runs under this bound.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test.
pub(crate) struct Db {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name) to drop at the end.
    pg: Option<(String, String)>,
}

impl Db {
    /// `None` when PostgreSQL is not configured (and this is not CI).
    pub(crate) async fn new(backend: Backend) -> Option<Db> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("control.db").display());
                Some(Db {
                    url,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var("CLOUDPROXY_TEST_POSTGRES") else {
                    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                    assert!(
                        !ci,
                        "CI is set but CLOUDPROXY_TEST_POSTGRES is not: the PostgreSQL half of \
                         the control-plane tests cannot be skipped in CI"
                    );
                    // Straight to stderr: the test harness does not capture this.
                    static LOUD: std::sync::Once = std::sync::Once::new();
                    LOUD.call_once(|| {
                        use std::io::Write;
                        let _ = std::io::stderr().write_all(
                            b"\n*** SKIPPING the PostgreSQL half of the control-plane API tests: \
                              set CLOUDPROXY_TEST_POSTGRES=postgres://USER:PASS@HOST:PORT/DB (a \
                              role that may CREATE DATABASE; .ci/run starts one). Under CI=true \
                              this is a failure. ***\n\n",
                        );
                    });
                    return None;
                };
                let name = format!("cp_test_{}", random_suffix());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {admin}: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                Some(Db {
                    url: with_database(&admin, &name),
                    _dir: None,
                    pg: Some((admin, name)),
                })
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let q = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(q)).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

fn random_suffix() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// `url` with its database path replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A running control plane over a test database, with an HTTP client.
pub(crate) struct Env {
    pub control: Option<Control>,
    pub base: String,
    pub http: reqwest::Client,
    pub backend: Backend,
    pub db: Db,
}

/// A response: status and JSON (or `Value::String` for non-JSON bodies).
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: String,
}

impl Resp {
    /// Asserts the status and, for errors, the one error shape; returns the body.
    #[track_caller]
    pub(crate) fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        if status >= 400 {
            assert_error_shape(&self.body);
        }
        self.body
    }

    /// Asserts a 400 that names `field` among its field errors; returns that field's message.
    #[track_caller]
    pub(crate) fn expect_field(self, field: &str) -> String {
        let body = self.expect(400);
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        let fields = body["error"]["fields"].as_array().unwrap();
        fields
            .iter()
            .find(|f| f["field"] == field)
            .unwrap_or_else(|| panic!("no error for field '{field}' in {body}"))["message"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Asserts the error `status` and that the error message contains `part`; returns the body.
    #[track_caller]
    pub(crate) fn expect_message(self, status: u16, part: &str) -> Value {
        let body = self.expect(status);
        assert!(
            body["error"]["message"].as_str().unwrap().contains(part),
            "no '{part}' in the message: {body}"
        );
        body
    }

    /// Asserts a 400 or a 404 (which one depends on where the router or the handler refuses
    /// `what`), with the error shape.
    #[track_caller]
    pub(crate) fn expect_400_or_404(self, what: &str) {
        assert!(
            [400, 404].contains(&self.status.as_u16()),
            "{what}: {} {}",
            self.status,
            self.body
        );
        assert_error_shape(&self.body);
    }

    /// Asserts a 200 whose body is a JSON array; returns its items.
    #[track_caller]
    pub(crate) fn expect_list(self) -> Vec<Value> {
        match self.expect(200) {
            Value::Array(items) => items,
            other => panic!("not a list: {other}"),
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The string `key` of every item of the JSON array `list`.
#[track_caller]
pub(crate) fn column<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    items
        .iter()
        .map(|item| {
            item[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {item}"))
        })
        .collect()
}

/// An edge registration body: `listeners` as (transport, ip, port).
pub(crate) fn edge_body(
    region: &str,
    pool: &str,
    kbps: u64,
    listeners: &[(&str, &str, u16)],
) -> Value {
    let listeners: Vec<Value> = listeners
        .iter()
        .map(|(transport, ip, port)| serde_json::json!({"transport": transport, "ip": ip, "port": port}))
        .collect();
    serde_json::json!({"region": region, "pool": pool, "capacity_kbps": kbps, "listeners": listeners})
}

/// `{"error": {"code": str, "message": str, "fields": [{"field": str, "message": str}]}}`.
#[track_caller]
pub(crate) fn assert_error_shape(body: &Value) {
    let e = &body["error"];
    assert!(e["code"].is_string(), "no error.code in {body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let fields = e["fields"].as_array().unwrap_or_else(|| panic!("{body}"));
    for f in fields {
        assert!(f["field"].is_string() && f["message"].is_string(), "{body}");
    }
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert_eq!(e.as_object().unwrap().len(), 3, "{body}");
}

impl Env {
    pub(crate) async fn new(backend: Backend) -> Option<Env> {
        let db = Db::new(backend).await?;
        let control = start(&db.url);
        Some(Env {
            base: format!("http://{}", control.local_addr()),
            control: Some(control),
            http: client(),
            backend,
            db,
        })
    }

    /// A second control plane on the same database (another "process").
    pub(crate) fn second(&self) -> Control {
        start(&self.db.url)
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        call(&self.http, &self.base, method, path, key, body).await
    }

    pub(crate) async fn get(&self, path: &str, key: Option<&str>) -> Resp {
        self.call(Method::GET, path, key, None).await
    }

    pub(crate) async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Resp {
        self.call(Method::POST, path, key, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, key: Option<&str>, body: Value) -> Resp {
        self.call(Method::PUT, path, key, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str, key: Option<&str>) -> Resp {
        self.call(Method::DELETE, path, key, None).await
    }

    /// Creates an owner; returns (owner id, API key).
    pub(crate) async fn owner(&self, name: &str) -> (String, String) {
        let body = self
            .post(
                "/v1/owners",
                Some(OPERATOR_KEY),
                serde_json::json!({ "name": name }),
            )
            .await
            .expect(201);
        (
            body["owner"]["id"].as_str().unwrap().to_owned(),
            body["api_key"].as_str().unwrap().to_owned(),
        )
    }

    /// Files the enablement request `form` for `app_id` as its owner (`owner_key`), approves
    /// it as the operator and activates it; returns the request id.
    pub(crate) async fn enable(&self, app_id: &str, owner_key: &str, form: Value) -> String {
        let id = self.file_request(app_id, owner_key, form).await;
        self.request_step(&id, "approve", OPERATOR_KEY)
            .await
            .expect(200);
        self.request_step(&id, "activate", owner_key)
            .await
            .expect(200);
        id
    }

    /// Files the enablement request `form` for `app_id` with `key`; returns the request id.
    pub(crate) async fn file_request(&self, app_id: &str, key: &str, form: Value) -> String {
        let req = self
            .post(&format!("/v1/apps/{app_id}/requests"), Some(key), form)
            .await
            .expect(201);
        req["id"].as_str().unwrap().to_owned()
    }

    /// Takes the lifecycle `step` (approve, activate, suspend...) of request `id` with `key`.
    pub(crate) async fn request_step(&self, id: &str, step: &str, key: &str) -> Resp {
        let path = format!("/v1/requests/{id}/{step}");
        self.post(&path, Some(key), serde_json::json!({})).await
    }

    /// Takes the `step` (suspend, resume) of app `id` with `key`.
    pub(crate) async fn app_step(&self, id: &str, step: &str, key: &str) -> Resp {
        let path = format!("/v1/apps/{id}/{step}");
        self.post(&path, Some(key), serde_json::json!({})).await
    }

    /// Registers edge `id` with `key`.
    pub(crate) async fn put_edge(&self, id: &str, key: &str, body: Value) -> Resp {
        self.put(&format!("/v1/edges/{id}"), Some(key), body).await
    }

    /// `PUT /v1/edges/{id}/cidrs` with `key`: `{"cidrs": cidrs}`.
    pub(crate) async fn put_cidrs(&self, id: &str, key: &str, cidrs: Value) -> Resp {
        let body = serde_json::json!({ "cidrs": cidrs });
        self.put(&format!("/v1/edges/{id}/cidrs"), Some(key), body)
            .await
    }

    /// `GET /v1/sync/apps` with `key`; asserts a 200.
    pub(crate) async fn sync(&self, key: &str) -> Value {
        self.get("/v1/sync/apps", Some(key)).await.expect(200)
    }

    /// `GET /v1/edges/{id}` as the operator.
    pub(crate) async fn edge(&self, id: &str) -> Resp {
        self.get(&format!("/v1/edges/{id}"), Some(OPERATOR_KEY))
            .await
    }

    /// A heartbeat of edge `id` with the relay key.
    pub(crate) async fn heartbeat(&self, id: &str, load_kbps: i64, allocations: u64) -> Resp {
        let body = serde_json::json!({"load_kbps": load_kbps, "allocations": allocations});
        self.post(&format!("/v1/edges/{id}/heartbeat"), Some(RELAY_KEY), body)
            .await
    }

    /// `region`'s entry of `GET /v1/regions` (as the operator).
    pub(crate) async fn region(&self, region: &str) -> Value {
        let regions = self
            .get("/v1/regions", Some(OPERATOR_KEY))
            .await
            .expect_list();
        regions
            .into_iter()
            .find(|r| r["region"] == region)
            .unwrap_or_else(|| panic!("no {region} in /v1/regions"))
    }

    /// `GET /v1/apps/{app_id}/usage?{query}` with `key`.
    pub(crate) async fn usage(&self, app_id: &str, key: &str, query: &str) -> Resp {
        self.get(&format!("/v1/apps/{app_id}/usage?{query}"), Some(key))
            .await
    }

    /// Creates an app with `key`; returns the creation body.
    pub(crate) async fn app(&self, key: &str, name: &str) -> Value {
        self.post("/v1/apps", Some(key), serde_json::json!({ "name": name }))
            .await
            .expect(201)
    }

    /// Creates an app with `key`; returns its id.
    pub(crate) async fn app_id(&self, key: &str, name: &str) -> String {
        self.app(key, name).await["app"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Stop the server (closing its pool) before the database is dropped.
        if let Some(c) = self.control.take() {
            c.stop();
        }
    }
}

pub(crate) fn start(url: &str) -> Control {
    Control::start(ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: url.into(),
        operator_key: Some(OPERATOR_KEY.into()),
        relay_key: Some(RELAY_KEY.into()),
        ..ControlConfig::default()
    })
    .unwrap_or_else(|e| panic!("control plane on {url}: {e}"))
}

pub(crate) fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

/// The tests' HTTP client settings: no proxy, a 30 s timeout.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    // In a workspace build reqwest may have rustls without a provider (cloudproxy admin's
    // HTTPS): install aws-lc-rs, as the binaries do.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
}

/// POSTs `body` as it is (any bytes, labelled JSON) to `base``path` with the bearer `key`.
pub(crate) async fn post_raw(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http.post(format!("{base}{path}"))
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

pub(crate) async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.expect("body");
    let body = if content_type.starts_with("application/json") {
        serde_json::from_str(&text).expect("JSON body")
    } else {
        Value::String(text)
    };
    Resp {
        status,
        body,
        content_type,
    }
}

/// Runs `$test(env)` once on SQLite and once on PostgreSQL, each bounded by [`TEST_TIMEOUT`].
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            use $crate::common::{Backend, Env, TEST_TIMEOUT};

            async fn run(backend: Backend) {
                let Some(env) = Env::new(backend).await else { return };
                tokio::time::timeout(TEST_TIMEOUT, super::$test(env))
                    .await
                    .expect("test took too long");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(Backend::Postgres).await;
            }
        }
    )+};
}
