//! `cloudproxy control` as a user starts it: it prints its address and a generated operator
//! key, serves the API with that key, refuses requests without one, and stops on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{cloudproxy_bin, http, reserve_ports, ChildGuard};

#[test]
fn control_serves_the_api_with_its_generated_operator_key() {
    let dir = std::env::temp_dir().join(format!("cp-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("control.db").display());
    let addr = format!("127.0.0.1:{}", reserve_ports(1, true)[0]);
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["control", "--listen", &addr, "--database", &db]);
    let (guard, lines) = ChildGuard::spawn("cloudproxy control", cmd).unwrap();
    let mut key = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while key.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no operator key printed:\n{}", guard.output.text()));
        key = line
            .strip_prefix("operator key (generated for this run): ")
            .map(str::to_owned);
    }
    let key = key.unwrap();
    let (code, body) = http(&addr, "POST", "/v1/apps", Some(&key), r#"{"name":"demo"}"#);
    assert_eq!(code, 201, "{body}");
    assert!(body.contains("\"secret\""), "{body}");
    let (code, _) = http(&addr, "GET", "/v1/apps", None, "");
    assert_eq!(code, 401);
    let (code, body) = http(&addr, "POST", "/v1/apps", Some(&key), r#"{"nmae":"x"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nmae"), "the bad field is named: {body}");
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
