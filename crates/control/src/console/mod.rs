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
pub mod i18n;
mod regions;
mod requests;
pub mod session;
mod usage;

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{
    ACCEPT_LANGUAGE, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};

use crate::api::{AppState, Caller};
use crate::error::ApiError;
use crate::time::now_unix;
use i18n::{Lang, Text};
use session::{Session, SESSION_COOKIE};

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

fn header(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// One query parameter, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let q = query?;
    let parsed: HashMap<String, String> = serde_urlencoded_pairs(q);
    parsed.get(name).cloned()
}

fn serde_urlencoded_pairs(q: &str) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(
        &format!("/?{q}").parse().unwrap_or_default(),
    )
    .map(|axum::extract::Query(m)| m)
    .unwrap_or_default()
}

/// What every console handler knows about its request.
pub struct Ctx {
    pub lang: Lang,
    /// The session, if the cookie names a live one.
    pub session: Option<Session>,
    /// The session cookie's value (for sign-out).
    session_id: Option<String>,
    /// Whether the browser speaks TLS to us (see the module doc).
    secure: bool,
    /// The path of a GET (the language switch links back to it).
    path: String,
    pub query: HashMap<String, String>,
}

impl Ctx {
    pub fn t(&self) -> &'static Text {
        self.lang.text()
    }

    /// The caller, or a redirect to the sign-in page when there is no session.
    // The error is the response itself, handed straight back to axum once per request.
    #[allow(clippy::result_large_err)]
    pub fn caller(&self) -> Result<&Caller, Response> {
        match &self.session {
            Some(s) => Ok(&s.caller),
            None => Err(redirect("/")),
        }
    }

    /// The session of a POST whose `csrf` field is this session's token; 403 otherwise.
    #[allow(clippy::result_large_err)]
    pub fn check_form(&self, form: &HashMap<String, String>) -> Result<&Session, Response> {
        match &self.session {
            Some(s) if s.csrf_ok(form.get("csrf").map(String::as_str)) => Ok(s),
            _ => Err(self.error(StatusCode::FORBIDDEN, self.t().csrf_refused)),
        }
    }

    /// [`Ctx::check_form`] for an operator's action: the session must be the operator's.
    #[allow(clippy::result_large_err)]
    pub fn operator_form(&self, form: &HashMap<String, String>) -> Result<&Session, Response> {
        let session = self.check_form(form)?;
        session
            .caller
            .require_operator()
            .map_err(|e| self.api_error(e))?;
        Ok(session)
    }

    /// The hidden CSRF field of a form.
    pub fn csrf_field(&self) -> Markup {
        let token = self.session.as_ref().map_or("", |s| s.csrf.as_str());
        html! { input type="hidden" name="csrf" value=(token); }
    }

    /// A page with the header, navigation and language switch.
    pub fn page(&self, title: &str, body: Markup) -> Response {
        self.page_with(StatusCode::OK, title, body)
    }

    pub fn page_with(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        let markup = layout(self.lang, self.session.as_ref(), &self.path, title, body);
        (status, html_response(markup)).into_response()
    }

    /// An error page.
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        let t = self.t();
        let body = html! { p.error { (message) } p { a href="/apps" { (t.nav_apps) } } };
        self.page_with(status, t.error_title, body)
    }

    /// An API error (from the store or a check) as a page: its status, and its message with
    /// every field named.
    pub fn api_error(&self, e: impl Into<ApiError>) -> Response {
        let e: ApiError = e.into();
        let t = self.t();
        let message = match e.status {
            StatusCode::NOT_FOUND => t.not_found.to_owned(),
            StatusCode::FORBIDDEN => t.forbidden.to_owned(),
            _ => e.body.error.message.clone(),
        };
        let fields = &e.body.error.fields;
        let body = html! {
            p.error { (message) }
            @if !fields.is_empty() {
                p { (t.invalid) }
                ul { @for f in fields { li { code { (f.field) } ": " (f.message) } } }
            }
            p { a href="/apps" { (t.nav_apps) } }
        };
        self.page_with(e.status, t.error_title, body)
    }
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let cookies = header(&parts.headers, COOKIE).unwrap_or("");
        let query = parts
            .uri
            .query()
            .map(serde_urlencoded_pairs)
            .unwrap_or_default();
        let lang = Lang::choose(
            query.get("lang").map(String::as_str),
            session::cookie(cookies, "lang"),
            header(&parts.headers, ACCEPT_LANGUAGE),
        );
        let session_id = session::cookie(cookies, SESSION_COOKIE)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let session = session_id
            .as_deref()
            .and_then(|id| state.sessions().get(id, now_unix()));
        let forwarded_https = header(&parts.headers, "x-forwarded-proto".parse().unwrap())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let origin_https = header(&parts.headers, axum::http::header::ORIGIN)
            .is_some_and(|o| o.starts_with("https://"));
        let path = if parts.method == Method::GET {
            parts.uri.path().to_owned()
        } else {
            "/".to_owned()
        };
        Ok(Ctx {
            lang,
            session,
            session_id,
            secure: forwarded_https || origin_https,
            path,
            query,
        })
    }
}

fn html_response(markup: Markup) -> Response {
    (
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// 303 See Other to `to`.
pub fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

fn error_page(lang: Lang, status: StatusCode, message: String) -> Response {
    let t = lang.text();
    let body = html! { p.error { (message) } };
    (
        status,
        html_response(layout(lang, None, "/", t.error_title, body)),
    )
        .into_response()
}

/// The page around every view.
fn layout(lang: Lang, session: Option<&Session>, path: &str, title: &str, body: Markup) -> Markup {
    let t = lang.text();
    let operator = session.is_some_and(|s| s.caller == Caller::Operator);
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (t.product) }
                link rel="stylesheet" href="/console.css";
            }
            body {
                header.top {
                    a.brand href="/" { (t.product) }
                    @if let Some(s) = session {
                        nav {
                            a href="/apps" { (t.nav_apps) }
                            a href="/requests" { (t.nav_requests) }
                            @if operator { a href="/regions" { (t.nav_regions) } }
                            a href="/usage" { (t.nav_usage) }
                            a href="/allowlist" { (t.nav_allowlist) }
                        }
                        span.who {
                            (t.signed_in_as) " "
                            @match &s.caller {
                                Caller::Operator => { (t.operator) }
                                Caller::Owner(id) => { (t.owner) " " code { (id) } }
                            }
                        }
                        form.inline method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { (t.sign_out) }
                        }
                    } @else {
                        nav { a href="/allowlist" { (t.nav_allowlist) } }
                    }
                    span.lang {
                        (t.language) ": "
                        a href={ (path) "?lang=en" } hreflang="en" lang="en" { "English" }
                        " · "
                        a href={ (path) "?lang=ja" } hreflang="ja" lang="ja" { "日本語" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
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

async fn sign_out(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = ctx.check_form(&form) {
        return r;
    }
    if let Some(id) = &ctx.session_id {
        state.sessions().remove(id);
    }
    let mut resp = redirect("/");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(ctx.secure)) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

/// Unix seconds as a UTC date and time people read.
pub fn when(unix: i64) -> String {
    crate::time::rfc3339(unix)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// "12 s ago", or "never".
pub fn ago(t: &Text, at: Option<i64>, now: i64) -> String {
    match at {
        Some(at) => format!("{} {}", (now - at).max(0), t.seconds_ago),
        None => t.never.to_owned(),
    }
}

/// A form field as text.
pub fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}
