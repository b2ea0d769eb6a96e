//! Hostile numbers: every number an API body or query takes is range-checked (400 naming the
//! field and its range), sums saturate, and nothing a relay key can send turns
//! `GET /v1/regions`, approvals or usage into lasting 500s.

use serde_json::{json, Value};

use crate::common::{edge_body, Backend, Env, OPERATOR_KEY, RELAY_KEY};
use crate::on_both_backends;
use crate::requests::form;

on_both_backends!(
    capacity_at_i64_max_keeps_regions_up,
    usage_bytes_at_i64_max_keep_usage_up,
    every_number_is_range_checked
);

const I64_MAX: i64 = i64::MAX;

fn edge(region: &str, ip: &str, kbps: u64) -> Value {
    edge_body(region, "static", kbps, &[("udp", ip, 3478)])
}

/// An edge at i64::MAX capacity is a 400; two at the largest capacity a relay may declare
/// add up, and `GET /v1/regions` and an approval answer 200. Rows stored before the limits
/// (two edges at i64::MAX) no longer break the sum.
async fn capacity_at_i64_max_keeps_regions_up(env: Env) {
    let max = cloudproxy_control::limits::MAX_CAPACITY_KBPS;
    for (id, ip) in [("jp-a", "203.0.113.1"), ("jp-b", "203.0.113.2")] {
        let msg = env
            .put_edge(id, RELAY_KEY, edge("japan", ip, I64_MAX as u64))
            .await
            .expect_field("capacity_kbps");
        assert!(msg.contains(&max.to_string()), "{msg}");
        env.put_edge(id, OPERATOR_KEY, edge("japan", ip, max))
            .await
            .expect(200);
    }
    let japan = env.region("japan").await;
    assert_eq!(japan["static_capacity_kbps"], json!(2 * max), "{japan}");

    // An approval in that region decides on the same sum.
    let (_, owner) = env.owner("acme").await;
    let app_id = env.app_id(&owner, "calls").await;
    let id = env
        .file_request(&app_id, &owner, form("japan", 10, 4, 2))
        .await;
    let approved = env
        .request_step(&id, "approve", OPERATOR_KEY)
        .await
        .expect(200);
    assert_eq!(approved["state"], "active", "{approved}");
    env.get("/v1/regions", Some(OPERATOR_KEY)).await.expect(200);

    // Rows written before the limits existed (two edges at i64::MAX): the sum no longer
    // fails.
    let dynamic = edge_body("japan", "dynamic", 1, &[("udp", "198.51.100.1", 3478)]);
    env.put_edge("dyn-a", OPERATOR_KEY, dynamic)
        .await
        .expect(200);
    env.heartbeat("dyn-a", 1, 1).await.expect(204);
    execute(
        &env,
        "UPDATE edges SET capacity_kbps = $1 WHERE $2 <> ''",
        I64_MAX,
        "-",
    )
    .await;
    // The proxy list orders by load over capacity: still 200.
    let proxies = env.get("/v1/proxies?region=japan", None).await.expect(200);
    assert_eq!(proxies["proxies"][0]["id"], "dyn-a", "{proxies}");
    let japan = env.region("japan").await;
    // 2 × i64::MAX: past what SQL SUM could return, summed in u64 instead.
    assert_eq!(
        japan["static_capacity_kbps"],
        json!(2 * I64_MAX as u64),
        "{japan}"
    );
}

fn report(id: &str, app: &str, bytes: Value) -> Value {
    json!({"report_id": id, "relay_id": "r1", "records": [
        {"app_id": app, "day": "2026-11-28", "mode": "auto", "quality": null,
         "seconds": 60, "bytes": bytes, "peak_concurrency": 1}]})
}

/// Usage `bytes` at i64::MAX is a 400; reports at the per-record maximum add up and
/// saturate at i64::MAX, stored as a 64-bit integer on both backends, and usage stays 200.
async fn usage_bytes_at_i64_max_keep_usage_up(env: Env) {
    let (_, owner) = env.owner("acme").await;
    let app_id = env.app_id(&owner, "calls").await;
    let k = Some(RELAY_KEY);
    for n in 0..2 {
        let msg = env
            .post(
                "/v1/usage",
                k,
                report(&format!("big-{n}"), &app_id, json!(I64_MAX)),
            )
            .await
            .expect_field("records[0].bytes");
        assert!(msg.contains("between 0 and"), "{msg}");
    }
    let max = cloudproxy_control::limits::MAX_RECORD_BYTES;
    for n in 0..3 {
        env.post(
            "/v1/usage",
            k,
            report(&format!("max-{n}"), &app_id, json!(max)),
        )
        .await
        .expect(200);
    }
    let usage = env
        .usage(&app_id, &owner, "from=2026-11-01&to=2026-11-30")
        .await
        .expect(200);
    assert_eq!(usage["days"][0]["bytes"], json!(3 * max), "{usage}");
    assert_eq!(usage["days"][0]["seconds"], json!(180), "{usage}");

    // A day row already near the top (as a long-lived database could hold) saturates at
    // i64::MAX instead of turning into a REAL (SQLite) or failing "bigint out of range"
    // (PostgreSQL).
    let q = "UPDATE usage_daily SET bytes = $1 WHERE app_id = $2";
    execute(&env, q, I64_MAX - 1, &app_id).await;
    env.post("/v1/usage", k, report("after-top", &app_id, json!(max)))
        .await
        .expect(200);
    let day = "from=2026-11-28&to=2026-11-28";
    let usage = env
        .usage(&app_id, &owner, &format!("{day}&format=csv"))
        .await
        .expect(200);
    let csv = usage.as_str().unwrap();
    assert!(csv.contains(&format!(",{I64_MAX},")), "{csv}");
    let usage = env.usage(&app_id, &owner, day).await.expect(200);
    assert_eq!(usage["days"][0]["bytes"], json!(I64_MAX), "{usage}");
    assert_eq!(stored_type(&env).await, "integer");

    // A SQLite database from before the fix holds the sum as a REAL, which answered 500 for
    // good. Upgrading (the migration runs again here) repairs it to i64::MAX.
    if env.backend == Backend::Sqlite {
        let pool = sqlx::SqlitePool::connect(&env.db.url).await.unwrap();
        for q in [
            "UPDATE usage_daily SET bytes = bytes + 9223372036854775807",
            "DELETE FROM _sqlx_migrations WHERE version = 3",
            "DROP TABLE edge_cidrs",
        ] {
            sqlx::query(q).execute(&pool).await.unwrap();
        }
        let (t,): (String,) = sqlx::query_as("SELECT typeof(bytes) FROM usage_daily")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(t, "real", "the pre-fix state");
        pool.close().await;
        env.usage(&app_id, &owner, day).await.expect(500);
        let path = format!("/v1/apps/{app_id}/usage?{day}");
        let upgraded = env.second();
        let base = format!("http://{}", upgraded.local_addr());
        let r = crate::common::call(
            &env.http,
            &base,
            reqwest::Method::GET,
            &path,
            Some(&owner),
            None,
        )
        .await
        .expect(200);
        assert_eq!(r["days"][0]["bytes"], json!(I64_MAX), "{r}");
        assert_eq!(stored_type(&env).await, "integer");
        upgraded.stop();
    }
}

/// Runs `q` with `$1 = v`, `$2 = s` straight on the test's database, as a long-lived
/// database could hold rows written before the limits.
async fn execute(env: &Env, q: &str, v: i64, s: &str) {
    let q = sqlx::AssertSqlSafe(q.to_owned());
    match env.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&env.db.url).await.unwrap();
            sqlx::query(q).bind(v).bind(s).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
            sqlx::query(q).bind(v).bind(s).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// The storage type of `usage_daily.bytes`: SQLite's per-value `typeof`, PostgreSQL's column
/// type.
async fn stored_type(env: &Env) -> String {
    match env.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&env.db.url).await.unwrap();
            let types: Vec<(String,)> =
                sqlx::query_as("SELECT DISTINCT typeof(bytes) FROM usage_daily")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            assert_eq!(types.len(), 1, "{types:?}");
            types[0].0.clone()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
            let (t,): (String,) = sqlx::query_as(
                "SELECT data_type::text FROM information_schema.columns \
                 WHERE table_name = 'usage_daily' AND column_name = 'bytes'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            assert_eq!(t, "bigint");
            "integer".into()
        }
    }
}

/// One hostile value of one field.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    key: &'static str,
    body: Value,
    field: &'static str,
}

/// Every numeric field of every API body and query, at values past its range: each is a 400
/// naming the field; a value at the top of the range is accepted.
async fn every_number_is_range_checked(env: Env) {
    let (_, owner) = env.owner("acme").await;
    let app_id = env.app_id(&owner, "calls").await;
    env.put_edge("jp-1", OPERATOR_KEY, edge("japan", "203.0.113.1", 1000))
        .await
        .expect(200);
    let limits = {
        use cloudproxy_control::limits::*;
        (
            MAX_CAPACITY_KBPS,
            MAX_ALLOCATIONS,
            MAX_RECORD_SECONDS,
            MAX_RECORD_BYTES,
            MAX_UNIX_SECONDS,
        )
    };
    let (max_kbps, max_allocs, max_secs, max_bytes, max_unix) = limits;
    let with = |base: &Value, path: &[&str], v: Value| {
        let mut b = base.clone();
        let mut at = &mut b;
        for p in &path[..path.len() - 1] {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        at[path[path.len() - 1]] = v;
        b
    };
    let edge_body = edge("japan", "203.0.113.1", 1000);
    let hb = json!({"load_kbps": 1, "allocations": 1});
    let usage = json!({"report_id": "x", "relay_id": "r1", "records": [
        {"app_id": app_id, "day": "2026-11-28", "mode": "auto", "quality": null,
         "seconds": 1, "bytes": 1, "peak_concurrency": 1}]});
    let form = form("japan", 10, 4, 2);
    let hostile = [
        json!(-1),
        json!(I64_MAX),
        json!(u64::MAX),
        json!(1e30),
        json!(0.5),
    ];
    let mut cases = Vec::new();
    let mut add =
        |what, method, path: String, key, base: &Value, at: &[&str], field, over: Value| {
            for v in hostile.iter().cloned().chain([over]) {
                cases.push(Case {
                    what,
                    method,
                    path: path.clone(),
                    key,
                    body: with(base, at, v),
                    field,
                });
            }
        };
    add(
        "edge capacity",
        "PUT",
        "/v1/edges/jp-1".into(),
        RELAY_KEY,
        &edge_body,
        &["capacity_kbps"],
        "capacity_kbps",
        json!(max_kbps + 1),
    );
    add(
        "edge effective_at",
        "PUT",
        "/v1/edges/jp-1".into(),
        OPERATOR_KEY,
        &edge_body,
        &["effective_at"],
        "effective_at",
        json!(max_unix + 1),
    );
    add(
        "listener port",
        "PUT",
        "/v1/edges/jp-1".into(),
        OPERATOR_KEY,
        &edge_body,
        &["listeners", "0", "port"],
        "listeners[0].port",
        json!(65536),
    );
    add(
        "heartbeat load",
        "POST",
        "/v1/edges/jp-1/heartbeat".into(),
        RELAY_KEY,
        &hb,
        &["load_kbps"],
        "load_kbps",
        json!(max_kbps + 1),
    );
    add(
        "heartbeat allocations",
        "POST",
        "/v1/edges/jp-1/heartbeat".into(),
        RELAY_KEY,
        &hb,
        &["allocations"],
        "allocations",
        json!(max_allocs + 1),
    );
    for (name, over) in [
        ("seconds", max_secs + 1),
        ("bytes", max_bytes + 1),
        ("peak_concurrency", max_allocs + 1),
    ] {
        add(
            "usage record",
            "POST",
            "/v1/usage".into(),
            RELAY_KEY,
            &usage,
            &["records", "0", name],
            Box::leak(format!("records[0].{name}").into_boxed_str()),
            json!(over),
        );
    }
    for (name, over) in [
        ("max_concurrent_channels", 1_000_001u64),
        ("max_users_per_channel", 100_001),
        ("max_proxy_users_per_channel", 100_001),
    ] {
        add(
            "enablement form",
            "POST",
            format!("/v1/apps/{app_id}/requests"),
            OPERATOR_KEY,
            &form,
            &[name],
            name,
            json!(over),
        );
    }
    add(
        "rotation grace",
        "POST",
        format!("/v1/apps/{app_id}/rotate"),
        OPERATOR_KEY,
        &json!({"grace_seconds": 1}),
        &["grace_seconds"],
        "grace_seconds",
        json!(2_592_001),
    );
    let n = cases.len();
    let mut fields: Vec<&str> = cases.iter().map(|c| c.field).collect();
    fields.sort_unstable();
    fields.dedup();
    for c in cases {
        let resp = env
            .call(
                c.method.parse().unwrap(),
                &c.path,
                Some(c.key),
                Some(c.body.clone()),
            )
            .await;
        assert_eq!(
            resp.status.as_u16(),
            400,
            "{}: {} {} → {}",
            c.what,
            c.path,
            c.body,
            resp.body
        );
        let fields = resp.body["error"]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["field"] == c.field),
            "{}: {} does not name {}: {}",
            c.what,
            c.body,
            c.field,
            resp.body
        );
    }
    assert!(n >= 60, "{n} cases");
    println!(
        "{n} hostile values of {} body fields: each a 400 naming the field",
        fields.len()
    );

    // Query numbers: the same.
    for (path, field) in [
        (
            format!("/v1/edges/jp-1?effective_at={}", max_unix + 1),
            "effective_at",
        ),
        ("/v1/edges/jp-1?effective_at=-1".to_string(), "effective_at"),
        (
            format!("/v1/edges/jp-1?effective_at={I64_MAX}"),
            "effective_at",
        ),
        (
            "/v1/edges/jp-1?effective_at=99999999999999999999".to_string(),
            "effective_at",
        ),
    ] {
        env.delete(&path, Some(OPERATOR_KEY))
            .await
            .expect_field(field);
    }
    for v in [
        "-1",
        "0",
        &I64_MAX.to_string(),
        &u64::MAX.to_string(),
        "1e3",
    ] {
        env.get(&format!("/v1/allowlist/japan?version={v}"), None)
            .await
            .expect_400_or_404(&format!("version={v}"));
    }

    // The top of every range is accepted.
    env.put_cidrs("jp-1", OPERATOR_KEY, json!(["203.0.113.0/24"]))
        .await
        .expect(200);
    let top_edge = with(
        &with(&edge_body, &["capacity_kbps"], json!(max_kbps)),
        &["effective_at"],
        json!(max_unix),
    );
    env.put_edge("jp-1", RELAY_KEY, top_edge).await.expect(200);
    env.heartbeat("jp-1", max_kbps as i64, max_allocs)
        .await
        .expect(204);
    let top = json!({"report_id": "top", "relay_id": "r1", "records": [
        {"app_id": app_id, "day": "2026-11-28", "mode": "auto", "quality": null,
         "seconds": max_secs, "bytes": max_bytes, "peak_concurrency": max_allocs}]});
    env.post("/v1/usage", Some(RELAY_KEY), top)
        .await
        .expect(200);
    env.get("/v1/regions", Some(OPERATOR_KEY)).await.expect(200);
    env.get("/v1/allowlist/japan/history", None)
        .await
        .expect(200);
    env.get("/v1/proxies?region=japan", None).await.expect(200);
}
