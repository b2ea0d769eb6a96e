//! Enablement requests: validation naming fields, approval reserving capacity (or rejecting
//! with the reason), the lifecycle, and concurrent approvals that never over-reserve — also
//! across two control planes sharing one database.

use serde_json::{json, Value};

use crate::common::{call, client, Env, OPERATOR_KEY, RELAY_KEY};
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
    env.put(
        &format!("/v1/edges/{id}"),
        Some(OPERATOR_KEY),
        json!({
            "region": region, "pool": "static", "capacity_kbps": kbps,
            "listeners": [{"transport": "udp", "ip": ip, "port": 3478},
                          {"transport": "tls", "ip": ip, "port": 443}],
        }),
    )
    .await
    .expect(200);
}

async fn validation_names_fields(env: Env) {
    let (_, key) = env.owner("Acme").await;
    let id = env.app(&key, "a").await["app"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    env.post(&path, Some(&key), with("quality", json!("8k")))
        .await
        .expect_field("quality");
    env.post(&path, Some(&key), with("mode", json!("auto")))
        .await
        .expect_field("mode");
    env.post(&path, Some(&key), with("sdk", json!("flash")))
        .await
        .expect_field("sdk");
    env.post(&path, Some(&key), with("max_users_per_channel", json!(-1)))
        .await
        .expect_field("max_users_per_channel");
    env.post(
        &path,
        Some(&key),
        with("max_concurrent_channels", json!("ten")),
    )
    .await
    .expect_field("max_concurrent_channels");
    env.post(&path, Some(&key), with("bogus", json!(1)))
        .await
        .expect_field("bogus");
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
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "use_case",
            "max_concurrent_channels",
            "max_proxy_users_per_channel"
        ]
    );

    // Nothing invalid was stored; every region and tier is accepted.
    assert!(env
        .get(&path, Some(&key))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .is_empty());
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
    let id = env.app(&key, "a").await["app"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/apps/{id}/requests");
    // 100 000 kbit/s of static capacity in Japan; dynamic relays do not count.
    static_edge(&env, "jp-1", "japan", "203.0.113.10", 60_000).await;
    static_edge(&env, "jp-2", "japan", "203.0.113.11", 40_000).await;
    env.put(
        "/v1/edges/jp-dyn",
        Some(OPERATOR_KEY),
        json!({"region": "japan", "pool": "dynamic", "capacity_kbps": 1_000_000,
        "listeners": [{"transport": "udp", "ip": "198.51.100.5", "port": 3478}]}),
    )
    .await
    .expect(200);

    let op = |action: &str, rid: &str| format!("/v1/requests/{rid}/{action}");
    let a = env
        .post(&path, Some(&key), form("japan", 10, 4, 2))
        .await
        .expect(201); // 60 000
    let a_id = a["id"].as_str().unwrap().to_owned();
    env.post(&op("approve", &a_id), Some(&key), json!({}))
        .await
        .expect(403);
    let approved = env
        .post(&op("approve", &a_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(200);
    // Approval activates at once (no effective date given).
    assert_eq!(approved["state"], "active");
    assert_eq!(approved["activates_at"], serde_json::Value::Null);
    assert_eq!(approved["reserved_kbps"], 60_000);
    let conflict = env
        .post(&op("approve", &a_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(409);
    assert_eq!(conflict["error"]["code"], "conflict");

    // 60 000 more does not fit into the 40 000 left: rejected, and the reason says so.
    let b = env
        .post(&path, Some(&key), form("japan", 10, 4, 2))
        .await
        .expect(201);
    let b_id = b["id"].as_str().unwrap().to_owned();
    let rejected = env
        .post(&op("approve", &b_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(200);
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rejected["reserved_kbps"], 0);
    let reason = rejected["reason"].as_str().unwrap();
    assert!(
        reason.contains("insufficient capacity") && reason.contains("40000 of 100000"),
        "{reason}"
    );
    let regions = env.get("/v1/regions", Some(OPERATOR_KEY)).await.expect(200);
    let japan = regions
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "japan")
        .unwrap()
        .clone();
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
    let eu = env
        .post(&path, Some(&key), form("europe", 1, 1, 1))
        .await
        .expect(201);
    let eu = env
        .post(
            &op("approve", eu["id"].as_str().unwrap()),
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await
        .expect(200);
    assert!(eu["reason"]
        .as_str()
        .unwrap()
        .contains("no static-pool relay capacity"));

    // A step the lifecycle does not have is a path that does not exist.
    let unknown = env
        .post(&op("unsuspend", &a_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(404);
    assert_eq!(unknown["error"]["message"], "no such path", "{unknown}");

    // Lifecycle: activating an active request is a no-op (scripts of the two-step flow keep
    // working); the operator suspends, resumes, revokes.
    env.post(&op("activate", &b_id), Some(&key), json!({}))
        .await
        .expect(409);
    env.post(&op("suspend", &a_id), Some(&key), json!({}))
        .await
        .expect(403);
    assert_eq!(
        env.post(&op("activate", &a_id), Some(&key), json!({}))
            .await
            .expect(200)["state"],
        "active"
    );
    let sync = env
        .get("/v1/sync/apps", Some(OPERATOR_KEY))
        .await
        .expect(200);
    assert_eq!(
        sync["apps"][0]["enablements"],
        json!([{"region": "japan", "mode": "force_tcp", "max_concurrent_channels": 10, "max_proxy_users_per_channel": 2, "quality": "720p"}])
    );
    assert_eq!(
        env.post(&op("suspend", &a_id), Some(OPERATOR_KEY), json!({}))
            .await
            .expect(200)["state"],
        "suspended"
    );
    let sync = env
        .get("/v1/sync/apps", Some(OPERATOR_KEY))
        .await
        .expect(200);
    assert!(sync["apps"][0]["enablements"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        env.post(&op("resume", &a_id), Some(OPERATOR_KEY), json!({}))
            .await
            .expect(200)["reserved_kbps"],
        60_000
    );
    let revoked = env
        .post(&op("revoke", &a_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(200);
    assert_eq!(
        (revoked["state"].as_str(), revoked["reserved_kbps"].as_u64()),
        (Some("revoked"), Some(0))
    );
    env.post(&op("revoke", &a_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(409);

    // The released capacity serves the next request.
    let c = env
        .post(&path, Some(&key), form("japan", 10, 4, 2))
        .await
        .expect(201);
    let c = env
        .post(
            &op("approve", c["id"].as_str().unwrap()),
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(c["state"], "active");

    // Explicit rejection needs a reason and a submitted request.
    let d = env
        .post(&path, Some(&key), form("japan", 1, 1, 1))
        .await
        .expect(201);
    let d_id = d["id"].as_str().unwrap();
    env.post(&op("reject", d_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect_field("reason");
    env.post(&op("reject", d_id), Some(&key), json!({"reason": "no"}))
        .await
        .expect(403);
    let d = env
        .post(
            &op("reject", d_id),
            Some(OPERATOR_KEY),
            json!({"reason": "use case unclear"}),
        )
        .await
        .expect(200);
    assert_eq!(
        (d["state"].as_str(), d["reason"].as_str()),
        (Some("rejected"), Some("use case unclear"))
    );
    env.post(&op("approve", d_id), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(409);
    env.post(&op("approve", "r-nope"), Some(OPERATOR_KEY), json!({}))
        .await
        .expect(404);
    env.get("/v1/requests/r-nope", Some(OPERATOR_KEY))
        .await
        .expect(404);

    // Deleting the app releases its reservations.
    env.delete(&format!("/v1/apps/{id}"), Some(&key))
        .await
        .expect(204);
    let regions = env.get("/v1/regions", Some(OPERATOR_KEY)).await.expect(200);
    assert!(regions
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["reserved_kbps"] == 0));
}

async fn concurrent_approvals_never_over_reserve(env: Env) {
    const FITS: usize = 7;
    const REQUESTS: usize = 24;
    let (_, key) = env.owner("Acme").await;
    let id = env.app(&key, "a").await["app"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
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
        let r = env
            .post(
                &format!("/v1/apps/{id}/requests"),
                Some(&key),
                form("southeast_asia", 1, 1, 1),
            )
            .await
            .expect(201);
        ids.push(r["id"].as_str().unwrap().to_owned());
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
    let regions = env.get("/v1/regions", Some(OPERATOR_KEY)).await.expect(200);
    let sea = regions
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "southeast_asia")
        .unwrap()
        .clone();
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
    let app = env.app(&key, "calls").await;
    let app_id = app["app"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/apps/{app_id}/requests");
    let rid = env
        .post(&path, Some(&key), form("japan", 1, 2, 1))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approve = format!("/v1/requests/{rid}/approve");
    // Out of range and unknown fields are refused, naming the field.
    env.post(&approve, Some(OPERATOR_KEY), json!({"effective_at": -1}))
        .await
        .expect_field("effective_at");
    env.post(&approve, Some(OPERATOR_KEY), json!({"when": 1}))
        .await
        .expect(400);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = now + 3;
    let r = env
        .post(&approve, Some(OPERATOR_KEY), json!({"effective_at": at}))
        .await
        .expect(200);
    assert_eq!(
        (r["state"].as_str(), r["activates_at"].as_i64()),
        (Some("approved"), Some(at))
    );
    assert_eq!(r["reserved_kbps"], 3_000, "reserved at approval");
    let enablements =
        |sync: serde_json::Value| sync["apps"][0]["enablements"].as_array().unwrap().len();
    let sync = env.get("/v1/sync/apps", Some(RELAY_KEY)).await.expect(200);
    assert_eq!(enablements(sync), 0, "not before the effective date");
    // At the date, the next sync carries it and the request reads active.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let sync = env.get("/v1/sync/apps", Some(RELAY_KEY)).await.expect(200);
        if enablements(sync) == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never activated");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let now_after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(now_after >= at, "activated before its date");
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
        .post(&path, Some(&key), form("japan", 1, 2, 1))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
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
