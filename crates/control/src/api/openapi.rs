//! The OpenAPI document served at `/openapi.json`.
//!
//! What every operation shares is stated once here rather than on each handler: the bearer
//! key (the document's default security; the public operations say `security(())`), and the
//! error shape, [`ErrorBody`], as the `4XX` response of every `/v1/` operation that lists no
//! errors of its own.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

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
        requests::step_request,
        edges::list_regions, edges::put_edge, edges::list_edges, edges::get_edge,
        edges::delete_edge, edges::put_edge_cidrs, edges::get_edge_cidrs,
        edges::all_allowlists, edges::region_allowlist,
        edges::allowlist_history, edges::allowlist_page,
        relay::acquire_lease, relay::renew_leases, relay::release_leases, relay::report_usage,
        relay::heartbeat, relay::proxies, relay::app_usage,
        ice_servers::ice_servers,
    ),
    components(schemas(ErrorBody)),
    security(("bearer" = [])),
    modifiers(&BearerAuth, &ErrorResponses),
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

/// `4XX`: [`ErrorBody`] on every `/v1/` operation that does not list its error statuses.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = ResponseBuilder::new()
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                if !responses.keys().any(|status| status.starts_with('4')) {
                    responses.insert("4XX".into(), error.clone().into());
                }
            }
        }
    }
}

pub(super) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
