//! The browser library and its demo page.
//!
//! Every control plane serves the library at a stable URL — `/web/cloudproxy.js` (an ES
//! module without dependencies) and `/web/cloudproxy.d.ts` — so a page can import it from the
//! deployment it talks to; the files are the repository's `web/`, compiled in.
//!
//! `/demo/web` exists only when the binary gives a [`WebDemo`] (`cloudproxy up` does; a
//! deployment's `cloudproxy control` does not): two tabs join one channel in any mode and show
//! the events, the path in use and the RTT. Each load of the page carries a fresh token of the
//! demo app, for `?uid=` (default: a random uid, so two tabs differ) in `?channel=` (default
//! `demo-room`), valid one hour: whoever can load the page gets a token, which is what a local
//! demo wants and why a deployment has no such page.

use std::sync::{Arc, OnceLock};

use axum::extract::{Query, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use cloudproxy_proto::token::Token;
use serde::Deserialize;

const LIBRARY: &str = include_str!("../../../web/cloudproxy.js");
const TYPES: &str = include_str!("../../../web/cloudproxy.d.ts");
const DEMO_JS: &str = include_str!("../../../web/demo.js");
const DEMO_CSS: &str = include_str!("../../../web/demo.css");

/// The demo page's script may call any origin (the media service listens on its own port),
/// and nothing else is loosened.
const DEMO_CSP: &str = "default-src 'self'; script-src 'self'; connect-src *; \
     style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// What the demo page needs: the app whose tokens it hands out and where the media service's
/// WebRTC endpoint is. Filled once, after the control plane started (the app is created
/// through its API, and the media service starts after it).
#[derive(Clone, Default)]
pub struct WebDemo(Arc<OnceLock<DemoSetup>>);

impl std::fmt::Debug for WebDemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebDemo")
            .field("ready", &self.0.get().is_some())
            .finish()
    }
}

/// The demo's app and services.
#[derive(Clone)]
pub struct DemoSetup {
    /// The demo app's App ID, which the page's tokens are minted for.
    pub app_id: String,
    /// The id of the app key that signs the demo tokens.
    pub key_id: String,
    /// That key's secret (base64url), kept in this process to mint a token per page load.
    pub secret: String,
    /// The media service's HTTP endpoint, as the browser reaches it: `http://127.0.0.1:7001`.
    pub media_url: String,
    /// The region the demo app is enabled in.
    pub region: String,
}

impl WebDemo {
    /// Fills the demo in; later calls change nothing (returns `false`).
    pub fn set(&self, setup: DemoSetup) -> bool {
        self.0.set(setup).is_ok()
    }
}

/// `/web/cloudproxy.js` and `/web/cloudproxy.d.ts`, on every control plane.
pub(crate) fn library_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/web/cloudproxy.js", asset(JAVASCRIPT, LIBRARY))
        .route("/web/cloudproxy.d.ts", asset(TYPESCRIPT, TYPES))
}

/// `/demo/web` and its script and style.
pub(crate) fn demo_routes(demo: WebDemo) -> Router {
    Router::new()
        .route("/demo/web", get(page))
        .route("/demo/web/demo.js", asset(JAVASCRIPT, DEMO_JS))
        .route("/demo/web/demo.css", asset(CSS, DEMO_CSS))
        .with_state(demo)
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TYPESCRIPT: &str = "application/typescript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `GET` of a file compiled into the binary: any origin may load it (a page imports the library
/// from the deployment it talks to), and browsers revalidate it rather than keep an old copy.
fn asset<S: Clone + Send + Sync + 'static>(
    content_type: &'static str,
    body: &'static str,
) -> MethodRouter<S> {
    get(move || async move { asset_response(content_type, body) })
}

fn asset_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    uid: Option<u32>,
    channel: Option<String>,
}

async fn page(State(demo): State<WebDemo>, Query(q): Query<PageQuery>) -> Response {
    let Some(setup) = demo.0.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the demo is starting; reload in a moment",
        )
            .into_response();
    };
    let uid = q.uid.unwrap_or_else(|| rand::random_range(1000..100_000));
    let channel = q.channel.unwrap_or_else(|| "demo-room".into());
    let expiry = crate::time::now_unix().max(0) as u64 + 3600;
    // The channel is checked by minting: 1 to 64 of [A-Za-z0-9_.-], so it is safe in HTML.
    let token = match Token::mint(
        &setup.app_id,
        &setup.key_id,
        setup.secret.as_bytes(),
        &channel,
        uid,
        expiry,
    ) {
        Ok(t) => t.encode(),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("?channel=: {e}")).into_response(),
    };
    let html = PAGE
        .replace("{media}", &escape(&setup.media_url))
        .replace("{region}", &escape(&setup.region))
        .replace("{channel}", &escape(&channel))
        .replace("{uid}", &uid.to_string())
        .replace("{token}", &escape(&token));
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, DEMO_CSP),
            (CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cloudproxy — web demo</title>
<link rel="stylesheet" href="/demo/web/demo.css">
</head>
<body>
<main id="demo" data-media="{media}" data-region="{region}" data-channel="{channel}" data-uid="{uid}" data-token="{token}">
<header>
  <h1 data-i18n="title">cloudproxy web demo</h1>
  <nav><a href="?lang=en">English</a> · <a href="?lang=ja">日本語</a></nav>
</header>
<section class="controls">
  <p><span data-i18n="channel">Channel</span> <code id="channel">{channel}</code> · uid <code id="uid">{uid}</code></p>
  <label><span data-i18n="mode">Mode</span>
    <select id="mode">
      <option value="0" data-i18n="auto">Auto (direct, proxy fallback)</option>
      <option value="3" data-i18n="udp">Force UDP — startProxyServer(3)</option>
      <option value="5" data-i18n="tcp">Force TCP — startProxyServer(5)</option>
    </select>
  </label>
  <button id="join" data-i18n="join">Join</button>
  <button id="leave" disabled data-i18n="leave">Leave</button>
</section>
<section class="status">
  <dl>
    <dt data-i18n="state">State</dt><dd id="state">disconnected</dd>
    <dt data-i18n="path">Path in use</dt><dd id="path">—</dd>
    <dt data-i18n="proxy">Using the cloud proxy</dt><dd id="using">—</dd>
    <dt data-i18n="rtt">RTT</dt><dd id="rtt">—</dd>
    <dt data-i18n="members">Members</dt><dd id="members">—</dd>
    <dt data-i18n="received">Messages received</dt><dd id="received">0</dd>
  </dl>
</section>
<section class="send">
  <input id="text" value="hello" aria-label="message">
  <button id="send" disabled data-i18n="send">Send</button>
</section>
<section>
  <h2 data-i18n="events">Events</h2>
  <ol id="events"></ol>
  <h2 data-i18n="messages">Messages</h2>
  <ol id="messages"></ol>
</section>
</main>
<script type="module" src="/demo/web/demo.js"></script>
</body>
</html>
"#;
