//! `Control::start`/`stop`: configuration errors, the generated operator key, and SQLite
//! data surviving a restart.

use cloudproxy_control::{Control, ControlConfig, ControlError};
use serde_json::json;

use crate::common::{call, client, start, Backend, Db, OPERATOR_KEY};

fn config(database: &str) -> ControlConfig {
    ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: database.into(),
        operator_key: None,
        workers: 1,
        ..ControlConfig::default()
    }
}

#[test]
fn configuration_errors_are_typed() {
    let bad_key = Control::start(ControlConfig {
        operator_key: Some("short".into()),
        ..config("sqlite::memory:")
    });
    assert!(matches!(bad_key, Err(ControlError::OperatorKey)));
    assert!(matches!(
        Control::start(config("mysql://x")),
        Err(ControlError::DatabaseUrl(_))
    ));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Control::start(ControlConfig {
        listen: taken.local_addr().unwrap(),
        ..config("sqlite::memory:")
    })
    .err()
    .expect("the port is taken");
    assert!(matches!(err, ControlError::Bind { .. }));
    assert!(err
        .to_string()
        .contains(&taken.local_addr().unwrap().to_string()));
    let unreachable = Control::start(config("postgres://nobody@127.0.0.1:1/none"));
    assert!(
        matches!(unreachable, Err(ControlError::Connect(_))),
        "{:?}",
        unreachable.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_operator_key_works_in_memory() {
    let control = Control::start(config("sqlite::memory:")).unwrap();
    assert!(control.operator_key_generated());
    assert_eq!(control.backend(), "sqlite");
    let key = control.operator_key().to_owned();
    assert!(key.starts_with("cpo_") && key.len() > 40);
    let base = format!("http://{}", control.local_addr());
    let http = client();
    call(
        &http,
        &base,
        reqwest::Method::POST,
        "/v1/apps",
        Some(&key),
        Some(json!({"name": "a"})),
    )
    .await
    .expect(201);
    call(
        &http,
        &base,
        reqwest::Method::GET,
        "/v1/apps",
        Some(OPERATOR_KEY),
        None,
    )
    .await
    .expect(401);
    let addr = control.local_addr();
    tokio::task::spawn_blocking(move || control.stop())
        .await
        .unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_survives_a_restart() {
    let db = Db::new(Backend::Sqlite).await.unwrap();
    let http = client();
    let first = start(&db.url);
    let base = format!("http://{}", first.local_addr());
    let created = call(
        &http,
        &base,
        reqwest::Method::POST,
        "/v1/apps",
        Some(OPERATOR_KEY),
        Some(json!({"name": "kept"})),
    )
    .await
    .expect(201);
    tokio::task::spawn_blocking(move || first.stop())
        .await
        .unwrap();

    let second = start(&db.url);
    let base = format!("http://{}", second.local_addr());
    let id = created["app"]["id"].as_str().unwrap();
    let app = call(
        &http,
        &base,
        reqwest::Method::GET,
        &format!("/v1/apps/{id}"),
        Some(OPERATOR_KEY),
        None,
    )
    .await
    .expect(200);
    assert_eq!(app["name"], "kept");
    tokio::task::spawn_blocking(move || second.stop())
        .await
        .unwrap();
}
