//! The cloudproxy control plane: applications and their secrets, Force-mode enablement
//! requests with capacity reservation, regions and relays ("edges"), and the versioned
//! allow-list table — an HTTP API over embedded SQLite (default) or PostgreSQL.
//!
//! ```no_run
//! use cloudproxy_control::{Control, ControlConfig};
//! let control = Control::start(ControlConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     database: "sqlite::memory:".into(),
//!     ..ControlConfig::default()
//! })?;
//! println!("http://{} operator key {}", control.local_addr(), control.operator_key());
//! control.stop();
//! # Ok::<(), cloudproxy_control::ControlError>(())
//! ```
//!
//! In-process tests can also build the [`api::router`] over an [`api::AppState`].
//!
//! ## The API
//!
//! Every path is under `/v1`; `/openapi.json` describes them all. Authentication is
//! `Authorization: Bearer <key>`:
//!
//! - the **operator** key (configuration, or generated and printed at start) manages
//!   everything: owners, every app, approvals, regions, edges;
//! - the **relay** key (configuration, optional) may only call what relays call (marked
//!   "relay" below; the operator's key may too);
//! - an **app owner** key (`POST /v1/owners` returns one) manages only that owner's apps and
//!   their requests.
//!
//! | path | who | what |
//! |---|---|---|
//! | `POST/GET /v1/owners`, `GET /v1/owners/{id}`, `POST /v1/owners/{id}/keys` | operator | owners and their API keys (shown once) |
//! | `POST/GET /v1/apps`, `GET/DELETE /v1/apps/{id}` | both | apps; create returns the App ID and a secret with its key id, shown once |
//! | `POST /v1/apps/{id}/suspend`, `…/resume` | operator | a suspended app's keys leave the relay sync |
//! | `POST /v1/apps/{id}/rotate` | both | a new key; current keys keep working for `grace_seconds` (`not_after`) |
//! | `POST/GET /v1/apps/{id}/requests`, `GET /v1/requests[/{id}]` | both | enablement requests (the application form) |
//! | `POST /v1/requests/{id}/approve`, `…/reject` | operator | approval reserves bandwidth and activates (at once, or at `effective_at`), or rejects with the reason |
//! | `POST /v1/requests/{id}/activate` | both | approved → active before the effective date; active stays active |
//! | `POST /v1/requests/{id}/suspend`, `…/resume`, `…/revoke` | operator | the rest of the lifecycle |
//! | `GET /v1/regions` | operator | capacity, reservations, relays per region |
//! | `PUT/GET/DELETE /v1/edges/{id}`, `GET /v1/edges` | operator (PUT: relay too) | relay registration; the relay key publishes only inside the edge's CIDRs |
//! | `PUT/GET /v1/edges/{id}/cidrs` | operator | the CIDRs the relay key may publish that edge's addresses in |
//! | `GET /v1/sync/apps` | relay | keys (with secrets), app status and active enablements |
//! | `POST /v1/leases`, `…/renew`, `…/release` | relay | admission leases (403, 409 `quota_exceeded`) |
//! | `POST /v1/usage` | relay | a usage report, applied once per `report_id` |
//! | `POST /v1/edges/{id}/heartbeat` | relay | load and allocations; silent relays leave selection |
//! | `GET /v1/proxies?region=` | public | the Auto-mode list: three least-loaded live dynamic relays |
//! | `POST /v1/ice-servers` | user token | a browser's `iceServers` and `iceTransportPolicy` for a mode (auto, udp, tcp) and region ([`api::IceServersResponse`]) |
//! | `GET /v1/apps/{id}/usage` | both | per-day usage, `?from=&to=&format=csv` |
//! | `GET /v1/allowlist[/{region}[/history]]`, `GET /allowlist` | public | the allow-list table: JSON, `?format=csv|nftables|iptables`, history, HTML |
//! | `GET /metrics` | public | Prometheus text: requests by route template and status, syncs, leases, the DB pool |
//! | `GET /web/cloudproxy.js`, `/web/cloudproxy.d.ts` | public | the browser library ([`web`]) |
//! | `GET /demo/web` | public, `cloudproxy up` only | the web demo page, with a demo token per load ([`web`]) |
//! | `GET /`, `/apps`, `/requests`, `/regions`, `/usage`, `/allowlist/{region}` | console session | the web console ([`console`]): sign in with the operator's or an owner's key |
//!
//! Errors all have one shape ([`error`]): 400 names each bad field (`max_users_per_channel`,
//! `listeners[1].ip`, `body`) and, for a number, its range ([`limits`]), 401 for a missing or unknown key, 403 for the wrong role, 404
//! for an unknown id, 409 for a lifecycle step the state does not allow.
//!
//! **Another owner's app is 404, not 403.** A 403 would confirm that the id exists; owners
//! must not learn anything about each other's apps, so an app outside the caller's scope is
//! indistinguishable from one that does not exist. 403 is kept for "your role may never do
//! this", which reveals nothing about any id.
//!
//! ## Pieces
//!
//! - Pure, I/O-free: [`model`] (enums and the bitrate per quality tier), [`capacity`]
//!   (bandwidth estimate and the reserve/reject decision), [`cidr`] (exact CIDR
//!   aggregation), [`allowlist`] (building, diffing and rendering the table), [`time`].
//! - [`store`]: SQLite and PostgreSQL behind one [`store::Store`], one transaction per change,
//!   region locks for reservations.
//! - [`api`]: axum handlers and OpenAPI over [`state`] (what handlers share), [`caller`] (the
//!   roles of bearer keys) and [`extract`] (authentication, JSON bodies with field-named errors,
//!   path ids), which the console uses too.
//! - [`console`]: the web console, server-rendered HTML in English and Japanese.
//! - [`Control`]: the server on its own thread and runtime.
//!
//! ## Relays
//!
//! The relay side lives in `cloudproxy_relay::link`: registration at start, sync every 5 s
//! (a deleted or suspended app's credentials stop working within one interval), leases for
//! Force-mode allocations (TTL [`ControlConfig::lease_ttl`], renewed every 10 s), usage
//! reports every 30 s, heartbeats every 10 s.

pub mod allowlist;
pub mod api;
pub mod caller;
pub mod capacity;
pub mod cidr;
pub mod console;
pub mod enablement;
pub mod error;
pub mod extract;
pub mod limits;
mod metrics;
pub mod model;
pub mod state;
pub mod store;
pub mod time;
pub mod web;

mod server;

pub use api::router;
pub use error::{ApiError, ControlError, StoreError};
pub use server::{Control, ControlConfig};
pub use state::AppState;
pub use web::{DemoSetup, WebDemo};
