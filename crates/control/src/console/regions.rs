//! The regions and relays view (operator only): each region's static capacity against its
//! reservations, and every relay with its health (a heartbeat within the heartbeat timeout),
//! last heartbeat, the age of its last sync with this control plane, load against capacity,
//! allocations and pool.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;

use super::i18n;
use super::page::{ago, SignedIn};
use crate::state::AppState;
use crate::time::now_unix;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/regions", get(view))
}

async fn view(State(state): State<AppState>, SignedIn { ctx, caller }: SignedIn) -> Response {
    let (t, lang) = (ctx.t(), ctx.lang);
    if caller.require_operator().is_err() {
        return ctx.error(StatusCode::FORBIDDEN, t.operator_only);
    }
    let (regions, edges) = match (
        state.store().region_summaries().await,
        state.store().list_edges(None).await,
    ) {
        (Ok(r), Ok(e)) => (r, e),
        (Err(e), _) | (_, Err(e)) => return ctx.api_error(e),
    };
    let now = now_unix();
    let timeout = state.settings().heartbeat_timeout;
    let body = html! {
        p { (t.regions_intro) }
        table {
            thead { tr {
                th { (t.region) } th { (t.relays) } th { (t.static_capacity) }
                th { (t.reserved) } th { (t.available) }
            } }
            tbody { @for r in &regions { tr {
                td { (i18n::region(lang, r.region)) }
                td.num { (r.static_edges) " + " (r.dynamic_edges) }
                td.num { (r.static_capacity_kbps) }
                td.num { (r.reserved_kbps) }
                td.num { (r.available_kbps) }
            } } }
        }
        h2 { (t.relays) }
        @if edges.is_empty() { p.empty { (t.no_relays) } }
        @else {
            table {
                thead { tr {
                    th { (t.relay) } th { (t.region) } th { (t.pool) } th { (t.health) }
                    th { (t.last_heartbeat) } th { (t.sync_age) } th { (t.load) }
                    th { (t.allocations) } th { (t.listeners) }
                } }
                tbody { @for e in &edges {
                    @let live = e.heartbeat_at.is_some_and(|h| now - h <= timeout);
                    @let percent = (e.load_kbps.saturating_mul(100)).checked_div(e.capacity_kbps).unwrap_or(0).min(100);
                    tr {
                        td { code { (e.id) } }
                        td { (i18n::region(lang, e.region)) }
                        td { (i18n::pool(lang, e.pool)) }
                        td { @if live { span.badge.ok { (t.live) } } @else { span.badge.warn { (t.silent) } } }
                        td { (ago(t, e.heartbeat_at, now)) }
                        td { (ago(t, state.edge_synced_at(&e.id), now)) }
                        td {
                            (e.load_kbps) " / " (e.capacity_kbps)
                            progress max="100" value=(percent) { (percent) "%" }
                        }
                        td.num { (e.allocations) }
                        td { @for l in &e.listeners { code { (l.transport.as_str()) " " (l.ip) ":" (l.port) } br; } }
                    }
                } }
            }
        }
    };
    ctx.page(t.nav_regions, body)
}
