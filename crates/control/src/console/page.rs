//! What every console page is made of: the request context ([`Ctx`]: language, session,
//! query), the layout around every view, redirects, error pages, and the formatting of dates
//! and form fields.

use std::collections::HashMap;

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::header::{ACCEPT_LANGUAGE, CONTENT_TYPE, COOKIE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::i18n::{Lang, Text};
use super::session::{self, Session, SESSION_COOKIE};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::extract::PathId;
use crate::state::AppState;
use crate::time::now_unix;

pub(super) fn header(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// One query parameter, percent-decoded.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
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
pub(crate) struct Ctx {
    /// The language the page is written in.
    pub lang: Lang,
    /// The session, if the cookie names a live one.
    pub session: Option<Session>,
    /// The session cookie's value (for sign-out).
    pub(super) session_id: Option<String>,
    /// Whether the browser speaks TLS to us (see the module doc).
    pub(super) secure: bool,
    /// The path of a GET (the language switch links back to it).
    path: String,
    /// The query string's parameters, percent-decoded.
    pub query: HashMap<String, String>,
}

impl Ctx {
    /// Every string of the page's language.
    pub(crate) fn t(&self) -> &'static Text {
        self.lang.text()
    }

    /// The caller, or a redirect to the sign-in page when there is no session.
    // The error is the response itself, handed straight back to axum once per request.
    #[allow(clippy::result_large_err)]
    pub(crate) fn caller(&self) -> Result<&Caller, Response> {
        match &self.session {
            Some(s) => Ok(&s.caller),
            None => Err(redirect("/")),
        }
    }

    /// The session of a POST whose `csrf` field is this session's token; 403 otherwise.
    #[allow(clippy::result_large_err)]
    pub(crate) fn check_form(&self, form: &HashMap<String, String>) -> Result<&Session, Response> {
        match &self.session {
            Some(s) if s.csrf_ok(form.get("csrf").map(String::as_str)) => Ok(s),
            _ => Err(self.error(StatusCode::FORBIDDEN, self.t().csrf_refused)),
        }
    }

    /// The hidden CSRF field of a form.
    pub(crate) fn csrf_field(&self) -> Markup {
        let token = self.session.as_ref().map_or("", |s| s.csrf.as_str());
        html! { input type="hidden" name="csrf" value=(token); }
    }

    /// A page with the header, navigation and language switch.
    pub(crate) fn page(&self, title: &str, body: Markup) -> Response {
        self.page_with(StatusCode::OK, title, body)
    }

    /// A page with the header, navigation and language switch, answered with `status`.
    pub(crate) fn page_with(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        let markup = layout(self.lang, self.session.as_ref(), &self.path, title, body);
        (status, html_response(markup)).into_response()
    }

    /// An error page.
    pub(crate) fn error(&self, status: StatusCode, message: &str) -> Response {
        let t = self.t();
        let body = html! { p.error { (message) } p { a href="/apps" { (t.nav_apps) } } };
        self.page_with(status, t.error_title, body)
    }

    /// The answer to a form that changed something: 303 to `to` when `done` succeeded, the
    /// error page otherwise.
    pub(crate) fn redirect_or_error<T>(
        &self,
        done: Result<T, impl Into<ApiError>>,
        to: &str,
    ) -> Response {
        match done {
            Ok(_) => redirect(to),
            Err(e) => self.api_error(e),
        }
    }

    /// An API error (from the store or a check) as a page: its status, and its message with
    /// every field named.
    pub(crate) fn api_error(&self, e: impl Into<ApiError>) -> Response {
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

/// A page for signed-in browsers only: the page context and who signed in; a browser without
/// a live session is redirected to the sign-in page instead.
pub(super) struct SignedIn {
    /// The request's language and session.
    pub(super) ctx: Ctx,
    /// Who signed in: the operator or an app owner.
    pub(super) caller: Caller,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Ok(ctx) = Ctx::from_request_parts(parts, state).await;
        let caller = ctx.caller()?.clone();
        Ok(SignedIn { ctx, caller })
    }
}

/// A console form posted by a signed-in browser: the page context, the form's fields and who
/// signed in; refused with 403 unless the form carries the session's CSRF token.
pub(super) struct SignedForm {
    /// The request's language and session.
    pub(super) ctx: Ctx,
    /// The posted fields.
    pub(super) form: HashMap<String, String>,
    /// Who signed in to the session that posted the form.
    pub(super) caller: Caller,
}

impl FromRequest<AppState> for SignedForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Ok(ctx) = Ctx::from_request_parts(&mut parts, state).await;
        let req = Request::from_parts(parts, body);
        let Form(form) = Form::<HashMap<String, String>>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let caller = ctx.check_form(&form)?.caller.clone();
        Ok(SignedForm { ctx, form, caller })
    }
}

/// A console form posted about one record (`/apps/{id}/…`, `/requests/{id}/…`) by a signed-in
/// browser: the id in the path, then the [`SignedForm`] (refused with 403 unless the form
/// carries the session's CSRF token).
pub(super) struct FormPost {
    /// What every handler shares.
    pub(super) state: AppState,
    /// The request's language and session.
    pub(super) ctx: Ctx,
    /// The record the form acts on.
    pub(super) id: String,
    /// The posted fields.
    pub(super) form: HashMap<String, String>,
    /// Who signed in to the session that posted the form.
    pub(super) caller: Caller,
}

impl FormPost {
    /// The forbidden page unless the form was posted from the operator's session.
    #[allow(clippy::result_large_err)]
    pub(super) fn require_operator(&self) -> Result<(), Response> {
        self.caller
            .require_operator()
            .map_err(|e| self.ctx.api_error(e))
    }
}

impl FromRequest<AppState> for FormPost {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let PathId(id) = PathId::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let req = Request::from_parts(parts, body);
        let SignedForm { ctx, form, caller } = SignedForm::from_request(req, state).await?;
        Ok(FormPost {
            state: state.clone(),
            ctx,
            id,
            form,
            caller,
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
pub(super) fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

pub(super) fn error_page(lang: Lang, status: StatusCode, message: String) -> Response {
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

/// Unix seconds as a UTC date and time people read.
pub(super) fn when(unix: i64) -> String {
    crate::time::rfc3339(unix)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// "12 s ago", or "never".
pub(super) fn ago(t: &Text, at: Option<i64>, now: i64) -> String {
    match at {
        Some(at) => format!("{} {}", (now - at).max(0), t.seconds_ago),
        None => t.never.to_owned(),
    }
}

/// A form field as text.
pub(super) fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}
