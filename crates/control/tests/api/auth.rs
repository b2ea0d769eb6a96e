//! Authentication, roles, owner isolation, the error shape and the OpenAPI document.

use serde_json::json;

use crate::common::{Env, OPERATOR_KEY};
use crate::on_both_backends;

on_both_backends!(
    keys_and_roles,
    owners_cannot_see_each_other,
    errors_and_openapi
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
    let apps = env.get("/v1/apps", Some(&owner_key)).await.expect(200);
    assert_eq!(apps.as_array().unwrap().len(), 1);
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
    let app = env.app(&alice, "alice's app").await;
    let id = app["app"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/apps/{id}");

    // Bob gets 404 for Alice's app on every path, exactly as for an id that does not exist.
    let hidden = env.get(&path, Some(&bob)).await.expect(404);
    let missing = env
        .get("/v1/apps/0123456789abcdef0123456789abcdef", Some(&bob))
        .await
        .expect(404);
    assert_eq!(hidden["error"]["code"], missing["error"]["code"]);
    env.delete(&path, Some(&bob)).await.expect(404);
    env.post(&format!("{path}/rotate"), Some(&bob), json!({}))
        .await
        .expect(404);
    env.get(&format!("{path}/requests"), Some(&bob))
        .await
        .expect(404);
    let form = crate::requests::form("japan", 1, 2, 1);
    env.post(&format!("{path}/requests"), Some(&bob), form.clone())
        .await
        .expect(404);
    assert!(env
        .get("/v1/apps", Some(&bob))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .is_empty());

    // Alice's request is invisible to Bob too.
    let req = env
        .post(&format!("{path}/requests"), Some(&alice), form)
        .await
        .expect(201);
    let rid = req["id"].as_str().unwrap();
    env.get(&format!("/v1/requests/{rid}"), Some(&bob))
        .await
        .expect(404);
    assert!(env
        .get("/v1/requests", Some(&bob))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .is_empty());
    env.post(
        &format!("/v1/requests/{rid}/approve"),
        Some(OPERATOR_KEY),
        json!({}),
    )
    .await
    .expect(200);
    env.post(
        &format!("/v1/requests/{rid}/activate"),
        Some(&bob),
        json!({}),
    )
    .await
    .expect(404);

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
    let bobs = env.get("/v1/apps", Some(&bob)).await.expect(200);
    assert_eq!(bobs.as_array().unwrap().len(), 1);

    // The operator sees everything.
    assert_eq!(
        env.get("/v1/apps", Some(OPERATOR_KEY))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    env.get(&path, Some(OPERATOR_KEY)).await.expect(200);
    assert_eq!(
        env.get("/v1/requests", Some(OPERATOR_KEY))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

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
        .call(reqwest::Method::PATCH, "/v1/apps", Some(OPERATOR_KEY), None)
        .await
        .expect(405);
    assert_eq!(r["error"]["code"], "method_not_allowed");

    // Broken JSON names `body`; an unknown field is named.
    let raw = env
        .http
        .post(format!("{}/v1/apps", env.base))
        .bearer_auth(OPERATOR_KEY)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: serde_json::Value = raw.json().await.unwrap();
    crate::common::assert_error_shape(&body);
    assert_eq!(body["error"]["fields"][0]["field"], "body");
    env.post(
        "/v1/apps",
        Some(OPERATOR_KEY),
        json!({"name": "a", "colour": "red"}),
    )
    .await
    .expect_field("colour");
    env.post("/v1/apps", Some(OPERATOR_KEY), json!({"name": 7}))
        .await
        .expect_field("name");
    env.post("/v1/apps", Some(OPERATOR_KEY), json!({}))
        .await
        .expect_field("name");

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
}
