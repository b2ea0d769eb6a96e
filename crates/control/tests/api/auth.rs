//! Authentication, roles, owner isolation, the error shape and the OpenAPI document.

use reqwest::Method;
use serde_json::json;

use crate::common::{post_raw, Env, OPERATOR_KEY};
use crate::on_both_backends;

on_both_backends!(
    keys_and_roles,
    owners_cannot_see_each_other,
    errors_and_openapi,
    operator_only_refuses_owners_before_reading_the_body
);

async fn keys_and_roles(env: Env) {
    // No key, a malformed header, an unknown key: 401.
    let r = env.get("/v1/apps", None).await.expect(401);
    assert_eq!(r["error"]["code"], "unauthorized");
    assert!(r["error"]["message"].as_str().unwrap().contains("Bearer"));
    let raw = env
        .http
        .get(format!("{}/v1/apps", env.base))
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 401);
    env.get("/v1/apps", Some("cpk_not-a-key")).await.expect(401);

    // The operator manages owners; an owner key may not (403), whatever the id.
    let (owner_id, owner_key) = env.owner("Acme").await;
    assert!(owner_key.starts_with("cpk_"));
    let listed = env.get("/v1/owners", Some(OPERATOR_KEY)).await.expect(200);
    assert_eq!(listed[0]["id"], owner_id.as_str());
    let forbidden = env.get("/v1/owners", Some(&owner_key)).await.expect(403);
    assert_eq!(forbidden["error"]["code"], "forbidden");
    env.post("/v1/owners", Some(&owner_key), json!({"name": "x"}))
        .await
        .expect(403);
    env.get("/v1/regions", Some(&owner_key)).await.expect(403);
    env.get("/v1/sync/apps", Some(&owner_key)).await.expect(403);
    env.get("/v1/edges", Some(&owner_key)).await.expect(403);
    env.get(&format!("/v1/owners/{owner_id}"), Some(OPERATOR_KEY))
        .await
        .expect(200);
    env.get("/v1/owners/o-nobody", Some(OPERATOR_KEY))
        .await
        .expect(404);

    // A second key for the owner works as well as the first.
    let second = env
        .post(
            &format!("/v1/owners/{owner_id}/keys"),
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await
        .expect(201)["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    env.app(&second, "from second key").await;
    let apps = env.get("/v1/apps", Some(&owner_key)).await.expect_list();
    assert_eq!(apps.len(), 1);
    env.post("/v1/owners/o-nobody/keys", Some(OPERATOR_KEY), json!({}))
        .await
        .expect(404);

    // Owner names are checked.
    let msg = env
        .post("/v1/owners", Some(OPERATOR_KEY), json!({"name": "  "}))
        .await
        .expect_field("name");
    assert!(msg.contains("empty"));
}

async fn owners_cannot_see_each_other(env: Env) {
    let (_, alice) = env.owner("Alice").await;
    let (bob_id, bob) = env.owner("Bob").await;
    let id = env.app_id(&alice, "alice's app").await;
    let path = format!("/v1/apps/{id}");

    // Bob gets 404 for Alice's app on every path, exactly as for an id that does not exist.
    let hidden = env.get(&path, Some(&bob)).await.expect(404);
    let missing = env
        .get("/v1/apps/0123456789abcdef0123456789abcdef", Some(&bob))
        .await
        .expect(404);
    assert_eq!(hidden["error"]["code"], missing["error"]["code"]);
    let form = crate::requests::form("japan", 1, 2, 1);
    for (method, at, body) in [
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/rotate"), Some(json!({}))),
        (Method::GET, format!("{path}/requests"), None),
        (Method::POST, format!("{path}/requests"), Some(form.clone())),
    ] {
        let what = format!("{method} {at}");
        let r = env.call(method, &at, Some(&bob), body).await;
        assert_eq!(r.status.as_u16(), 404, "{what}: {}", r.body);
        crate::common::assert_error_shape(&r.body);
    }

    // Alice's request is invisible to Bob too, and neither list shows him anything.
    let rid = env.file_request(&id, &alice, form).await;
    env.get(&format!("/v1/requests/{rid}"), Some(&bob))
        .await
        .expect(404);
    for list in ["/v1/apps", "/v1/requests"] {
        let items = env.get(list, Some(&bob)).await.expect_list();
        assert!(items.is_empty(), "{list}: {items:?}");
    }
    env.request_step(&rid, "approve", OPERATOR_KEY)
        .await
        .expect(200);
    env.request_step(&rid, "activate", &bob).await.expect(404);

    // Bob cannot create an app in Alice's (or anyone else's) name; the operator can.
    env.post(
        "/v1/apps",
        Some(&alice),
        json!({"name": "x", "owner_id": bob_id}),
    )
    .await
    .expect(403);
    let for_bob = env
        .post(
            "/v1/apps",
            Some(OPERATOR_KEY),
            json!({"name": "ops-made", "owner_id": bob_id}),
        )
        .await
        .expect(201);
    assert_eq!(for_bob["app"]["owner_id"], bob_id.as_str());
    env.post(
        "/v1/apps",
        Some(OPERATOR_KEY),
        json!({"name": "x", "owner_id": "o-nobody"}),
    )
    .await
    .expect_field("owner_id");
    let bobs = env.get("/v1/apps", Some(&bob)).await.expect_list();
    assert_eq!(bobs.len(), 1);

    // The operator sees everything.
    let all = env.get("/v1/apps", Some(OPERATOR_KEY)).await.expect_list();
    assert_eq!(all.len(), 2);
    env.get(&path, Some(OPERATOR_KEY)).await.expect(200);
    let requests = env.get("/v1/requests", Some(OPERATOR_KEY)).await;
    assert_eq!(requests.expect_list().len(), 1);

    // Alice still has her app after Bob's attempts.
    env.get(&path, Some(&alice)).await.expect(200);
}

async fn errors_and_openapi(env: Env) {
    // Unknown paths and methods answer in the error shape too.
    let r = env
        .get("/v1/nothing-here", Some(OPERATOR_KEY))
        .await
        .expect(404);
    assert_eq!(r["error"]["code"], "not_found");
    let r = env
        .call(Method::PATCH, "/v1/apps", Some(OPERATOR_KEY), None)
        .await
        .expect(405);
    assert_eq!(r["error"]["code"], "method_not_allowed");

    // Broken JSON names `body`; an unknown field is named.
    let raw = post_raw(
        &env.http,
        &env.base,
        "/v1/apps",
        OPERATOR_KEY,
        "{\"name\": ",
    )
    .await;
    assert_eq!(raw.status().as_u16(), 400);
    let body: serde_json::Value = raw.json().await.unwrap();
    crate::common::assert_error_shape(&body);
    assert_eq!(body["error"]["fields"][0]["field"], "body");
    for (body, field) in [
        (json!({"name": "a", "colour": "red"}), "colour"),
        (json!({"name": 7}), "name"),
        (json!({}), "name"),
    ] {
        env.post("/v1/apps", Some(OPERATOR_KEY), body)
            .await
            .expect_field(field);
    }

    // Health and the OpenAPI document need no key.
    let health = env.get("/healthz", None).await.expect(200);
    assert_eq!(
        health["backend"],
        match env.backend {
            crate::common::Backend::Sqlite => "sqlite",
            crate::common::Backend::Postgres => "postgres",
        }
    );
    let doc = env.get("/openapi.json", None).await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/apps",
        "/v1/apps/{id}/rotate",
        "/v1/requests/{id}/approve",
        "/v1/edges/{id}",
        "/v1/allowlist/{region}",
        "/allowlist",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    for schema in [
        "ErrorBody",
        "EnablementInput",
        "AllowList",
        "Region",
        "QualityTier",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Stated once for the document: the bearer key by default, no key on a public operation,
    // and ErrorBody as the errors of every /v1/ operation that lists none of its own.
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    assert_eq!(doc["paths"]["/v1/proxies"]["get"]["security"], json!([{}]));
    assert!(doc["paths"]["/v1/apps"]["get"]["security"].is_null());
    for (path, method) in [("/v1/apps", "get"), ("/v1/requests/{id}/{step}", "post")] {
        assert_eq!(
            doc["paths"][path][method]["responses"]["4XX"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/ErrorBody",
            "{method} {path}"
        );
    }
    assert!(doc["paths"]["/allowlist"]["get"]["responses"]["4XX"].is_null());
}

/// An operator-only endpoint (`Api<Operator>`) refuses an owner's key before it reads the
/// body: an owner sending an invalid body gets 403, not the 400 the operator gets for the
/// same body (which would tell the owner what the body lacks).
async fn operator_only_refuses_owners_before_reading_the_body(env: Env) {
    let (_, owner_key) = env.owner("Acme").await;
    let app = env.app_id(&owner_key, "acme app").await;
    let form = crate::requests::form("japan", 1, 2, 1);
    let rid = env.file_request(&app, &owner_key, form).await;
    let reject = format!("/v1/requests/{rid}/reject");
    let approve = format!("/v1/requests/{rid}/approve");
    for (path, body) in [
        ("/v1/owners", json!({})),
        ("/v1/owners", json!({"name": 7})),
        (reject.as_str(), json!({})),
        (reject.as_str(), json!({"reason": ["no"]})),
        (approve.as_str(), json!({"effective_at": "soon"})),
    ] {
        let r = env.post(path, Some(&owner_key), body.clone()).await;
        let r = r.expect(403);
        assert_eq!(r["error"]["code"], "forbidden", "{path} {body}");
        env.post(path, Some(OPERATOR_KEY), body).await.expect(400);
    }
    for path in ["/v1/owners", reject.as_str()] {
        let broken = "{\"name\": ";
        let owner = post_raw(&env.http, &env.base, path, &owner_key, broken).await;
        assert_eq!(owner.status().as_u16(), 403, "{path}");
        let operator = post_raw(&env.http, &env.base, path, OPERATOR_KEY, broken).await;
        assert_eq!(operator.status().as_u16(), 400, "{path}");
    }
    // None of it touched the request.
    let path = format!("/v1/requests/{rid}");
    let req = env.get(&path, Some(&owner_key)).await.expect(200);
    assert_eq!(req["state"], "submitted");

    // A lifecycle step is a POST: GET on a step's path, known step or not, is 405.
    for step in ["activate", "revoke", "frobnicate"] {
        let path = format!("/v1/requests/{rid}/{step}");
        let r = env.call(Method::GET, &path, Some(OPERATOR_KEY), None).await;
        assert_eq!(
            r.expect(405)["error"]["code"],
            "method_not_allowed",
            "{path}"
        );
    }
}

on_both_backends!(smaller_gaps);

/// The auth scheme is case-insensitive (RFC 9110 §11.1); an oversized body is 413; an empty
/// id is a 404 with the JSON error, never a 500.
async fn smaller_gaps(env: Env) {
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let r = env
            .http
            .get(format!("{}/v1/apps", env.base))
            .header("authorization", format!("{scheme} {OPERATOR_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{scheme}");
        let r = env
            .http
            .get(format!("{}/v1/sync/apps", env.base))
            .header(
                "authorization",
                format!("{scheme}   {}", crate::common::RELAY_KEY),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{scheme} (relay)");
    }
    for bad in ["Basic abc", "Bearer", "Bearerx key", "Token key"] {
        let r = env
            .http
            .get(format!("{}/v1/apps", env.base))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{bad}");
    }

    // Past the 2 MiB body limit: 413 with the error shape, on a JSON body and on the
    // rotation's optional one.
    let (_, key) = env.owner("acme").await;
    let app = env.app(&key, "a").await;
    let app_id = app["app"]["id"].as_str().unwrap();
    for path in ["/v1/apps".to_string(), format!("/v1/apps/{app_id}/rotate")] {
        let (status, body) = oversized_post(&env.base, &path).await;
        assert_eq!(status, 413, "{path}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        crate::common::assert_error_shape(&body);
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    }

    // Empty ids in every id position.
    for (method, path) in [
        ("POST", "/v1/requests//approve"),
        ("POST", "/v1/requests//activate"),
        ("GET", "/v1/requests/"),
        ("GET", "/v1/apps/"),
        ("GET", "/v1/apps//usage"),
        ("POST", "/v1/apps//requests"),
        ("GET", "/v1/edges/"),
        ("PUT", "/v1/edges/"),
        ("POST", "/v1/edges//heartbeat"),
        ("GET", "/v1/owners/"),
        ("GET", "/v1/allowlist/"),
        // NUL, which PostgreSQL cannot compare, and not UTF-8.
        ("POST", "/v1/requests/%00/approve"),
        ("POST", "/v1/requests/%00/revoke"),
        ("GET", "/v1/requests/%00"),
        ("GET", "/v1/apps/%00"),
        ("GET", "/v1/apps/%00/usage"),
        ("GET", "/v1/owners/%00"),
        ("GET", "/v1/edges/%00"),
        ("GET", "/v1/apps/%ff"),
    ] {
        env.call(
            method.parse().unwrap(),
            path,
            Some(OPERATOR_KEY),
            Some(json!({})),
        )
        .await
        .expect_400_or_404(&format!("{method} {path}"));
    }

    // A NUL in any string of a body is a 400, before it reaches the database.
    let nul = "a\u{0}b";
    env.post("/v1/apps", Some(OPERATOR_KEY), json!({ "name": nul }))
        .await
        .expect_field("body");
    let report = json!({"report_id": "r", "relay_id": "r1", "records": [
        {"app_id": nul, "day": "2026-11-28", "mode": "auto", "quality": null,
         "seconds": 1, "bytes": 1, "peak_concurrency": 1}]});
    env.post("/v1/usage", Some(crate::common::RELAY_KEY), report)
        .await
        .expect_field("body");
    let release = json!({"relay_id": nul, "lease_ids": [nul]});
    env.post(
        "/v1/leases/release",
        Some(crate::common::RELAY_KEY),
        release,
    )
    .await
    .expect_field("body");
}

/// POSTs a body announced as 3 MiB, of which only the limit and 64 KiB more are sent: the
/// server answers once past the limit, and having read all that was sent, it closes without
/// a reset that could lose its answer.
async fn oversized_post(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        3 << 20
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; (2 << 20) + (64 << 10)])
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("an answer before the whole body")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}
