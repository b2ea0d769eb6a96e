//! Applications: creation with a secret shown once, rotation with a grace period, suspension,
//! deletion, and the keys relays sync (compatible with `cloudproxy_proto::AppKey`).

use cloudproxy_proto::auth::Authenticator;
use cloudproxy_proto::token::{self, Token, VerifyReason};
use cloudproxy_proto::{AppKey, AuthConfig};
use serde_json::{json, Value};

use cloudproxy_control::store::Store;

use crate::common::{column, now, Env, OPERATOR_KEY};
use crate::on_both_backends;

on_both_backends!(
    create_get_list_delete,
    rotation_keeps_old_key_for_grace,
    suspension_and_sync
);

/// The relay's view of `/v1/sync/apps`: `AppKey`s parsed from the `APP:KEY:SECRET` spec the
/// relay's flags take, with `not_after` carried over.
async fn synced_keys(env: &Env) -> Vec<AppKey> {
    let sync = env.sync(OPERATOR_KEY).await;
    let mut keys = Vec::new();
    for app in sync["apps"].as_array().unwrap() {
        for k in app["keys"].as_array().unwrap() {
            let spec = format!(
                "{}:{}:{}",
                app["app_id"].as_str().unwrap(),
                k["key_id"].as_str().unwrap(),
                k["secret"].as_str().unwrap()
            );
            let mut key: AppKey = spec.parse().expect("a valid APP:KEY:SECRET");
            key.not_after = k["not_after"].as_u64();
            keys.push(key);
        }
    }
    keys
}

fn verify(keys: &[AppKey], token: &Token, at: u64) -> Result<(), VerifyReason> {
    let auth = Authenticator::new(&AuthConfig {
        static_secret: None,
        app_keys: keys.to_vec(),
    });
    token::verify(&auth, token, at)
        .map(|_| ())
        .map_err(|e| e.reason)
}

async fn create_get_list_delete(env: Env) {
    let (owner_id, key) = env.owner("Acme").await;
    let created = env.app(&key, "  Video app  ").await;
    let app = &created["app"];
    let id = app["id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(app["name"], "Video app");
    assert_eq!(app["owner_id"], owner_id.as_str());
    assert_eq!(app["status"], "active");
    let creds = &created["credentials"];
    assert_eq!(creds["app_id"], id);
    assert_eq!(creds["key_id"], "k1");
    let secret = creds["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64);

    // The secret is shown once: reads never include it.
    let got = env
        .get(&format!("/v1/apps/{id}"), Some(&key))
        .await
        .expect(200);
    assert!(!got.to_string().contains(secret));
    assert_eq!(
        got["keys"],
        json!([{"key_id": "k1", "created_at": app["created_at"], "not_after": null}])
    );
    let list = env.get("/v1/apps", Some(&key)).await.expect(200);
    assert!(!list.to_string().contains(secret));
    assert_eq!(list[0]["id"], id);

    // A token minted with the secret verifies against the synced keys.
    let t = Token::mint(id, "k1", secret.as_bytes(), "room", 7, now() + 600).unwrap();
    assert_eq!(verify(&synced_keys(&env).await, &t, now()), Ok(()));

    // Delete: 204, then 404 everywhere, and the keys leave the sync.
    env.delete(&format!("/v1/apps/{id}"), Some(&key))
        .await
        .expect(204);
    env.get(&format!("/v1/apps/{id}"), Some(&key))
        .await
        .expect(404);
    env.delete(&format!("/v1/apps/{id}"), Some(&key))
        .await
        .expect(404);
    assert_eq!(
        verify(&synced_keys(&env).await, &t, now()),
        Err(VerifyReason::UnknownApp)
    );

    // Bad names are 400 on `name`.
    env.post("/v1/apps", Some(&key), json!({"name": "x".repeat(101)}))
        .await
        .expect_field("name");
}

async fn rotation_keeps_old_key_for_grace(env: Env) {
    let (_, key) = env.owner("Acme").await;
    let created = env.app(&key, "rotating").await;
    let id = created["app"]["id"].as_str().unwrap().to_owned();
    let old_secret = created["credentials"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/apps/{id}/rotate");

    let before = now();
    let rotated = env
        .post(&path, Some(&key), json!({"grace_seconds": 3600}))
        .await
        .expect(200);
    let new_secret = rotated["credentials"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rotated["credentials"]["key_id"], "k2");
    assert_ne!(new_secret, old_secret);
    let retiring = rotated["retiring"].as_array().unwrap();
    assert_eq!(retiring.len(), 1);
    assert_eq!(retiring[0]["key_id"], "k1");
    let not_after = retiring[0]["not_after"].as_u64().unwrap();
    assert!(
        (before + 3600..=now() + 3600).contains(&not_after),
        "{not_after}"
    );

    // Both keys authenticate until k1's not_after; then only k2.
    let keys = synced_keys(&env).await;
    assert_eq!(keys.len(), 2);
    // The library function relays will sync through returns the same `AppKey`s.
    let store = Store::open(&env.db.url).await.unwrap();
    let direct = store.app_keys(now() as i64).await.unwrap();
    store.close().await;
    let fields = |keys: &[AppKey]| {
        let mut v: Vec<_> = keys
            .iter()
            .map(|k| {
                (
                    k.app_id.clone(),
                    k.key_id.clone(),
                    k.secret.clone(),
                    k.not_after,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(fields(&direct), fields(&keys));
    let old = Token::mint(&id, "k1", old_secret.as_bytes(), "room", 1, u64::MAX / 2).unwrap();
    let new = Token::mint(&id, "k2", new_secret.as_bytes(), "room", 1, u64::MAX / 2).unwrap();
    assert_eq!(verify(&keys, &old, now()), Ok(()));
    assert_eq!(verify(&keys, &new, now()), Ok(()));
    assert_eq!(
        verify(&keys, &old, not_after + 1),
        Err(VerifyReason::KeyRetired)
    );
    assert_eq!(verify(&keys, &new, not_after + 1), Ok(()));
    let app = env
        .get(&format!("/v1/apps/{id}"), Some(&key))
        .await
        .expect(200);
    assert_eq!(column(&app["keys"], "key_id"), ["k2", "k1"]);
    assert_eq!(app["keys"][0]["not_after"], Value::Null);

    // A rotation with no grace retires k1 and k2 at once; the sync drops them.
    let rotated = env
        .post(&path, Some(OPERATOR_KEY), json!({"grace_seconds": 0}))
        .await
        .expect(200);
    assert_eq!(rotated["credentials"]["key_id"], "k3");
    let mut retiring = column(&rotated["retiring"], "key_id");
    retiring.sort();
    assert_eq!(retiring, ["k1", "k2"]);
    let keys = synced_keys(&env).await;
    assert_eq!(
        keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(),
        ["k3"]
    );
    assert_eq!(verify(&keys, &new, now()), Err(VerifyReason::UnknownKey));

    // An empty body takes the default grace (one day); bad grace values name the field.
    let rotated = env
        .call(reqwest::Method::POST, &path, Some(&key), None)
        .await
        .expect(200);
    let na = rotated["retiring"][0]["not_after"].as_u64().unwrap();
    assert!(na >= before + 86_400, "{rotated}");
    env.post(&path, Some(&key), json!({"grace_seconds": -1}))
        .await
        .expect_field("grace_seconds");
    env.post(&path, Some(&key), json!({"grace_seconds": 99_999_999}))
        .await
        .expect_field("grace_seconds");
    env.post(&path, Some(&key), json!({"grace_seconds": "soon"}))
        .await
        .expect_field("grace_seconds");
    env.post("/v1/apps/nope/rotate", Some(&key), json!({}))
        .await
        .expect(404);
}

async fn suspension_and_sync(env: Env) {
    let (_, key) = env.owner("Acme").await;
    let id = env.app_id(&key, "a").await;
    let other = env.app_id(&key, "b").await;

    // Only the operator suspends and resumes.
    env.app_step(&id, "suspend", &key).await.expect(403);
    let s = env.app_step(&id, "suspend", OPERATOR_KEY).await.expect(200);
    assert_eq!(s["status"], "suspended");
    let sync = env.sync(OPERATOR_KEY).await;
    let entry = |app: &str| {
        sync["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["app_id"] == app)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry(&id)["status"], "suspended");
    assert!(entry(&id)["keys"].as_array().unwrap().is_empty());
    assert_eq!(entry(&other)["keys"].as_array().unwrap().len(), 1);
    assert!(sync["generated_at"].as_i64().unwrap() > 0);

    let r = env.app_step(&id, "resume", OPERATOR_KEY).await.expect(200);
    assert_eq!(r["status"], "active");
    assert_eq!(synced_keys(&env).await.len(), 2);
    env.app_step("nope", "suspend", OPERATOR_KEY)
        .await
        .expect(404);
}
