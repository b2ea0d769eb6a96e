//! Enablement requests: validation naming fields, approval reserving capacity (or rejecting
//! with the reason), the lifecycle, and concurrent approvals that never over-reserve — also
//! across two control planes sharing one database.

use serde_json::{json, Value};

use crate::common::{call, client, column, edge_body, now, Env, OPERATOR_KEY, RELAY_KEY};
use crate::on_both_backends;

on_both_backends!(
    validation_names_fields,
    approval_reserves_and_lifecycle,
    concurrent_approvals_never_over_reserve
);

/// A valid form: 720p (3000 kbit/s per proxy user) in `region`.
pub(crate) fn form(region: &str, channels: u32, users: u32, proxy_users: u32) -> Value {
    json!({
        "region": region,
        "sdk": "web",
        "use_case": "1:1 video call",
        "max_concurrent_channels": channels,
        "max_users_per_channel": users,
        "max_proxy_users_per_channel": proxy_users,
        "quality": "720p",
        "mode": "force_tcp",
    })
}

/// Registers a static relay in `region` with `kbps` of capacity.
pub(crate) async fn static_edge(env: &Env, id: &str, region: &str, ip: &str, kbps: u64) {
    let listeners = [("udp", ip, 3478), ("tls", ip, 443)];
    let body = edge_body(region, "static", kbps, &listeners);
    env.put_edge(id, OPERATOR_KEY, body).await.expect(200);
}

async fn validation_names_fields(env: Env) {
    let (_, key) = env.owner("Acme").await;
    let id = env.app_id(&key, "a").await;
    let path = format!("/v1/apps/{id}/requests");
    let with = |field: &str, value: Value| {
        let mut f = form("japan", 10, 4, 2);
        f[field] = value;
        f
    };

    let msg = env
        .post(&path, Some(&key), form("japan", 10, 4, 5))
        .await
        .expect_field("max_proxy_users_per_channel");
    assert!(msg.contains("max_users_per_channel (4)"), "{msg}");
    let msg = env
        .post(&path, Some(&key), with("region", json!("mars")))
        .await
        .expect_field("region");
    assert!(
        msg.contains("unknown variant `mars`") && msg.contains("southeast_asia"),
        "{msg}"
    );
    for (field, value) in [
        ("quality", json!("8k")),
        ("mode", json!("auto")),
        ("sdk", json!("flash")),
        ("max_users_per_channel", json!(-1)),
        ("max_concurrent_channels", json!("ten")),
        ("bogus", json!(1)),
    ] {
        env.post(&path, Some(&key), with(field, value))
            .await
            .expect_field(field);
    }
    let mut missing = form("japan", 1, 1, 1);
    missing.as_object_mut().unwrap().remove("use_case");
    env.post(&path, Some(&key), missing)
        .await
        .expect_field("use_case");

    // Several bad fields are all named at once.
    let mut many = with("max_concurrent_channels", json!(0));
    many["use_case"] = json!(" ");
    many["max_proxy_users_per_channel"] = json!(0);
    let body = env.post(&path, Some(&key), many).await.expect(400);
    assert_eq!(
        column(&body["error"]["fields"], "field"),
        [
            "use_case",
            "max_concurrent_channels",
            "max_proxy_users_per_channel"
        ]
    );

    // Nothing invalid was stored; every region and tier is accepted.
    assert!(env.get(&path, Some(&key)).await.expect_list().is_empty());
    for region in [
        "mainland_china",
        "europe",
        "india",
        "japan",
        "north_america",
        "southeast_asia",
    ] {
        for (quality, mode, sdk) in [
            ("audio_only", "force_udp", "native"),
            ("360p", "force_tcp", "web"),
            ("480p", "force_udp", "web"),
            ("1080p", "force_tcp", "native"),
            ("2k_plus", "force_udp", "native"),
        ] {
            let mut f = form(region, 2, 3, 3);
            f["quality"] = json!(quality);
            f["mode"] = json!(mode);
            f["sdk"] = json!(sdk);
            let r = env.post(&path, Some(&key), f).await.expect(201);
            assert_eq!(r["state"], "submitted");
            assert_eq!(r["region"], region);
        }
    }
    let r = env
        .post(&path, Some(&key), form("japan", 10, 4, 2))
        .await
        .expect(201);
    assert_eq!(r["estimated_kbps"], 2 * 10 * 3000);
    assert_eq!(r["reserved_kbps"], 0);
    assert_eq!(r["reason"], Value::Null);
    env.post("/v1/apps/nope/requests", Some(&key), form("japan", 1, 1, 1))
        .await
        .expect(404);
}

async fn approval_reserves_and_lifecycle(env: Env) {
    let (_, key) = env.owner("Acme").await;
    let id = env.app_id(&key, "a").await;
    // 100 000 kbit/s of static capacity in Japan; dynamic relays do not count.
    static_edge(&env, "jp-1", "japan", "203.0.113.10", 60_000).await;
    static_edge(&env, "jp-2", "japan", "203.0.113.11", 40_000).await;
    let dynamic = edge_body(
        "japan",
        "dynamic",
        1_000_000,
        &[("udp", "198.51.100.5", 3478)],
    );
    env.put_edge("jp-dyn", OPERATOR_KEY, dynamic)
        .await
        .expect(200);

    let op = OPERATOR_KEY;
    let a_id = env.file_request(&id, &key, form("japan", 10, 4, 2)).await; // 60 000
    env.request_step(&a_id, "approve", &key).await.expect(403);
    let approved = env.request_step(&a_id, "approve", op).await.expect(200);
    // Approval activates at once (no effective date given).
    assert_eq!(approved["state"], "active");
    assert_eq!(approved["activates_at"], serde_json::Value::Null);
    assert_eq!(approved["reserved_kbps"], 60_000);
    let conflict = env.request_step(&a_id, "approve", op).await.expect(409);
    assert_eq!(conflict["error"]["code"], "conflict");

    // 60 000 more does not fit into the 40 000 left: rejected, and the reason says so.
    let b_id = env.file_request(&id, &key, form("japan", 10, 4, 2)).await;
    let rejected = env.request_step(&b_id, "approve", op).await.expect(200);
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rejected["reserved_kbps"], 0);
    let reason = rejected["reason"].as_str().unwrap();
    assert!(
        reason.contains("insufficient capacity") && reason.contains("40000 of 100000"),
        "{reason}"
    );
    let japan = env.region("japan").await;
    assert_eq!(japan["static_capacity_kbps"], 100_000);
    assert_eq!(japan["reserved_kbps"], 60_000);
    assert_eq!(japan["available_kbps"], 40_000);
    assert_eq!(
        (
            japan["static_edges"].as_u64(),
            japan["dynamic_edges"].as_u64()
        ),
        (Some(2), Some(1))
    );

    // A region without static relays rejects everything.
    let eu_id = env.file_request(&id, &key, form("europe", 1, 1, 1)).await;
    let eu = env.request_step(&eu_id, "approve", op).await.expect(200);
    assert!(eu["reason"]
        .as_str()
        .unwrap()
        .contains("no static-pool relay capacity"));

    // A step the lifecycle does not have is a path that does not exist.
    let unknown = env.request_step(&a_id, "unsuspend", op).await.expect(404);
    assert_eq!(unknown["error"]["message"], "no such path", "{unknown}");

    // Lifecycle: activating an active request is a no-op (scripts of the two-step flow keep
    // working); the operator suspends, resumes, revokes.
    env.request_step(&b_id, "activate", &key).await.expect(409);
    env.request_step(&a_id, "suspend", &key).await.expect(403);
    let activated = env.request_step(&a_id, "activate", &key).await.expect(200);
    assert_eq!(activated["state"], "active");
    let sync = env.sync(op).await;
    assert_eq!(
        sync["apps"][0]["enablements"],
        json!([{"region": "japan", "mode": "force_tcp", "max_concurrent_channels": 10, "max_proxy_users_per_channel": 2, "quality": "720p"}])
    );
    let suspended = env.request_step(&a_id, "suspend", op).await.expect(200);
    assert_eq!(suspended["state"], "suspended");
    let sync = env.sync(op).await;
    assert!(sync["apps"][0]["enablements"]
        .as_array()
        .unwrap()
        .is_empty());
    let resumed = env.request_step(&a_id, "resume", op).await.expect(200);
    assert_eq!(resumed["reserved_kbps"], 60_000);
    let revoked = env.request_step(&a_id, "revoke", op).await.expect(200);
    assert_eq!(
        (revoked["state"].as_str(), revoked["reserved_kbps"].as_u64()),
        (Some("revoked"), Some(0))
    );
    env.request_step(&a_id, "revoke", op).await.expect(409);

    // The released capacity serves the next request.
    let c_id = env.file_request(&id, &key, form("japan", 10, 4, 2)).await;
    let c = env.request_step(&c_id, "approve", op).await.expect(200);
    assert_eq!(c["state"], "active");

    // Explicit rejection needs a reason and a submitted request.
    let d_id = env.file_request(&id, &key, form("japan", 1, 1, 1)).await;
    env.request_step(&d_id, "reject", op)
        .await
        .expect_field("reason");
    let reject = format!("/v1/requests/{d_id}/reject");
    env.post(&reject, Some(&key), json!({"reason": "no"}))
        .await
        .expect(403);
    let d = env
        .post(&reject, Some(op), json!({"reason": "use case unclear"}))
        .await
        .expect(200);
    assert_eq!(
        (d["state"].as_str(), d["reason"].as_str()),
        (Some("rejected"), Some("use case unclear"))
    );
    env.request_step(&d_id, "approve", op).await.expect(409);
    env.request_step("r-nope", "approve", op).await.expect(404);
    env.get("/v1/requests/r-nope", Some(OPERATOR_KEY))
        .await
        .expect(404);

    // Deleting the app releases its reservations.
    env.delete(&format!("/v1/apps/{id}"), Some(&key))
        .await
        .expect(204);
    let regions = env.get("/v1/regions", Some(op)).await.expect_list();
    assert!(regions.iter().all(|r| r["reserved_kbps"] == 0));
}

async fn concurrent_approvals_never_over_reserve(env: Env) {
    const FITS: usize = 7;
    const REQUESTS: usize = 24;
    let (_, key) = env.owner("Acme").await;
    let id = env.app_id(&key, "a").await;
    // Each request needs 1 × 1 × 3000 kbit/s; the region has room for exactly FITS of them.
    static_edge(
        &env,
        "sea-1",
        "southeast_asia",
        "203.0.113.20",
        3_000 * FITS as u64,
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..REQUESTS {
        let form = form("southeast_asia", 1, 1, 1);
        ids.push(env.file_request(&id, &key, form).await);
    }

    // Approvals race on two control planes sharing the database.
    let second = env.second();
    let bases = [env.base.clone(), format!("http://{}", second.local_addr())];
    let mut tasks = Vec::new();
    for (i, rid) in ids.into_iter().enumerate() {
        let base = bases[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let path = format!("/v1/requests/{rid}/approve");
            call(
                &http,
                &base,
                reqwest::Method::POST,
                &path,
                Some(OPERATOR_KEY),
                Some(json!({})),
            )
            .await
            .expect(200)
        }));
    }
    let mut approved = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r["state"].as_str().unwrap() {
            "active" => approved += 1,
            "rejected" => assert!(r["reason"]
                .as_str()
                .unwrap()
                .contains("insufficient capacity")),
            other => panic!("unexpected state {other}"),
        }
    }
    assert_eq!(approved, FITS);
    let sea = env.region("southeast_asia").await;
    assert_eq!(sea["reserved_kbps"], 3_000 * FITS as u64);
    assert_eq!(sea["available_kbps"], 0);
    second.stop();
}

on_both_backends!(approval_activates_at_the_effective_date);

/// Approval with a future `effective_at` reserves at once but waits in `approved`; relays get
/// the enablement in the first sync at or after that date. Without a date it is active at once.
async fn approval_activates_at_the_effective_date(env: Env) {
    static_edge(&env, "jp-1", "japan", "203.0.113.10", 10_000_000).await;
    let (_, key) = env.owner("acme").await;
    let app_id = env.app_id(&key, "calls").await;
    let rid = env
        .file_request(&app_id, &key, form("japan", 1, 2, 1))
        .await;
    let approve = format!("/v1/requests/{rid}/approve");
    // Out of range and unknown fields are refused, naming the field.
    env.post(&approve, Some(OPERATOR_KEY), json!({"effective_at": -1}))
        .await
        .expect_field("effective_at");
    env.post(&approve, Some(OPERATOR_KEY), json!({"when": 1}))
        .await
        .expect(400);
    let at = now() + 3;
    let r = env
        .post(&approve, Some(OPERATOR_KEY), json!({"effective_at": at}))
        .await
        .expect(200);
    assert_eq!(
        (r["state"].as_str(), r["activates_at"].as_u64()),
        (Some("approved"), Some(at))
    );
    assert_eq!(r["reserved_kbps"], 3_000, "reserved at approval");
    let enablements =
        |sync: serde_json::Value| sync["apps"][0]["enablements"].as_array().unwrap().len();
    let sync = env.sync(RELAY_KEY).await;
    assert_eq!(enablements(sync), 0, "not before the effective date");
    // At the date, the next sync carries it and the request reads active.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let sync = env.sync(RELAY_KEY).await;
        if enablements(sync) == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never activated");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(now() >= at, "activated before its date");
    let r = env
        .get(&format!("/v1/requests/{rid}"), Some(&key))
        .await
        .expect(200);
    assert_eq!(
        (r["state"].as_str(), r["activates_at"].as_i64()),
        (Some("active"), None)
    );

    // A date in the past activates at once.
    let rid2 = env
        .file_request(&app_id, &key, form("japan", 1, 2, 1))
        .await;
    let r = env
        .post(
            &format!("/v1/requests/{rid2}/approve"),
            Some(OPERATOR_KEY),
            json!({"effective_at": 1}),
        )
        .await
        .expect(200);
    assert_eq!(r["state"], "active");
}
