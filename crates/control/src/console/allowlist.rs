//! The public allow-list pages (no sign-in: firewall teams read them): every region's table in
//! effect now (`/allowlist`), and per region the history of versions with their changes and
//! effective dates, announced ones included (`/allowlist/{region}`).

use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};

use super::i18n;
use super::page::{when, Ctx};
use crate::allowlist::{AllowList, ChangeKind, Row};
use crate::error::ApiError;
use crate::extract::PathId;
use crate::model::{Region, Wire};
use crate::state::AppState;
use crate::time::now_unix;

/// `/allowlist`.
pub(crate) async fn public_page(state: &AppState, ctx: &Ctx) -> Response {
    let t = ctx.t();
    let now = now_unix();
    let mut lists = Vec::with_capacity(Region::ALL.len());
    for &region in Region::ALL {
        match state.store().current_allowlist(region, now).await {
            Ok(l) => lists.push(l),
            Err(e) => return ctx.api_error(e),
        }
    }
    let body = html! {
        p { (t.allowlist_intro) " " a href="/v1/allowlist" { "JSON" } }
        @for list in &lists {
            @let slug = list.region.as_str();
            section.region id=(slug) {
                h2 { (i18n::region(ctx.lang, list.region)) }
                p.meta {
                    (t.version) " " (list.version) " · " (t.effective) " " (when(list.effective_at))
                    " · " (t.export) ": "
                    a href={ "/v1/allowlist/" (slug) "?format=csv" } { "CSV" } " "
                    a href={ "/v1/allowlist/" (slug) "?format=nftables" } { "nftables" } " "
                    a href={ "/v1/allowlist/" (slug) "?format=iptables" } { "iptables" } " · "
                    a href={ "/allowlist/" (slug) } { (t.history) }
                }
                @if list.rows.is_empty() { p.empty { (t.no_published) } }
                @else { (table(ctx, &list.rows)) }
            }
        }
    };
    ctx.page(t.allowlist_title, body)
}

/// `/allowlist/{region}`: every version, newest first.
pub(super) async fn history_page(
    State(state): State<AppState>,
    ctx: Ctx,
    PathId(region): PathId,
) -> Response {
    let t = ctx.t();
    let Some(region) = Region::parse(&region) else {
        return ctx.api_error(ApiError::not_found("no such region"));
    };
    let versions: Vec<AllowList> = match state.store().allowlist_history(region).await {
        Ok(v) => v,
        Err(e) => return ctx.api_error(e),
    };
    let now = now_unix();
    let body = html! {
        p { a href="/allowlist" { (t.allowlist_title) } " · " a href={ "/v1/allowlist/" (region.as_str()) "/history" } { "JSON" } }
        @if versions.is_empty() { p.empty { (t.no_published) } }
        @for v in &versions {
            section.version {
                h2 {
                    (t.version) " " (v.version)
                    @if v.effective_at > now { " " span.badge.warn { (t.upcoming) } }
                }
                p.meta { (t.effective) " " (when(v.effective_at)) " · " (t.created) " " (when(v.created_at)) }
                @if !v.changes.is_empty() {
                    h3 { (t.changes) }
                    ul.changes { @for c in &v.changes {
                        li class={ "change-" (if c.kind == ChangeKind::Added { "added" } else { "removed" }) } {
                            @match c.kind { ChangeKind::Added => { (t.added) }, ChangeKind::Removed => { (t.removed) } }
                            ": " (i18n::service(ctx.lang, c.row.service)) " "
                            (c.row.ips.join(" ")) " " (c.row.protocol.as_str().to_ascii_uppercase()) " "
                            (ports(&c.row))
                        }
                    } }
                }
                @if v.rows.is_empty() { p.empty { (t.no_published) } }
                @else { (table(&ctx, &v.rows)) }
            }
        }
    };
    let title = format!("{} — {}", t.allowlist_title, i18n::region(ctx.lang, region));
    ctx.page(&title, body)
}

fn table(ctx: &Ctx, rows: &[Row]) -> Markup {
    let t = ctx.t();
    html! {
        table.allowlist {
            thead { tr { th { (t.service_type) } th { (t.ip_addresses) } th { (t.protocol) } th { (t.ports) } } }
            tbody { @for row in rows { tr {
                td { (i18n::service(ctx.lang, row.service)) }
                td { @for ip in &row.ips { code { (ip) } br; } }
                td { (row.protocol.as_str().to_ascii_uppercase()) }
                td { (ports(row)) }
            } } }
        }
    }
}

fn ports(row: &Row) -> String {
    row.ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
