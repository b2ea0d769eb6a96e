//! `POST /v1/ice-servers`: each mode (by name and by number) and region, the token as the
//! ICE credential, every error (401, 403, 400, 503, 413), CORS, and hostile input.

use cloudproxy_proto::token::Token;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{client, edge_body, now, post_raw, Env, OPERATOR_KEY};
use crate::on_both_backends;
use crate::requests::form;

on_both_backends!(
    modes_and_regions,
    tokens_are_checked,
    enablement_and_liveness,
    hostile_input,
    cors_and_openapi
);

const PATH: &str = "/v1/ice-servers";
const PUBLISHED_IP: &str = "203.0.113.10";
const DYNAMIC_IP: &str = "198.51.100.1";

/// An app with its secret: (app id, key id, secret, owner key).
struct App {
    id: String,
    key_id: String,
    secret: String,
    owner: String,
}

impl App {
    /// A token for `channel`/`uid` expiring at `expiry`.
    fn token(&self, expiry: u64) -> Token {
        Token::mint(
            &self.id,
            &self.key_id,
            self.secret.as_bytes(),
            "room-1",
            7,
            expiry,
        )
        .unwrap()
    }

    fn fresh(&self) -> Token {
        self.token(now() + 3600)
    }
}

async fn app(env: &Env) -> App {
    let (_, owner) = env.owner("acme").await;
    let body = env.app(&owner, "calls").await;
    App {
        id: body["app"]["id"].as_str().unwrap().to_owned(),
        key_id: body["credentials"]["key_id"].as_str().unwrap().to_owned(),
        secret: body["credentials"]["secret"].as_str().unwrap().to_owned(),
        owner,
    }
}

/// Files, approves and activates an enablement for `mode` in Japan.
async fn enable(env: &Env, app: &App, mode: &str) {
    let mut f = form("japan", 4, 4, 2);
    f["mode"] = json!(mode);
    env.enable(&app.id, &app.owner, f).await;
}

/// Registers a relay and, if `live`, sends its heartbeat.
async fn relay(env: &Env, id: &str, pool: &str, ip: &str, live: bool) {
    let listeners = match pool {
        "static" => vec![("udp", ip, 3478), ("tcp", ip, 3478), ("tls", ip, 443)],
        _ => vec![("tls", ip, 443)],
    };
    let body = edge_body("japan", pool, 10_000_000, &listeners);
    env.put_edge(id, OPERATOR_KEY, body).await.expect(200);
    if live {
        env.heartbeat(id, 0, 0).await.expect(204);
    }
}

/// A published and a dynamic relay in Japan, both live, and an app enabled for both Force
/// modes there.
async fn world(env: &Env) -> App {
    relay(env, "jp-static", "static", PUBLISHED_IP, true).await;
    relay(env, "jp-dynamic", "dynamic", DYNAMIC_IP, true).await;
    let app = app(env).await;
    for mode in ["force_udp", "force_tcp"] {
        enable(env, &app, mode).await;
    }
    app
}

async fn ask(env: &Env, token: &str, body: Value) -> crate::common::Resp {
    env.post(PATH, Some(token), body).await
}

fn urls(body: &Value) -> Vec<String> {
    body["iceServers"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .flat_map(|s| s["urls"].as_array().unwrap().clone())
        .map(|u| u.as_str().unwrap().to_owned())
        .collect()
}

async fn modes_and_regions(env: Env) {
    let app = world(&env).await;
    let token = app.fresh();
    let encoded = token.encode();
    let expiry: u64 = token.username.split(':').next().unwrap().parse().unwrap();
    let cases = [
        (
            json!("auto"),
            "all",
            format!("turns:{DYNAMIC_IP}:443?transport=tcp"),
        ),
        (
            json!(0),
            "all",
            format!("turns:{DYNAMIC_IP}:443?transport=tcp"),
        ),
        (
            json!("udp"),
            "relay",
            format!("turn:{PUBLISHED_IP}:3478?transport=udp"),
        ),
        (
            json!(3),
            "relay",
            format!("turn:{PUBLISHED_IP}:3478?transport=udp"),
        ),
        (
            json!("tcp"),
            "relay",
            format!("turns:{PUBLISHED_IP}:443?transport=tcp"),
        ),
        (
            json!(5),
            "relay",
            format!("turns:{PUBLISHED_IP}:443?transport=tcp"),
        ),
    ];
    for (mode, policy, url) in cases {
        let body = ask(&env, &encoded, json!({"mode": mode, "region": "japan"}))
            .await
            .expect(200);
        assert_eq!(body["iceTransportPolicy"], policy, "{mode}: {body}");
        assert_eq!(urls(&body), [url], "{mode}: {body}");
        // The credential is the token: it expires with it.
        let server = &body["iceServers"][0];
        assert_eq!(server["username"], token.username.as_str(), "{body}");
        assert_eq!(server["credential"], token.password.as_str(), "{body}");
        assert_eq!(body["expiresAt"], expiry, "{body}");
        assert_eq!(body["region"], "japan");
    }
    assert_eq!(
        ask(&env, &encoded, json!({"mode": 3, "region": "japan"}))
            .await
            .expect(200)["mode"],
        "udp"
    );

    // Another region: Auto still works (the media service's own candidates; no proxy there),
    // a Force mode is not enabled there.
    let body = ask(&env, &encoded, json!({"mode": "auto", "region": "europe"}))
        .await
        .expect(200);
    assert_eq!(urls(&body), Vec::<String>::new(), "{body}");
    assert_eq!(body["iceTransportPolicy"], "all");
    for mode in ["udp", "tcp"] {
        let e = ask(&env, &encoded, json!({"mode": mode, "region": "europe"}))
            .await
            .expect_message(403, "europe");
        assert_eq!(e["error"]["code"], "forbidden", "{e}");
    }

    // Unknown region and mode: 400 naming the field.
    let msg = ask(&env, &encoded, json!({"mode": "auto", "region": "mars"}))
        .await
        .expect_field("region");
    assert!(msg.contains("mars") && msg.contains("japan"), "{msg}");
    for mode in [json!(4), json!("force_tcp"), json!(null), json!(-1)] {
        let msg = ask(&env, &encoded, json!({"mode": mode, "region": "japan"}))
            .await
            .expect_field("mode");
        assert!(msg.contains("auto") && msg.contains('5'), "{mode}: {msg}");
    }
    ask(&env, &encoded, json!({"region": "japan"}))
        .await
        .expect_field("mode");
    ask(&env, &encoded, json!({"mode": "tcp"}))
        .await
        .expect_field("region");
}

async fn tokens_are_checked(env: Env) {
    let app = world(&env).await;
    let body = json!({"mode": "tcp", "region": "japan"});
    let message = |r: crate::common::Resp| {
        let e = r.expect(401);
        assert_eq!(e["error"]["code"], "unauthorized", "{e}");
        e["error"]["message"].as_str().unwrap().to_owned()
    };

    // No token.
    let r = env.call(Method::POST, PATH, None, Some(body.clone())).await;
    assert!(message(r).contains("Bearer"));

    // Bad tokens, each refused with a message that says why.
    let mint = |app_id: &str, key_id: &str, secret: &[u8]| {
        let token = Token::mint(app_id, key_id, secret, "room-1", 7, now() + 60);
        token.unwrap().encode()
    };
    let good = app.fresh();
    // (Only the trailing uid: a random app id may hold ":7" too.)
    let uid_7 = good.username.strip_suffix(":7").unwrap();
    for (what, token, says) in [
        ("malformed", "not-a-token".to_owned(), "malformed"),
        ("expired", app.token(now() - 1).encode(), "expired"),
        // Forged: signed with another secret, and a username altered after signing.
        (
            "another secret",
            mint(&app.id, &app.key_id, b"not-the-secret"),
            "signature",
        ),
        (
            "altered",
            format!("{uid_7}:8#{}", good.password),
            "signature",
        ),
        // An unknown key id and an unknown app.
        (
            "unknown key id",
            mint(&app.id, "k999", app.secret.as_bytes()),
            "key id",
        ),
        ("unknown app", mint("app-nope", &app.key_id, b"s"), "app"),
    ] {
        let why = message(ask(&env, &token, body.clone()).await);
        assert!(why.contains(says), "{what}: {why}");
    }

    // An operator or owner API key is not a user token.
    message(ask(&env, OPERATOR_KEY, body.clone()).await);
    message(ask(&env, &app.owner, body.clone()).await);

    // The good token works; once the app is suspended it does not.
    let encoded = good.encode();
    ask(&env, &encoded, body.clone()).await.expect(200);
    env.app_step(&app.id, "suspend", OPERATOR_KEY)
        .await
        .expect(200);
    message(ask(&env, &encoded, body.clone()).await);
    message(ask(&env, &encoded, json!({"mode": "auto", "region": "japan"})).await);
}

async fn enablement_and_liveness(env: Env) {
    // Only Force TCP is enabled; the published relay has not sent a heartbeat yet.
    relay(&env, "jp-static", "static", PUBLISHED_IP, false).await;
    let app = app(&env).await;
    enable(&env, &app, "force_tcp").await;
    let token = app.fresh().encode();

    ask(&env, &token, json!({"mode": "udp", "region": "japan"}))
        .await
        .expect_message(403, "force_udp");
    let e = ask(&env, &token, json!({"mode": "tcp", "region": "japan"}))
        .await
        .expect(503);
    assert_eq!(e["error"]["code"], "unavailable", "{e}");
    // Auto without a live dynamic relay: the media service's candidates only.
    let body = ask(&env, &token, json!({"mode": "auto", "region": "japan"}))
        .await
        .expect(200);
    assert!(urls(&body).is_empty(), "{body}");

    // A heartbeat makes the published relay listed; a dynamic one is never listed in Force.
    env.heartbeat("jp-static", 0, 0).await.expect(204);
    relay(&env, "jp-dynamic", "dynamic", DYNAMIC_IP, true).await;
    // Force TCP lists the published relay; Auto never lists a published relay.
    for (mode, ip) in [("tcp", PUBLISHED_IP), ("auto", DYNAMIC_IP)] {
        let body = ask(&env, &token, json!({"mode": mode, "region": "japan"}))
            .await
            .expect(200);
        let url = format!("turns:{ip}:443?transport=tcp");
        assert_eq!(urls(&body), [url], "{mode}: {body}");
    }
}

async fn hostile_input(env: Env) {
    let app = world(&env).await;
    let body = json!({"mode": "tcp", "region": "japan"});

    // The largest expiries a token can carry are signed fine and reported as they are.
    for expiry in [i64::MAX as u64, u64::MAX] {
        let token = app.token(expiry).encode();
        let r = ask(&env, &token, body.clone()).await.expect(200);
        assert_eq!(r["expiresAt"], expiry, "{r}");
    }
    // One more digit is not a token.
    let token = app.fresh();
    let past_u64 = format!(
        "18446744073709551616{}#{}",
        &token.username[token.username.find(':').unwrap()..],
        token.password
    );
    ask(&env, &past_u64, body.clone()).await.expect(401);

    // HTML: in a token's channel (not a token), in the region and mode (400, JSON, the value
    // quoted as text), in an unknown field.
    let html = "<script>alert(1)</script>";
    let bad_channel = format!(
        "{}:{}:{}:{html}:7#{}",
        now() + 60,
        app.id,
        app.key_id,
        token.password
    );
    let r = ask(&env, &bad_channel, body.clone()).await;
    assert_eq!(r.content_type, "application/json");
    r.expect(401);
    let token = token.encode();
    for bad in [
        json!({"mode": "tcp", "region": html}),
        json!({"mode": html, "region": "japan"}),
        json!({"mode": "tcp", "region": "japan", html: 1}),
    ] {
        let r = ask(&env, &token, bad).await;
        assert_eq!(r.content_type, "application/json");
        r.expect(400);
    }
    // NUL, a body that is not JSON, and no body at all.
    ask(&env, &token, json!({"mode": "tcp", "region": "japan\u{0}"}))
        .await
        .expect(400);
    for raw in ["", "{", "[]", "\"tcp\""] {
        let r = post_raw(&env.http, &env.base, PATH, &token, raw).await;
        assert_eq!(r.status(), 400, "{raw:?}");
    }
    // A 3 MiB body: 413 with the JSON error, even with a valid token.
    let huge = format!(
        "{{\"mode\":\"tcp\",\"region\":\"japan\",\"pad\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    // (A client of its own: the server closes a connection whose body it refused, and a
    // pooled connection reused after that would fail the next request.)
    let r = post_raw(&client(), &env.base, PATH, &token, huge).await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "payload_too_large", "{e}");
    // A 6 KB bearer value is refused as a token, not a crash.
    ask(&env, &"a".repeat(6000), body.clone()).await.expect(401);
    // The service is still fine.
    ask(&env, &token, body).await.expect(200);
}

async fn cors_and_openapi(env: Env) {
    let app = world(&env).await;
    let token = app.fresh().encode();
    let r = env
        .http
        .request(Method::OPTIONS, format!("{}{PATH}", env.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-methods"], "POST");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    // Answers and errors alike may be read by the page.
    for (key, status) in [(token.as_str(), 200), ("bad", 401)] {
        let r = env
            .http
            .post(format!("{}{PATH}", env.base))
            .bearer_auth(key)
            .json(&json!({"mode": "tcp", "region": "japan"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
    }
    // No cookie is ever asked for: the credentials header is not allowed.
    let r = env
        .http
        .request(Method::OPTIONS, format!("{}{PATH}", env.base))
        .send()
        .await
        .unwrap();
    assert!(r
        .headers()
        .get("access-control-allow-credentials")
        .is_none());

    // The library at its stable URL, on every control plane; the demo page only under `up`.
    let js = env.get("/web/cloudproxy.js", None).await;
    assert_eq!(js.status, 200);
    assert!(
        js.content_type.starts_with("text/javascript"),
        "{}",
        js.content_type
    );
    assert!(js
        .body
        .as_str()
        .unwrap()
        .contains("export function createClient"));
    let dts = env.get("/web/cloudproxy.d.ts", None).await;
    assert_eq!(dts.status, 200);
    env.get("/demo/web", None).await.expect(404);

    let doc = env.get("/openapi.json", None).await.expect(200);
    let op = &doc["paths"]["/v1/ice-servers"]["post"];
    assert!(op.is_object(), "no /v1/ice-servers in the OpenAPI document");
    for status in ["200", "400", "401", "403", "503"] {
        assert!(op["responses"][status].is_object(), "{status}: {op}");
    }
    assert!(doc["components"]["schemas"]["IceServersResponse"].is_object());
}
