//! The operator console: server-rendered HTML pages over the same store and rules as the API,
//! in English and Japanese, with no script at all.
//!
//! - **Sign-in** (`/`): an API key — the operator's, or an app owner's — is exchanged for a
//!   session cookie ([`session`]). Owners see only their own apps in every view, exactly as
//!   their key does in the API (the same `scope`, so another owner's app is "not found").
//! - **Forms**: every POST carries the session's CSRF token and is refused (403) without it;
//!   a POST whose `Origin` names another host is refused too.
//! - **Headers** on every page: a Content-Security-Policy that allows nothing but this origin's
//!   stylesheet (no script, no inline style, no frames: `frame-ancestors 'none'`),
//!   `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//!   `Referrer-Policy: same-origin`, `Cache-Control: no-store` (pages show secrets once).
//! - **Escaping**: pages are maud templates, which escape every interpolated value; names
//!   with HTML in them (the API accepts them) are shown as text.
//! - **Assets**: the stylesheet is compiled into the binary; nothing loads from elsewhere.
//!   Charts are SVG drawn on the server.
//! - **Language** ([`i18n`]): `?lang=` (which sets a cookie), the cookie, `Accept-Language`.
//!
//! Through a relay's TLS port the console works like the rest of the API: the relay hands
//! HTTP clients (ALPN `http/1.1`) to the control plane byte for byte. The session cookie is
//! `Secure` when the sign-in form was posted from an `https:` origin (or a proxy says
//! `X-Forwarded-Proto: https`).

mod allowlist;
mod apps;
mod chart;
mod i18n;
mod page;
mod regions;
mod requests;
pub(crate) mod session;
mod usage;

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::header::{ACCEPT_LANGUAGE, CACHE_CONTROL, CONTENT_TYPE, HOST, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;

use crate::state::AppState;
use crate::time::now_unix;
use i18n::Lang;
use page::{error_page, header, query_param, redirect, SignedForm};

pub(crate) use page::Ctx;

pub(crate) use allowlist::public_page as allowlist_page;

const CSS: &str = include_str!("console.css");

/// The Content-Security-Policy of every console page.
pub const CSP: &str = "default-src 'self'; script-src 'none'; object-src 'none'; \
     style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The console's routes (merged into the API's router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/signin", post(sign_in))
        .route("/signout", post(sign_out))
        .route("/console.css", get(css))
        .route("/allowlist/{region}", get(allowlist::history_page))
        .merge(apps::routes())
        .merge(requests::routes())
        .merge(regions::routes())
        .merge(usage::routes())
        .layer(axum::middleware::from_fn(headers))
}

/// Security headers on every console response, the language cookie when `?lang=` chose one,
/// and the `Origin` check on every POST.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(req.headers()) {
        let lang = Lang::choose(None, None, header(req.headers(), ACCEPT_LANGUAGE));
        return error_page(
            lang,
            StatusCode::FORBIDDEN,
            lang.text().csrf_refused.to_owned(),
        );
    }
    let chosen = query_param(req.uri().query(), "lang").and_then(|l| Lang::parse(&l));
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(lang) = chosen {
        let cookie = format!(
            "lang={}; Path=/; Max-Age=31536000; SameSite=Strict",
            lang.code()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(SET_COOKIE, v);
        }
    }
    resp
}

/// False when a POST's `Origin` names a host other than the one it was sent to. A missing
/// `Origin` (a non-browser client) passes: the CSRF token still has to match.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = header(headers, axum::http::header::ORIGIN) else {
        return true;
    };
    let Some(host) = header(headers, HOST) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// `/`: the sign-in form, or the apps view when signed in.
async fn home(ctx: Ctx) -> Response {
    if ctx.session.is_some() {
        return redirect("/apps");
    }
    sign_in_page(&ctx, StatusCode::OK, None)
}

fn sign_in_page(ctx: &Ctx, status: StatusCode, error: Option<&str>) -> Response {
    let t = ctx.t();
    let body = html! {
        p { (t.sign_in_intro) }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.card method="post" action="/signin" {
            label for="key" { (t.api_key) }
            input #key type="password" name="key" autocomplete="off" required;
            button type="submit" { (t.sign_in) }
        }
    };
    ctx.page_with(status, t.sign_in, body)
}

/// Exchanges an API key for a session. There is no session yet to bind a CSRF token to: the
/// `Origin` check (middleware) and `SameSite=Strict` keep other sites from signing a browser
/// in, and a wrong key only ever shows this form again.
async fn sign_in(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let key = form.get("key").map(|k| k.trim()).unwrap_or("");
    let caller = match state.caller_for_key(key).await {
        Ok(c) if !key.is_empty() => c,
        _ => return sign_in_page(&ctx, StatusCode::UNAUTHORIZED, Some(ctx.t().bad_key)),
    };
    // A session id the browser already had is not reused (session fixation).
    if let Some(old) = &ctx.session_id {
        state.sessions().remove(old);
    }
    let (id, _) = state.sessions().create(caller, now_unix());
    let mut resp = redirect("/apps");
    if let Ok(v) = HeaderValue::from_str(&session::session_cookie(&id, ctx.secure)) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

async fn sign_out(State(state): State<AppState>, SignedForm { ctx, .. }: SignedForm) -> Response {
    if let Some(id) = &ctx.session_id {
        state.sessions().remove(id);
    }
    let mut resp = redirect("/");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(ctx.secure)) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}
