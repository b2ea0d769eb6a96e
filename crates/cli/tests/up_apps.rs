//! `cloudproxy up` follows the control plane's apps: an app created with `cloudproxy admin`
//! joins through `up`'s relay (Force TCP, TLS) within one sync, and `cloudproxy media
//! --control URL` admits it too, while a token of an app it never heard of is refused.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::control::Credential;
use common::up::{start_up, Up};
use common::{cloudproxy_bin, http, join_summary, reserve_port, run_bounded, ChildGuard, TempDir};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(90);

fn api(up: &Up, method: &str, path: &str, body: &str) -> Value {
    let addr = up.control.trim_start_matches("http://");
    let (code, raw) = http(addr, method, path, Some(&up.operator_key), body);
    assert!((200..300).contains(&code), "{method} {path}: {raw}");
    let body = &raw[raw.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Creates an app with `cloudproxy admin`; returns (app id, key id, secret).
fn admin_create_app(up: &Up, name: &str) -> Credential {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["admin", "--control", &up.control, "--key", &up.operator_key])
        .args(["--json", "apps", "create", name]);
    let run = run_bounded("cloudproxy admin apps create", cmd, PATIENCE);
    assert!(run.success(), "admin apps create:\n{}", run.output);
    let v: Value = serde_json::from_str(run.output.lines().find(|l| l.starts_with('{')).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", run.output));
    Credential::from_json(&v["credentials"])
}

/// Files, approves and (when approval left it approved) activates a Force TCP request.
fn enable_force_tcp(up: &Up, app: &str) {
    let form = r#"{"region":"japan","sdk":"native","use_case":"test","max_concurrent_channels":2,
        "max_users_per_channel":2,"max_proxy_users_per_channel":2,"quality":"720p","mode":"force_tcp"}"#;
    let r = api(up, "POST", &format!("/v1/apps/{app}/requests"), form);
    let id = r["id"].as_str().unwrap();
    let r = api(up, "POST", &format!("/v1/requests/{id}/approve"), "{}");
    if r["state"] == "approved" {
        api(up, "POST", &format!("/v1/requests/{id}/activate"), "{}");
    }
}

fn join(
    media: SocketAddr,
    app: &str,
    tok: &str,
    uid: u32,
    proxy: Option<SocketAddr>,
) -> (bool, String) {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["join", "--media", &media.to_string(), "--app-id", app])
        .args([
            "--channel",
            "room",
            "--uid",
            &uid.to_string(),
            "--token",
            tok,
        ])
        .args(["--send", "5", "--join-timeout-ms", "15000"]);
    match proxy {
        Some(p) => cmd.args(["--mode", "tcp", "--proxy", &p.to_string()]),
        None => cmd.args(["--mode", "auto"]),
    };
    let run = run_bounded("cloudproxy join", cmd, PATIENCE);
    (run.success(), run.output)
}

fn count(guard: &ChildGuard, needle: &str) -> usize {
    guard.output.text().matches(needle).count()
}

#[test]
fn an_app_created_with_admin_joins_through_up_within_one_sync() {
    let dir = TempDir::new("up-apps");
    let up = start_up(&dir.0.join("data"), PATIENCE);
    const SYNCED: &str = "media service: app keys from";
    let before = count(&up.guard, SYNCED);

    let created = Instant::now();
    let cred = admin_create_app(&up, "made-with-admin");
    let app = cred.app_id.clone();
    enable_force_tcp(&up, &app);
    // One sync of each: the media service's keys changed, and the relay's sync cache holds
    // the app with its Force TCP enablement.
    up.guard.wait_until(
        PATIENCE,
        "the media service never synced the new app",
        || count(&up.guard, SYNCED) > before,
    );
    let media_synced = created.elapsed();
    let cache = up.data.join("relay-sync.json");
    up.guard
        .wait_until(PATIENCE, "the relay never synced the enablement", || {
            let text = std::fs::read_to_string(&cache).unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            v["apps"].as_array().is_some_and(|apps| {
                apps.iter().any(|a| {
                    a["app_id"] == app.as_str()
                        && a["enablements"]
                            .as_array()
                            .is_some_and(|e| e.iter().any(|e| e["mode"] == "force_tcp"))
                })
            })
        });
    let relay_synced = created.elapsed();
    // The first attempt after one sync must work: no retries.
    let (ok, out) = join(up.media, &app, &cred.token("room", 7), 7, Some(up.tls));
    assert!(
        ok,
        "join through up's relay failed:\n{out}\n{}",
        up.guard.output.tail(40)
    );
    let summary = join_summary(&out);
    let path = summary["path"].as_str().unwrap_or("").to_ascii_lowercase();
    assert!(
        path.contains("tls"),
        "joined over {path}, not TURN over TLS: {out}"
    );
    assert!(
        summary["echoed"].as_u64().unwrap_or(0) > 0,
        "no media echoed: {out}"
    );
    println!(
        "admin app joined through up: media synced {:.2} s, relay synced {:.2} s, joined {:.2} s after creation",
        media_synced.as_secs_f64(),
        relay_synced.as_secs_f64(),
        created.elapsed().as_secs_f64()
    );

    // `cloudproxy media --control` follows the same apps.
    let port = reserve_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args([
        "media",
        "--listen",
        &listen.to_string(),
        "--control",
        &up.control,
    ])
    .args(["--control-key", &up.operator_key, "--sync-interval", "1"])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    let (media, _) = ChildGuard::spawn("cloudproxy media", cmd).unwrap();
    media.wait_until(PATIENCE, "cloudproxy media never synced", || {
        count(&media, SYNCED) > 0
    });
    let (ok, out) = join(listen, &app, &cred.token("room", 8), 8, None);
    assert!(
        ok,
        "direct join at media --control failed:\n{out}\n{}",
        media.output.tail(40)
    );
    // An app the control plane does not have is refused.
    let (ok, out) = join(
        listen,
        "0123456789abcdef0123456789abcdef",
        &Credential {
            app_id: "0123456789abcdef0123456789abcdef".into(),
            key_id: "k1".into(),
            secret: "not-a-secret".into(),
        }
        .token("room", 9),
        9,
        None,
    );
    assert!(!ok, "an unknown app joined:\n{out}");
}
