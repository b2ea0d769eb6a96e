//! The apps view: the list, creating an app, one app with its keys, rotating its secret and
//! suspending it. A new secret is shown once, in the answer to the POST that made it (never
//! behind a redirect, never cached).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use super::i18n;
use super::page::{field, when, Ctx, FormPost, SignedForm, SignedIn};
use crate::caller::Caller;
use crate::extract::{check_text, PathId};
use crate::limits;
use crate::model::AppStatus;
use crate::state::AppState;
use crate::store::{App, NewSecret};
use crate::time::now_unix;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps", get(list).post(create))
        .route("/apps/{id}", get(show))
        .route("/apps/{id}/rotate", post(rotate))
        .route("/apps/{id}/suspend", post(suspend))
        .route("/apps/{id}/resume", post(resume))
}

async fn list(State(state): State<AppState>, SignedIn { ctx, caller }: SignedIn) -> Response {
    let t = ctx.t();
    let apps = match state.store().list_apps(caller.scope()).await {
        Ok(a) => a,
        Err(e) => return ctx.api_error(e),
    };
    let owners = match caller {
        Caller::Operator => state.store().list_owners().await.unwrap_or_default(),
        Caller::Owner(_) => Vec::new(),
    };
    let operator = caller == Caller::Operator;
    let body = html! {
        p { (t.apps_intro) }
        @if apps.is_empty() {
            p.empty { (t.no_apps) }
        } @else {
            table {
                thead { tr {
                    th { (t.name) } th { (t.app_id) } th { (t.status) }
                    @if operator { th { (t.owner) } }
                    th { (t.keys) } th { (t.created) }
                } }
                tbody {
                    @for app in &apps {
                        tr {
                            td { a.app-name href={ "/apps/" (app.id) } { (app.name) } }
                            td { code { (app.id) } }
                            td { (status_badge(&ctx, app.status)) }
                            @if operator { td { (app.owner_id.as_deref().unwrap_or("—")) } }
                            td { (app.keys.len()) }
                            td { (when(app.created_at)) }
                        }
                    }
                }
            }
        }
        h2 { (t.create_app) }
        form.card method="post" action="/apps" {
            (ctx.csrf_field())
            label for="name" { (t.name) }
            input #name type="text" name="name" maxlength="100" required;
            @if operator {
                label for="owner" { (t.owner) }
                select #owner name="owner_id" {
                    option value="" { (t.owner_none) }
                    @for o in &owners { option value=(o.id) { (o.name) " (" (o.id) ")" } }
                }
            }
            button type="submit" { (t.create) }
        }
    };
    ctx.page(t.nav_apps, body)
}

async fn create(
    State(state): State<AppState>,
    SignedForm { ctx, form, caller }: SignedForm,
) -> Response {
    let name = match check_text("name", field(&form, "name"), limits::MAX_NAME_CHARS) {
        Ok(n) => n,
        Err(e) => return ctx.api_error(e),
    };
    // The same rule as the API: owners create apps for themselves only.
    let owner = match &caller {
        Caller::Operator => Some(field(&form, "owner_id")).filter(|o| !o.is_empty()),
        Caller::Owner(me) => Some(me.as_str()),
    };
    match state.store().create_app(owner, &name, now_unix()).await {
        Ok(created) => secret_page(&ctx, &created.app, &created.credentials),
        Err(e) => ctx.api_error(e),
    }
}

/// The one time a secret is shown.
fn secret_page(ctx: &Ctx, app: &App, secret: &NewSecret) -> Response {
    let t = ctx.t();
    let body = html! {
        p.notice role="status" { (t.secret_once) }
        dl.secret {
            dt { (t.name) } dd.app-name { (app.name) }
            dt { (t.app_id) } dd { code #app-id { (secret.app_id) } }
            dt { (t.key_id) } dd { code #key-id { (secret.key_id) } }
            dt { (t.secret) } dd { code #secret { (secret.secret) } }
        }
        p { a href={ "/apps/" (app.id) } { (t.back_to_app) } }
    };
    ctx.page_with(StatusCode::CREATED, &app.name, body)
}

async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
    SignedIn { ctx, caller }: SignedIn,
) -> Response {
    let t = ctx.t();
    let lang = ctx.lang;
    let app = match state.store().get_app(&id, caller.scope()).await {
        Ok(a) => a,
        Err(e) => return ctx.api_error(e),
    };
    let requests = state
        .store()
        .list_requests(caller.scope(), Some(&id))
        .await
        .unwrap_or_default();
    let operator = caller == Caller::Operator;
    let body = html! {
        dl {
            dt { (t.app_id) } dd { code { (app.id) } }
            dt { (t.status) } dd { (status_badge(&ctx, app.status)) }
            @if let Some(o) = &app.owner_id { dt { (t.owner) } dd { code { (o) } } }
            dt { (t.created) } dd { (when(app.created_at)) }
        }
        h2 { (t.keys) }
        table {
            thead { tr { th { (t.key_id) } th { (t.created) } th { (t.not_after) } } }
            tbody { @for k in &app.keys { tr {
                td { code { (k.key_id) } }
                td { (when(k.created_at)) }
                td { @match k.not_after { Some(n) => { (when(n)) }, None => { (t.current) } } }
            } } }
        }
        div.actions {
            form.card method="post" action={ "/apps/" (app.id) "/rotate" } {
                (ctx.csrf_field())
                label for="grace" { (t.grace_seconds) }
                input #grace type="number" name="grace_seconds" min="0"
                    max=(limits::MAX_GRACE_SECS) value=(limits::DEFAULT_GRACE_SECS);
                button type="submit" { (t.rotate) }
            }
            @if operator {
                @let (step, label) = match app.status {
                    AppStatus::Active => ("suspend", t.suspend),
                    AppStatus::Suspended => ("resume", t.resume),
                };
                form.card method="post" action={ "/apps/" (app.id) "/" (step) } {
                    (ctx.csrf_field())
                    button.warn type="submit" { (label) }
                }
            }
        }
        h2 { (t.nav_requests) }
        @if requests.is_empty() { p.empty { (t.no_requests) } }
        @else {
            table {
                thead { tr { th { (t.region) } th { (t.mode) } th { (t.state) } th { (t.created) } } }
                tbody { @for r in &requests { tr {
                    td { (i18n::region(lang, r.region)) }
                    td { (i18n::mode(lang, r.mode)) }
                    td { (i18n::request_state(lang, r.state)) }
                    td { (when(r.created_at)) }
                } } }
            }
        }
        p {
            a href={ "/requests?app=" (app.id) } { (t.new_request) }
            " · "
            a href={ "/usage?app=" (app.id) } { (t.nav_usage) }
        }
    };
    ctx.page(&app.name, body)
}

async fn rotate(post: FormPost) -> Response {
    let FormPost {
        state,
        ctx,
        id,
        form,
        caller,
    } = post;
    let grace = match field(&form, "grace_seconds").trim() {
        "" => limits::DEFAULT_GRACE_SECS,
        // Text that is no number gets the range's message, as a number outside it does.
        g => g.parse().unwrap_or(-1),
    };
    if let Err(e) = limits::check("grace_seconds", grace, 0, limits::MAX_GRACE_SECS) {
        return ctx.api_error(e);
    }
    let scope = caller.scope();
    let rotated = state
        .store()
        .rotate_secret(&id, scope, grace, now_unix())
        .await;
    match rotated {
        Ok((secret, _)) => match state.store().get_app(&id, scope).await {
            Ok(app) => secret_page(&ctx, &app, &secret),
            Err(e) => ctx.api_error(e),
        },
        Err(e) => ctx.api_error(e),
    }
}

async fn suspend(post: FormPost) -> Response {
    set_status(post, AppStatus::Suspended).await
}

async fn resume(post: FormPost) -> Response {
    set_status(post, AppStatus::Active).await
}

async fn set_status(post: FormPost, status: AppStatus) -> Response {
    if let Err(r) = post.require_operator() {
        return r;
    }
    let store = post.state.store();
    let done = store.set_app_status(&post.id, status, now_unix()).await;
    post.ctx
        .redirect_or_error(done, &format!("/apps/{}", post.id))
}

pub(super) fn status_badge(ctx: &Ctx, s: AppStatus) -> Markup {
    let class = match s {
        AppStatus::Active => "badge ok",
        AppStatus::Suspended => "badge warn",
    };
    html! { span class=(class) { (i18n::app_status(ctx.lang, s)) } }
}
