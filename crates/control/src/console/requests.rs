//! The enablement requests view: the application form with every field of the product page,
//! the list, and the operator's decisions. Approving reserves the bandwidth and enables the
//! mode: the console approves, then activates what approval left `approved` (an approval
//! that already activates leaves nothing to do).

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::html;

use super::i18n;
use super::page::{field, FormPost, SignedForm, SignedIn};
use crate::caller::Caller;
use crate::enablement::{EnablementInput, Step};
use crate::error::ApiError;
use crate::extract::{check_fields, check_text};
use crate::limits;
use crate::model::{Mode, QualityTier, Region, RequestState, Sdk, Wire};
use crate::state::AppState;
use crate::time::now_unix;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/requests", get(list).post(create))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/reject", post(reject))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/requests/{id}/activate", post(activate))
}

async fn list(State(state): State<AppState>, SignedIn { ctx, caller }: SignedIn) -> Response {
    let (t, lang) = (ctx.t(), ctx.lang);
    let scope = caller.scope();
    let (requests, apps) = match (
        state.store().list_requests(scope, None).await,
        state.store().list_apps(scope).await,
    ) {
        (Ok(r), Ok(a)) => (r, a),
        (Err(e), _) | (_, Err(e)) => return ctx.api_error(e),
    };
    let operator = caller == Caller::Operator;
    let name_of = |id: &str| {
        apps.iter()
            .find(|a| a.id == id)
            .map_or(id.to_owned(), |a| a.name.clone())
    };
    let chosen = ctx.query.get("app").map(String::as_str);
    let body = html! {
        p { (t.requests_intro) }
        @if requests.is_empty() { p.empty { (t.no_requests) } }
        @else {
            table.requests {
                thead { tr {
                    th { (t.app) } th { (t.region) } th { (t.mode) } th { (t.sdk) }
                    th { (t.use_case) } th { (t.max_channels) } th { (t.max_users) }
                    th { (t.max_proxy_users) } th { (t.quality) } th { (t.estimate) }
                    th { (t.state) } th { (t.actions) }
                } }
                tbody { @for r in &requests { tr id={ "req-" (r.id) } {
                    td { a.app-name href={ "/apps/" (r.app_id) } { (name_of(&r.app_id)) } }
                    td { (i18n::region(lang, r.region)) }
                    td { (i18n::mode(lang, r.mode)) }
                    td { (i18n::sdk(lang, r.sdk)) }
                    td { (r.use_case) }
                    td.num { (r.max_concurrent_channels) }
                    td.num { (r.max_users_per_channel) }
                    td.num { (r.max_proxy_users_per_channel) }
                    td { (i18n::quality(lang, r.quality)) }
                    td.num { (r.estimated_kbps) }
                    td {
                        span class={ "badge state-" (r.state.as_str()) } { (i18n::request_state(lang, r.state)) }
                        @if let Some(reason) = &r.reason { br; small { (t.reason) ": " (reason) } }
                    }
                    td.actions {
                        @if operator && r.state == RequestState::Submitted {
                            form.inline method="post" action={ "/requests/" (r.id) "/approve" } {
                                (ctx.csrf_field())
                                button.approve type="submit" { (t.approve) }
                            }
                            form.inline method="post" action={ "/requests/" (r.id) "/reject" } {
                                (ctx.csrf_field())
                                input type="text" name="reason" placeholder=(t.reason) required maxlength="500";
                                button.warn type="submit" { (t.reject) }
                            }
                        }
                        @if r.state == RequestState::Approved {
                            form.inline method="post" action={ "/requests/" (r.id) "/activate" } {
                                (ctx.csrf_field())
                                button type="submit" { (t.activate) }
                            }
                        }
                        @if operator && r.state.reserves() {
                            form.inline method="post" action={ "/requests/" (r.id) "/revoke" } {
                                (ctx.csrf_field())
                                button.warn type="submit" { (t.revoke) }
                            }
                        }
                    }
                } } }
            }
        }
        h2 { (t.new_request) }
        @if apps.is_empty() { p.empty { (t.need_an_app) } }
        @else {
            form.card.grid method="post" action="/requests" {
                (ctx.csrf_field())
                label for="app" { (t.app) }
                select #app name="app_id" required {
                    @for a in &apps {
                        option value=(a.id) selected[chosen == Some(a.id.as_str())] { (a.name) " (" (a.id) ")" }
                    }
                }
                label for="region" { (t.region) }
                select #region name="region" {
                    @for r in Region::ALL { option value=(r.as_str()) { (i18n::region(lang, *r)) } }
                }
                label for="sdk" { (t.sdk) }
                select #sdk name="sdk" {
                    @for s in Sdk::ALL { option value=(s.as_str()) { (i18n::sdk(lang, *s)) } }
                }
                label for="use_case" { (t.use_case) }
                input #use_case type="text" name="use_case" maxlength="200" required placeholder=(t.use_case_hint);
                label for="channels" { (t.max_channels) }
                input #channels type="number" name="max_concurrent_channels" min="1" max="1000000" value="10" required;
                label for="users" { (t.max_users) }
                input #users type="number" name="max_users_per_channel" min="1" max="100000" value="4" required;
                label for="proxy_users" { (t.max_proxy_users) }
                input #proxy_users type="number" name="max_proxy_users_per_channel" min="1" max="100000" value="2" required;
                label for="quality" { (t.quality) }
                select #quality name="quality" {
                    @for q in QualityTier::ALL {
                        option value=(q.as_str()) selected[*q == QualityTier::P720] { (i18n::quality(lang, *q)) }
                    }
                }
                label for="mode" { (t.mode) }
                select #mode name="mode" {
                    @for m in Mode::ALL { option value=(m.as_str()) { (i18n::mode(lang, *m)) } }
                }
                button type="submit" { (t.submit) }
            }
        }
    };
    ctx.page(t.nav_requests, body)
}

/// The form's fields, each checked and named on error as the API names them.
fn parse_form(form: &HashMap<String, String>) -> Result<EnablementInput, ApiError> {
    let mut errors = Vec::new();
    let mut bad = |name: &str, message: String| {
        errors.push(crate::error::FieldError {
            field: name.into(),
            message,
        })
    };
    fn choice<T: Wire>(form: &HashMap<String, String>, name: &str) -> Result<T, String> {
        T::parse(field(form, name)).ok_or_else(|| format!("unknown value '{}'", field(form, name)))
    }
    let count = |name: &str| -> Result<u32, String> {
        field(form, name)
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("'{}' is not a whole number", field(form, name)))
    };
    let region = choice::<Region>(form, "region").map_err(|m| bad("region", m));
    let sdk = choice::<Sdk>(form, "sdk").map_err(|m| bad("sdk", m));
    let quality = choice::<QualityTier>(form, "quality").map_err(|m| bad("quality", m));
    let mode = choice::<Mode>(form, "mode").map_err(|m| bad("mode", m));
    let channels = count("max_concurrent_channels").map_err(|m| bad("max_concurrent_channels", m));
    let users = count("max_users_per_channel").map_err(|m| bad("max_users_per_channel", m));
    let proxy =
        count("max_proxy_users_per_channel").map_err(|m| bad("max_proxy_users_per_channel", m));
    match (region, sdk, quality, mode, channels, users, proxy) {
        (Ok(region), Ok(sdk), Ok(quality), Ok(mode), Ok(c), Ok(u), Ok(p)) => {
            let input = EnablementInput {
                region,
                sdk,
                use_case: field(form, "use_case").trim().to_owned(),
                max_concurrent_channels: c,
                max_users_per_channel: u,
                max_proxy_users_per_channel: p,
                quality,
                mode,
            };
            check_fields(input.validate())?;
            Ok(input)
        }
        _ => Err(ApiError::fields(errors)),
    }
}

async fn create(
    State(state): State<AppState>,
    SignedForm { ctx, form, caller }: SignedForm,
) -> Response {
    let input = match parse_form(&form) {
        Ok(i) => i,
        Err(e) => return ctx.api_error(e),
    };
    let app = field(&form, "app_id");
    let done = state
        .store()
        .create_request(app, caller.scope(), &input, now_unix())
        .await;
    ctx.redirect_or_error(done, "/requests")
}

async fn approve(post: FormPost) -> Response {
    if let Err(r) = post.require_operator() {
        return r;
    }
    // Approval activates at once (the API's approve takes an effective date; the console's
    // button means now).
    let store = post.state.store();
    let done = store.approve_request(&post.id, None, now_unix()).await;
    post.ctx.redirect_or_error(done, "/requests")
}

async fn reject(post: FormPost) -> Response {
    if let Err(r) = post.require_operator() {
        return r;
    }
    let reason = match check_text(
        "reason",
        field(&post.form, "reason"),
        limits::MAX_REASON_CHARS,
    ) {
        Ok(r) => r,
        Err(e) => return post.ctx.api_error(e),
    };
    let store = post.state.store();
    let done = store.reject_request(&post.id, &reason, now_unix()).await;
    post.ctx.redirect_or_error(done, "/requests")
}

async fn revoke(post: FormPost) -> Response {
    step(post, Step::Revoke).await
}

async fn activate(post: FormPost) -> Response {
    step(post, Step::Activate).await
}

/// A lifecycle step with the API's rules: owners may only activate their own requests.
async fn step(post: FormPost, step: Step) -> Response {
    if step.needs_operator() {
        if let Err(r) = post.require_operator() {
            return r;
        }
    }
    let (store, scope) = (post.state.store(), post.caller.scope());
    let done = store.step_request(&post.id, scope, step, now_unix()).await;
    post.ctx.redirect_or_error(done, "/requests")
}
