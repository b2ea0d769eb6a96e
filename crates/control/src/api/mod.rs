//! The HTTP API (`/v1/…`): state, authentication, JSON bodies, the router and the OpenAPI
//! document. Handlers live in `apps`, `requests` and `edges`.

mod apps;
mod edges;
mod ice_servers;
mod metrics;
mod openapi;
mod relay;
mod requests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};
use crate::store::{hash_key, Store};

pub use ice_servers::{IceServer, IceServersRequest, IceServersResponse, ProxyMode};
pub use openapi::ApiDoc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// SHA-256 (hex) of the operator's bearer key; the key itself is not kept.
    operator_key_hash: String,
    /// SHA-256 (hex) of the relays' key, if one is configured.
    relay_key_hash: Option<String>,
    settings: Settings,
    metrics: metrics::ApiMetrics,
    /// The console's signed-in browsers.
    sessions: crate::console::session::Sessions,
    /// When each relay (by edge id) last synced with this process, for the console.
    // A std mutex: one map operation per use, never held across an `.await`.
    edge_syncs: std::sync::Mutex<HashMap<String, i64>>,
}

/// Timing of the relay protocol.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a lease lives without renewal (seconds).
    pub lease_ttl: i64,
    /// A relay whose last heartbeat is older than this (seconds) drops out of selection.
    pub heartbeat_timeout: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_ttl: 30,
            heartbeat_timeout: 30,
        }
    }
}

impl AppState {
    /// State over an open store, with the operator's bearer key.
    pub fn new(store: Store, operator_key: &str) -> AppState {
        AppState::with_relays(store, operator_key, None, Settings::default())
    }

    /// State with a key for relays (sync, leases, usage, heartbeats, registration) and the
    /// relay protocol's timing.
    pub fn with_relays(
        store: Store,
        operator_key: &str,
        relay_key: Option<&str>,
        settings: Settings,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                store,
                operator_key_hash: hash_key(operator_key),
                relay_key_hash: relay_key.map(hash_key),
                settings,
                metrics: metrics::ApiMetrics::new(),
                sessions: Default::default(),
                edge_syncs: Default::default(),
            }),
        }
    }

    pub fn settings(&self) -> Settings {
        self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn sessions(&self) -> &crate::console::session::Sessions {
        &self.inner.sessions
    }

    /// Records a relay's sync (`GET /v1/sync/apps?edge=ID`).
    pub(crate) fn edge_synced(&self, edge: &str, now: i64) {
        let mut syncs = self
            .inner
            .edge_syncs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Bounded by the edge ids relays use; a relay key could invent ids, so cap it.
        if syncs.len() < 10_000 || syncs.contains_key(edge) {
            syncs.insert(edge.to_owned(), now);
        }
    }

    /// When relay `edge` last synced with this process, if it did.
    pub(crate) fn edge_synced_at(&self, edge: &str) -> Option<i64> {
        let syncs = self
            .inner
            .edge_syncs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        syncs.get(edge).copied()
    }

    /// Who a bearer key belongs to: the operator or an owner (the relay key is refused).
    pub async fn caller_for_key(&self, key: &str) -> Result<Caller, ApiError> {
        // Hashes compare in time independent of where the keys differ.
        let hash = hash_key(key);
        if constant_time_eq(hash.as_bytes(), self.inner.operator_key_hash.as_bytes()) {
            return Ok(Caller::Operator);
        }
        if is_relay_key(self, &hash) {
            return Err(ApiError::forbidden(
                "the relay key may only call the relay endpoints (sync, leases, usage, \
                 heartbeats, edge registration)",
            ));
        }
        match self.store().owner_for_key(key).await? {
            Some(owner) => Ok(Caller::Owner(owner)),
            None => Err(ApiError::unauthorized("unknown API key")),
        }
    }
}

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

async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok", "backend": state.store().backend() }))
}

/// Who is calling, from `Authorization: Bearer <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Manages everything.
    Operator,
    /// Manages only its own apps.
    Owner(String),
}

impl Caller {
    /// The owner a query is restricted to: `None` for the operator.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Operator => None,
            Caller::Owner(id) => Some(id),
        }
    }

    /// 403 unless the caller is the operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Owner(_) => Err(ApiError::forbidden(
                "this needs the operator's key; app owner keys manage their own apps only",
            )),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.caller_for_key(bearer_key(parts)?).await
    }
}

fn is_relay_key(state: &AppState, hash: &str) -> bool {
    state
        .inner
        .relay_key_hash
        .as_ref()
        .is_some_and(|h| constant_time_eq(hash.as_bytes(), h.as_bytes()))
}

/// The key of `Authorization: Bearer <key>`. The scheme is case-insensitive (RFC 9110
/// §11.1: `bearer`, `BEARER`), and one or more spaces may follow it.
fn bearer_key(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        })
}

/// A relay, or the operator acting as one: what the relay endpoints require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCaller {
    /// The operator's key: may register any address.
    Operator,
    /// The relay key: may publish only addresses inside the CIDRs the operator gave the edge.
    Relay,
}

impl FromRequestParts<AppState> for RelayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer_key(parts)?;
        let hash = hash_key(key);
        if constant_time_eq(hash.as_bytes(), state.inner.operator_key_hash.as_bytes()) {
            return Ok(RelayCaller::Operator);
        }
        if is_relay_key(state, &hash) {
            return Ok(RelayCaller::Relay);
        }
        match state.store().owner_for_key(key).await? {
            Some(_) => Err(ApiError::forbidden(
                "this needs the relay key or the operator's key",
            )),
            None => Err(ApiError::unauthorized("unknown API key")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON body whose errors name the field: `max_users_per_channel`, `listeners[1].ip`, or
/// `body` when the JSON itself is broken.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse_json(&body_bytes(req, state).await?).map(JsonBody)
    }
}

/// A JSON body that may be left out (empty or only whitespace): then `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// The whole body: 413 past the body limit (axum's default, 2 MiB), 400 when it cannot be
/// read.
async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| match e.status() {
            axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(),
            _ => ApiError::field("body", e.body_text()),
        })
}

/// Parses a JSON body, naming the offending field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::field("body", "a JSON body is required"));
    }
    if has_nul_escape(bytes) {
        // No name, id or reason holds one, and PostgreSQL cannot store it (a 500).
        return Err(ApiError::field(
            "body",
            "strings must not contain NUL (\\u0000)",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !inner.is_data() {
            return ApiError::field("body", format!("invalid JSON: {inner}"));
        }
        let message = strip_position(&inner.to_string());
        // serde reports missing and unknown fields at the enclosing object: name the field.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        // (serde_path_to_error already includes an unknown field in the path.)
        let field = match (named, path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            (Some(name), p) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, p) => p.to_owned(),
        };
        ApiError::field(field, message)
    })?;
    de.end()
        .map_err(|e| ApiError::field("body", format!("invalid JSON: {e}")))?;
    Ok(value)
}

/// Whether the JSON text has a `\u0000` escape (JSON cannot hold a raw NUL in a string): a
/// `u0000` after an odd number of backslashes.
fn has_nul_escape(bytes: &[u8]) -> bool {
    bytes.windows(5).enumerate().any(|(i, w)| {
        w == b"u0000" && bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
    })
}

/// serde_json appends " at line 1 column 20"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The one `{id}` (or `{region}`) segment of a path. No id is empty, holds a control
/// character or is not UTF-8, so those are a 404 with the JSON error before any query runs
/// (PostgreSQL cannot even compare a text holding NUL: it would be a 500).
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("the id in the path is not valid UTF-8"))?;
        if id.is_empty() {
            return Err(ApiError::not_found("the id in the path is empty"));
        }
        if id.chars().any(char::is_control) {
            return Err(ApiError::not_found(
                "the id in the path holds a control character; no id does",
            ));
        }
        Ok(PathId(id))
    }
}

/// Query parameters, with malformed ones as a 400 on `query`.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::field("query", e.body_text()))
    }
}

impl Params {
    /// An optional integer parameter.
    pub fn int<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::field(name, format!("'{v}' is not a valid integer")))
            })
            .transpose()
    }
}

/// Checks a free-text name: trimmed, 1 to `max` characters, none of them a control character
/// or a bidirectional override ([`crate::model::forbidden_char`]).
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if let Some(c) = crate::model::forbidden_char(v) {
        return Err(ApiError::field(field, crate::model::forbidden_message(c)));
    }
    if v.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(v.to_owned())
}

/// 400 naming every field when `errors` is not empty.
pub(crate) fn check_fields(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::fields(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enablement::EnablementInput;

    fn field_of(body: &str) -> (String, String) {
        let e = parse_json::<EnablementInput>(body.as_bytes()).unwrap_err();
        let f = &e.body.error.fields[0];
        (f.field.clone(), f.message.clone())
    }

    const GOOD: &str = r#"{"region":"japan","sdk":"web","use_case":"1:1","max_concurrent_channels":1,
        "max_users_per_channel":2,"max_proxy_users_per_channel":1,"quality":"720p","mode":"force_tcp"}"#;

    #[test]
    fn nul_escapes_are_found_and_literal_backslashes_are_not() {
        assert!(has_nul_escape(br#"{"name":"a\u0000"}"#));
        assert!(has_nul_escape(br#"{"name":"\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"name":"\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"name":"u0000"}"#));
    }

    #[test]
    fn good_json_parses() {
        assert!(parse_json::<EnablementInput>(GOOD.as_bytes()).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let bad_enum = GOOD.replace("\"japan\"", "\"mars\"");
        let (field, msg) = field_of(&bad_enum);
        assert_eq!(field, "region");
        assert!(msg.starts_with("unknown variant `mars`"), "{msg}");
        assert!(!msg.contains(" at line "), "{msg}");

        let (field, _) = field_of(&GOOD.replace(
            "\"max_concurrent_channels\":1",
            "\"max_concurrent_channels\":-1",
        ));
        assert_eq!(field, "max_concurrent_channels");

        let (field, msg) = field_of(&GOOD.replace("\"sdk\":\"web\",", ""));
        assert_eq!(
            (field.as_str(), msg.as_str()),
            ("sdk", "missing field `sdk`")
        );

        let (field, _) = field_of(&GOOD.replace("{", "{\"colour\":1,"));
        assert_eq!(field, "colour");

        let (field, msg) = field_of("{\"region\":");
        assert_eq!(field, "body");
        assert!(msg.starts_with("invalid JSON"), "{msg}");
        assert_eq!(field_of("").0, "body");
        assert_eq!(field_of(&format!("{GOOD} x")).0, "body");
    }

    #[test]
    fn nested_fields_have_paths() {
        let body = r#"{"region":"japan","pool":"static","capacity_kbps":1,
            "listeners":[{"transport":"udp","ip":"203.0.113.1","port":3478},
                         {"transport":"tls","ip":"not-an-ip","port":443}]}"#;
        let e = parse_json::<crate::store::EdgeInput>(body.as_bytes()).unwrap_err();
        assert_eq!(e.body.error.fields[0].field, "listeners[1].ip");
        let body = r#"{"region":"japan","pool":"static","capacity_kbps":1,"listeners":[{"ip":"203.0.113.1","port":1}]}"#;
        let e = parse_json::<crate::store::EdgeInput>(body.as_bytes()).unwrap_err();
        assert_eq!(e.body.error.fields[0].field, "listeners[0].transport");
    }
}
