//! The request extractors of the API and the console: the caller's role from its bearer key,
//! JSON bodies whose errors name the field, path ids, query parameters, and the checks of
//! free text and field lists that go with them.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::caller::{Caller, Operator, RelayCaller};
use crate::error::{ApiError, FieldError};
use crate::state::AppState;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.caller_for_key(bearer_key(parts)?).await
    }
}

/// The key of `Authorization: Bearer <key>`. The scheme is case-insensitive (RFC 9110
/// §11.1: `bearer`, `BEARER`), and one or more spaces may follow it.
pub(crate) fn bearer_key(parts: &Parts) -> Result<&str, ApiError> {
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

impl FromRequestParts<AppState> for RelayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.relay_caller_for_key(bearer_key(parts)?).await
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Caller::from_request_parts(parts, state)
            .await?
            .require_operator()?;
        Ok(Operator)
    }
}

/// What a handler of the keyed API takes: the state every handler shares, and the caller in
/// the role `R` the endpoint requires — [`Caller`] (the operator or an app owner),
/// [`Operator`] or [`RelayCaller`]. A key that does not grant `R` is refused (401 or 403)
/// before the handler runs. It dereferences to the [`AppState`].
pub(crate) struct Api<R = Caller> {
    /// The store, settings and keys.
    pub(crate) state: AppState,
    /// Who calls, in the endpoint's role.
    pub(crate) caller: R,
}

impl<R> std::ops::Deref for Api<R> {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.state
    }
}

impl Api<Caller> {
    /// The owner the caller's queries are restricted to: `None` for the operator.
    pub(crate) fn scope(&self) -> Option<&str> {
        self.caller.scope()
    }
}

impl<R> FromRequestParts<AppState> for Api<R>
where
    R: FromRequestParts<AppState, Rejection = ApiError>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = R::from_request_parts(parts, state).await?;
        Ok(Api {
            state: state.clone(),
            caller,
        })
    }
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

/// The `{id}` (or `{region}`) segment of a path: its first parameter (a step may follow, as
/// in `/v1/requests/{id}/{step}`). No id is empty, holds a control character or is not UTF-8,
/// so those are a 404 with the JSON error before any query runs (PostgreSQL cannot even
/// compare a text holding NUL: it would be a 500).
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("the id in the path is not valid UTF-8"))?;
        let id = params
            .into_iter()
            .next()
            .map(|(_, id)| id)
            .unwrap_or_default();
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
