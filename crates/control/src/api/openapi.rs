//! The OpenAPI document served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{apps, edges, ice_servers, relay, requests};

/// The API's OpenAPI 3.1 description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloudproxy control plane",
        description = "Applications, Force-mode enablement, regions, relays and the allow-list \
                       table. Errors share one shape (ErrorBody) with field-level messages."
    ),
    paths(
        apps::create_owner, apps::list_owners, apps::get_owner, apps::add_owner_key,
        apps::create_app, apps::list_apps, apps::get_app, apps::delete_app,
        apps::suspend_app, apps::resume_app, apps::rotate_secret, apps::sync_apps,
        requests::create_request, requests::list_app_requests, requests::list_requests,
        requests::get_request, requests::approve_request, requests::reject_request,
        requests::activate_request, requests::suspend_request, requests::resume_request,
        requests::revoke_request,
        edges::list_regions, edges::put_edge, edges::list_edges, edges::get_edge,
        edges::delete_edge, edges::put_edge_cidrs, edges::get_edge_cidrs,
        edges::all_allowlists, edges::region_allowlist,
        edges::allowlist_history, edges::allowlist_page,
        relay::acquire_lease, relay::renew_leases, relay::release_leases, relay::report_usage,
        relay::heartbeat, relay::proxies, relay::app_usage,
        ice_servers::ice_servers,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "owners", description = "App owners and their API keys (operator)"),
        (name = "apps", description = "Applications and their secrets"),
        (name = "requests", description = "Force-mode enablement requests"),
        (name = "regions", description = "Regions' capacity (operator)"),
        (name = "edges", description = "Relay registration (operator)"),
        (name = "allowlist", description = "The public allow-list table"),
        (name = "sync", description = "What relays fetch"),
        (name = "relays", description = "Leases, usage reports, heartbeats (relay key) and the \
                                         Auto-mode proxy list (public)"),
        (name = "webrtc", description = "A browser's iceServers for a mode, by the user's token"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub(super) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
