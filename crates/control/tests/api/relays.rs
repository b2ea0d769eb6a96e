//! What relays call: admission leases (403 for an app not active for the mode and region, 409
//! `quota_exceeded` at the limits, expiry of a silent relay's leases), idempotent usage
//! reports with per-day aggregates and CSV, heartbeats and the Auto-mode proxy list.

use serde_json::{json, Value};

use crate::common::{column, edge_body, Env, OPERATOR_KEY, RELAY_KEY};
use crate::on_both_backends;
use crate::requests::form;

on_both_backends!(
    leases_enforce_limits,
    usage_reports_once,
    heartbeats_and_proxies
);

/// An app with an active Force TCP enablement in Japan (`channels` channels, `proxy` proxy
/// users each); returns (app id, owner key).
pub(crate) async fn enabled_app(env: &Env, channels: u32, proxy: u32) -> (String, String) {
    crate::requests::static_edge(env, "jp-1", "japan", "203.0.113.10", 10_000_000).await;
    let (_, owner) = env.owner("acme").await;
    let app_id = env.app_id(&owner, "calls").await;
    env.enable(&app_id, &owner, form("japan", channels, proxy + 2, proxy))
        .await;
    (app_id, owner)
}

pub(crate) fn lease(
    id: &str,
    relay: &str,
    app: &str,
    mode: &str,
    channel: &str,
    user: &str,
) -> Value {
    json!({"lease_id": id, "relay_id": relay, "app_id": app, "region": "japan",
           "mode": mode, "channel": channel, "user": user})
}

async fn leases_enforce_limits(env: Env) {
    let (app, owner) = enabled_app(&env, 2, 2).await;
    let k = Some(RELAY_KEY);
    // In order: (lease id, relay, mode, channel, user) → status, and for a refusal a part of
    // its message.
    for ([id, relay, mode, channel, user], status, says) in [
        // Two users in channel a, from two relays; the same user again (its RTCP allocation)
        // does not count twice.
        (["l1", "r1", "force_tcp", "a", "u1"], 201, ""),
        (["l2", "r2", "force_tcp", "a", "u2"], 201, ""),
        (["l2b", "r2", "force_tcp", "a", "u2"], 201, ""),
        // A third user in channel a: 409 quota_exceeded, which names the limit.
        (
            ["l3", "r1", "force_tcp", "a", "u3"],
            409,
            "max_proxy_users_per_channel 2",
        ),
        // Retrying a granted lease is fine (same id).
        (["l1", "r1", "force_tcp", "a", "u1"], 201, ""),
        // Channels: b is the second, c the third → refused.
        (["l4", "r1", "force_tcp", "b", "u4"], 201, ""),
        (
            ["l5", "r1", "force_tcp", "c", "u5"],
            409,
            "max_concurrent_channels 2",
        ),
        // Force UDP is not enabled for this app.
        (
            ["l6", "r1", "force_udp", "a", "u1"],
            403,
            "not enabled for force_udp in japan",
        ),
    ] {
        let r = env
            .post("/v1/leases", k, lease(id, relay, &app, mode, channel, user))
            .await;
        if status == 201 {
            assert_eq!(r.expect(201)["quality"], "720p", "{id}");
        } else {
            let e = r.expect_message(status, says);
            if status == 409 {
                assert_eq!(e["error"]["code"], "quota_exceeded", "{e}");
            }
        }
    }
    // Nor is Europe: 403.
    let mut eu = lease("l7", "r1", &app, "force_tcp", "a", "u1");
    eu["region"] = json!("europe");
    env.post("/v1/leases", k, eu).await.expect(403);
    // Release u2's two leases: channel a has room again.
    let r = env
        .post(
            "/v1/leases/release",
            k,
            json!({"relay_id": "r2", "lease_ids": ["l2", "l2b", "nope"]}),
        )
        .await
        .expect(200);
    assert_eq!(r["changed"], 2);
    let l3 = lease("l3", "r1", &app, "force_tcp", "a", "u3");
    env.post("/v1/leases", k, l3).await.expect(201);
    // Renewal re-creates an expired lease without a quota check and skips deleted apps.
    let r = env
        .post("/v1/leases/renew", k, json!({"leases": [lease("l1", "r1", &app, "force_tcp", "a", "u1"),
                                                     lease("gone", "r1", "no-such-app", "force_tcp", "a", "u9")]}))
        .await
        .expect(200);
    assert_eq!(r["changed"], 1, "{r}");
    // Keys: an owner key may not take leases; no key is 401; the relay key may not manage apps.
    for (key, status) in [(Some(owner.as_str()), 403), (None, 401)] {
        let x = lease("x", "r1", &app, "force_tcp", "a", "u1");
        env.post("/v1/leases", key, x).await.expect(status);
    }
    env.get("/v1/apps", k).await.expect(403);
    // Bad input names the field.
    env.post("/v1/leases", k, json!({"lease_id": "x"}))
        .await
        .expect_field("relay_id");
    let mut bad = lease("x", "r1", &app, "force_tcp", "a", "u1");
    bad["mode"] = json!("auto");
    env.post("/v1/leases", k, bad).await.expect_field("mode");
    // A suspended app gets no lease.
    env.app_step(&app, "suspend", OPERATOR_KEY)
        .await
        .expect(200);
    let l8 = lease("l8", "r1", &app, "force_tcp", "z", "u1");
    env.post("/v1/leases", k, l8)
        .await
        .expect_message(403, "suspended");
}

async fn usage_reports_once(env: Env) {
    let (app, owner) = enabled_app(&env, 5, 5).await;
    let k = Some(RELAY_KEY);
    let report = json!({"report_id": "r1-boot-1", "relay_id": "r1", "records": [
        {"app_id": app, "day": "2026-11-28", "mode": "force_tcp", "quality": "720p",
         "seconds": 120, "bytes": 1000, "peak_concurrency": 2},
        {"app_id": app, "day": "2026-11-29", "mode": "auto", "quality": null,
         "seconds": 30, "bytes": 500, "peak_concurrency": 1},
    ]});
    let ack = env.post("/v1/usage", k, report.clone()).await.expect(200);
    assert_eq!(ack["applied"], true);
    // The same report again (a retry after a lost answer) changes nothing.
    let ack = env.post("/v1/usage", k, report).await.expect(200);
    assert_eq!(ack["applied"], false);
    let more = json!({"report_id": "r2-boot-7", "relay_id": "r2", "records": [
        {"app_id": app, "day": "2026-11-28", "mode": "force_tcp", "quality": "720p",
         "seconds": 60, "bytes": 24, "peak_concurrency": 3}]});
    env.post("/v1/usage", k, more).await.expect(200);
    let november = "from=2026-11-01&to=2026-11-30";
    let u = env.usage(&app, &owner, november).await.expect(200);
    let days = u["days"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{u}");
    assert_eq!(days[0]["day"], "2026-11-28");
    assert_eq!(days[0]["seconds"], 180);
    assert_eq!(days[0]["minutes"], 3.0);
    assert_eq!(days[0]["bytes"], 1024);
    assert_eq!(days[0]["peak_concurrency"], 3);
    assert_eq!(days[1]["mode"], "auto");
    assert_eq!(days[1]["quality"], Value::Null);
    let csv = env
        .usage(&app, &owner, &format!("{november}&format=csv"))
        .await;
    assert!(
        csv.content_type.starts_with("text/csv"),
        "{}",
        csv.content_type
    );
    assert_eq!(
        csv.body.as_str().unwrap(),
        "day,mode,quality,minutes,bytes,peak_concurrency\n\
         2026-11-28,force_tcp,720p,3.00,1024,3\n\
         2026-11-29,auto,,0.50,500,1\n"
    );
    // Another owner sees nothing of it (404); bad days and formats name the parameter.
    let (_, other) = env.owner("other").await;
    env.usage(&app, &other, november).await.expect(404);
    for (query, field) in [("from=2026-02-30", "from"), ("format=xml", "format")] {
        env.usage(&app, &owner, query).await.expect_field(field);
    }
    let bad = json!({"report_id": "r3", "relay_id": "r1", "records": [
        {"app_id": app, "day": "yesterday", "mode": "auto", "quality": null,
         "seconds": 1, "bytes": 1, "peak_concurrency": 1}]});
    env.post("/v1/usage", k, bad)
        .await
        .expect_field("records[0].day");
    // Nothing of the refused report was written.
    let u = env.usage(&app, &owner, november).await.expect(200);
    assert_eq!(u["days"][0]["seconds"], 180);
}

async fn heartbeats_and_proxies(env: Env) {
    for (id, ip, cap) in [
        ("dyn-a", "198.51.100.1", 1000),
        ("dyn-b", "198.51.100.2", 1000),
        ("dyn-c", "198.51.100.3", 1000),
        ("dyn-d", "198.51.100.4", 1000),
    ] {
        // The relay key registers only inside the CIDRs the operator gave the edge.
        env.put_cidrs(id, OPERATOR_KEY, json!(["198.51.100.0/29"]))
            .await
            .expect(200);
        let body = edge_body("japan", "dynamic", cap, &[("tls", ip, 443)]);
        env.put_edge(id, RELAY_KEY, body).await.expect(200);
    }
    // No heartbeat yet: nobody is listed.
    let p = env.get("/v1/proxies?region=japan", None).await.expect(200);
    assert_eq!(p["proxies"].as_array().unwrap().len(), 0, "{p}");
    for (id, load) in [
        ("dyn-a", 900),
        ("dyn-b", 100),
        ("dyn-c", 500),
        ("dyn-d", 700),
    ] {
        env.heartbeat(id, load, 3).await.expect(204);
    }
    // Three at most, least loaded first; public (no key).
    let p = env.get("/v1/proxies?region=japan", None).await.expect(200);
    assert_eq!(
        column(&p["proxies"], "id"),
        ["dyn-b", "dyn-c", "dyn-d"],
        "{p}"
    );
    assert_eq!(p["proxies"][0]["listeners"][0]["port"], 443);
    // Dynamic relays are never in the allow-list.
    let a = env.get("/v1/allowlist/japan?format=csv", None).await;
    assert!(
        !a.body.as_str().unwrap().contains("198.51.100."),
        "{:?}",
        a.body
    );
    // Other regions: none; bad region names the parameter; unknown edge heartbeat is 404.
    let p = env.get("/v1/proxies?region=europe", None).await.expect(200);
    assert_eq!(p["proxies"].as_array().unwrap().len(), 0);
    env.get("/v1/proxies?region=mars", None)
        .await
        .expect_field("region");
    env.get("/v1/proxies", None).await.expect_field("region");
    env.heartbeat("nope", 1, 0).await.expect(404);
    env.heartbeat("dyn-a", -1, 0)
        .await
        .expect_field("load_kbps");
    let e = env.edge("dyn-b").await.expect(200);
    assert_eq!(e["load_kbps"], 100);
    assert!(e["heartbeat_at"].as_i64().is_some());
}
