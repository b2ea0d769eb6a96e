//! `POST /v1/ice-servers`: a browser's `RTCConfiguration` for a mode, authenticated by the
//! user's token, so a page calls it directly (CORS open: the credential is a bearer token,
//! never a cookie).
//!
//! | mode | `iceServers` | `iceTransportPolicy` |
//! |---|---|---|
//! | `auto` (`0`) | the least-loaded live dynamic relay as `turns:IP:PORT?transport=tcp`: the fallback behind the media service's own candidates, which come in its SDP answer | `all` |
//! | `udp` (`3`) | the region's live published relays as `turn:IP:PORT?transport=udp` | `relay` |
//! | `tcp` (`5`) | the region's live published relays as `turns:IP:PORT?transport=tcp` | `relay` |
//!
//! The credential is the token itself: a token is a TURN REST username/password the relays
//! accept unchanged (`cloudproxy_proto::token`), so the ICE credentials expire exactly when
//! the token does, and nothing new is minted or stored.
//!
//! Errors: 401 for a missing, malformed, expired or forged token (or one of a suspended or
//! deleted app); 403 when the app has no active enablement for a Force mode in that region;
//! 400 for an unknown region or mode; 503 when a Force mode has no live published relay in
//! the region. Auto needs no enablement, and with no live dynamic relay it answers an empty
//! `iceServers`: the media service's own candidates remain.
//!
//! The request and response types are the wire vocabulary's (`cloudproxy_api::ice_servers`).

use axum::extract::State;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cloudproxy_proto::auth::Authenticator;
use cloudproxy_proto::token::{self, Token};
use cloudproxy_proto::AuthConfig;

use crate::allowlist::Listener;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{bearer_key, JsonBody};
use crate::model::{Mode, Pool, Transport};
use crate::state::AppState;
use crate::time::now_unix;

/// How many published relays a Force mode lists: enough to fail over, and a browser gathers
/// one relay candidate per server, so not the whole pool.
const FORCE_RELAYS: i64 = 3;

pub use cloudproxy_api::ice_servers::{
    IceServer, IceServersRequest, IceServersResponse, ProxyMode,
};

/// The enablement a Force mode needs; Auto needs none.
fn enablement(mode: ProxyMode) -> Option<Mode> {
    match mode {
        ProxyMode::Auto => None,
        ProxyMode::Udp => Some(Mode::ForceUdp),
        ProxyMode::Tcp => Some(Mode::ForceTcp),
    }
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/ice-servers", post(ice_servers).options(preflight))
        .route_layer(axum::middleware::map_response(allow_any_origin))
}

/// Every reply of this path, errors included, may be read by any origin's script.
async fn allow_any_origin(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// The CORS preflight of a cross-origin `POST` with a bearer token and a JSON body.
async fn preflight() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            (ACCESS_CONTROL_ALLOW_METHODS, "POST"),
            (ACCESS_CONTROL_ALLOW_HEADERS, "Authorization, Content-Type"),
            (ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
}

/// The verified token of `Authorization: Bearer <token>`, with its app id.
pub(super) struct UserToken {
    token: Token,
    app_id: String,
    expiry: u64,
}

impl axum::extract::FromRequestParts<AppState> for UserToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let encoded = bearer_key(parts)?;
        let token = Token::decode(encoded)
            .map_err(|e| ApiError::unauthorized(format!("the token is malformed: {e}")))?;
        let now = now_unix();
        let (app_id, expiry) = {
            let claims = token.claims().expect("decode checked the claims");
            (claims.app_id.to_owned(), claims.expiry)
        };
        let keys = state.store().app_keys_of(&app_id, now).await?;
        let auth = Authenticator::new(&AuthConfig {
            app_keys: keys,
            ..AuthConfig::default()
        });
        token::verify(&auth, &token, now.max(0) as u64)
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        Ok(UserToken {
            token,
            app_id,
            expiry,
        })
    }
}

/// ICE servers and transport policy for a mode in a region, with the token as credential.
#[utoipa::path(post, path = "/v1/ice-servers", tag = "webrtc",
    request_body = IceServersRequest,
    responses(
        (status = 200, body = IceServersResponse),
        (status = 400, body = ErrorBody, description = "unknown region or mode"),
        (status = 401, body = ErrorBody, description = "missing, malformed, expired or forged token"),
        (status = 403, body = ErrorBody, description = "the app is not enabled for this Force mode in this region"),
        (status = 503, body = ErrorBody, description = "no live published relay in the region"),
    ),
    security(("bearer" = [])))]
pub(super) async fn ice_servers(
    State(state): State<AppState>,
    user: UserToken,
    JsonBody(request): JsonBody<IceServersRequest>,
) -> Result<Json<IceServersResponse>, ApiError> {
    let IceServersRequest { mode, region } = request;
    if let Some(needed) = enablement(mode) {
        if !state
            .store()
            .is_enabled(&user.app_id, region, needed)
            .await?
        {
            return Err(ApiError::forbidden(format!(
                "app '{}' is not enabled for {} in {}; file an enablement request",
                user.app_id,
                needed.as_str(),
                region.as_str()
            )));
        }
    }
    let since = now_unix() - state.settings().heartbeat_timeout;
    let (pool, limit) = match mode {
        ProxyMode::Auto => (Pool::Dynamic, 1),
        ProxyMode::Udp | ProxyMode::Tcp => (Pool::Static, FORCE_RELAYS),
    };
    let edges = state.store().live_edges(region, pool, since, limit).await?;
    let ice_servers: Vec<IceServer> = edges
        .iter()
        .map(|e| urls(mode, &e.listeners))
        .filter(|urls| !urls.is_empty())
        .map(|urls| IceServer {
            urls,
            username: user.token.username.clone(),
            credential: user.token.password.clone(),
        })
        .collect();
    if ice_servers.is_empty() && mode != ProxyMode::Auto {
        return Err(ApiError::unavailable(format!(
            "no published relay of {} is live for {}; try again shortly",
            region.as_str(),
            match mode {
                ProxyMode::Udp => "TURN over UDP",
                _ => "TURN over TLS",
            }
        )));
    }
    Ok(Json(IceServersResponse {
        ice_servers,
        ice_transport_policy: match mode {
            ProxyMode::Auto => "all",
            ProxyMode::Udp | ProxyMode::Tcp => "relay",
        }
        .into(),
        mode,
        region,
        expires_at: user.expiry,
    }))
}

/// One relay's URLs for a mode: its UDP listeners for Force UDP, its TLS ones otherwise.
fn urls(mode: ProxyMode, listeners: &[Listener]) -> Vec<String> {
    let wanted = match mode {
        ProxyMode::Udp => Transport::Udp,
        ProxyMode::Auto | ProxyMode::Tcp => Transport::Tls,
    };
    listeners
        .iter()
        .filter(|l| l.transport == wanted)
        .map(|l| {
            // An IPv6 literal goes in brackets (RFC 7065 §3.1).
            let host = match l.ip {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            };
            match wanted {
                Transport::Udp => format!("turn:{host}:{}?transport=udp", l.port),
                _ => format!("turns:{host}:{}?transport=tcp", l.port),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name_and_number() {
        let parse = |v: &str| serde_json::from_str::<ProxyMode>(v);
        assert_eq!(parse("\"auto\"").unwrap(), ProxyMode::Auto);
        assert_eq!(parse("0").unwrap(), ProxyMode::Auto);
        assert_eq!(parse("\"udp\"").unwrap(), ProxyMode::Udp);
        assert_eq!(parse("3").unwrap(), ProxyMode::Udp);
        assert_eq!(parse("\"tcp\"").unwrap(), ProxyMode::Tcp);
        assert_eq!(parse("5").unwrap(), ProxyMode::Tcp);
        for bad in [
            "1",
            "4",
            "-1",
            "\"TCP\"",
            "\"force_tcp\"",
            "3.0",
            "null",
            "[3]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&ProxyMode::Tcp).unwrap(), "\"tcp\"");
    }

    #[test]
    fn urls_follow_the_mode_and_bracket_ipv6() {
        let l = |transport, ip: &str, port| Listener {
            transport,
            ip: ip.parse().unwrap(),
            port,
        };
        let listeners = [
            l(Transport::Udp, "203.0.113.1", 3478),
            l(Transport::Tcp, "203.0.113.1", 3478),
            l(Transport::Tls, "2001:db8::1", 443),
        ];
        assert_eq!(
            urls(ProxyMode::Udp, &listeners),
            ["turn:203.0.113.1:3478?transport=udp"]
        );
        assert_eq!(
            urls(ProxyMode::Tcp, &listeners),
            ["turns:[2001:db8::1]:443?transport=tcp"]
        );
        assert_eq!(
            urls(ProxyMode::Auto, &listeners),
            urls(ProxyMode::Tcp, &listeners)
        );
    }
}
