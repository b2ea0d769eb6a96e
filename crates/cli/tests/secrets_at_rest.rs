//! Secrets at rest: every file that holds an app's secret (the control plane's SQLite
//! database with its WAL and shared-memory files, the relay's sync cache, the operator key,
//! the demo app's credential) is 0600 and a directory we create is 0700; a file found wider,
//! as earlier versions wrote them, is set to 0600 with a warning.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::control::{start_control_on, Credential};
use common::{cloudproxy_bin, reserve_ports, wait_for_listeners, ChildGuard, TempDir};

const PATIENCE: Duration = Duration::from_secs(60);
const OPERATOR: &str = "operator-key-secrets-0123456789";
const RELAY_KEY: &str = "relay-key-secrets-0123456789";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// (name, mode) of every file in `dir`, sorted.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                mode(&e.path()),
            )
        })
        .collect();
    out.sort();
    out
}

/// `cloudproxy up` with `data` as its data directory, once it is ready and the relay has
/// written its sync cache.
fn start_up(data: &Path) -> ChildGuard {
    let up = common::up::start_up(data, PATIENCE);
    let cache = data.join("relay-sync.json");
    up.guard
        .wait_until(PATIENCE, "no relay-sync.json", || cache.exists());
    up.guard
}

const UP_FILES: [&str; 6] = [
    "control.db",
    "control.db-shm",
    "control.db-wal",
    "demo-app.json",
    "operator.key",
    "relay-sync.json",
];

#[test]
fn up_keeps_every_secret_private() {
    let dir = TempDir::new("secrets-up");
    let data = dir.0.join("fresh/state");
    let mut up = start_up(&data);
    assert_eq!(mode(&data), 0o700, "the data directory it created");
    let found = modes(&data);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for f in UP_FILES {
        assert!(names.contains(&f), "{f} missing from {found:?}");
    }
    // Every file, not only the expected ones: nothing else may be readable either.
    for (name, m) in &found {
        assert_eq!(*m, 0o600, "{name} is {m:04o}: {found:?}");
    }
    // The demo app's secret is really in the sync cache and the database (what makes them
    // secret-holding).
    let secret = Credential::demo(&data).secret;
    let cache = std::fs::read_to_string(data.join("relay-sync.json")).unwrap();
    assert!(cache.contains(&secret), "the cache holds the app's secret");
    println!(
        "up: {:?}",
        found
            .iter()
            .map(|(n, m)| format!("{n} {m:04o}"))
            .collect::<Vec<_>>()
    );

    // As an earlier version left them: everything 0644. The next start makes them 0600 and
    // says so.
    up.kill();
    for (name, _) in modes(&data) {
        set_mode(&data.join(name), 0o644);
    }
    let up = start_up(&data);
    let found = modes(&data);
    for (name, m) in &found {
        assert_eq!(*m, 0o600, "{name} is {m:04o} after a restart: {found:?}");
    }
    let out = up.output.text();
    for f in [
        "control.db",
        "operator.key",
        "demo-app.json",
        "relay-sync.json",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains("WARN") && l.contains(f) && l.contains("now 0600")),
            "no warning for {f}:\n{out}"
        );
    }
}

#[test]
fn relay_sync_cache_is_private() {
    let dir = TempDir::new("secrets-relay");
    let control_addr = format!("127.0.0.1:{}", reserve_ports(1, true)[0]);
    let db = dir.0.join("db/control.db");
    let db_url = format!("sqlite:{}", db.display());
    let control = start_control_on(control_addr, &db_url, OPERATOR, RELAY_KEY, &[]);
    let control_addr = control.addr.clone();
    let api = |method: &str, path: &str, body: &str| {
        control.ok(method, path, serde_json::from_str(body).unwrap())
    };
    api(
        "PUT",
        "/v1/edges/jp-secrets/cidrs",
        r#"{"cidrs": ["127.0.0.0/8"]}"#,
    );
    let app = api("POST", "/v1/apps", r#"{"name": "secrets"}"#);
    let secret = app["credentials"]["secret"].as_str().unwrap().to_owned();

    // A cache left 0644 by an earlier version.
    let cache = dir.0.join("relay-sync.json");
    std::fs::write(&cache, "{}").unwrap();
    set_mode(&cache, 0o644);
    let p = reserve_ports(3, true);
    let relay_ports = reserve_ports(4, false);
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.arg("relay")
        .args(["--udp", &format!("127.0.0.1:{}", p[0])])
        .args(["--tcp", &format!("127.0.0.1:{}", p[1])])
        .args(["--metrics", &format!("127.0.0.1:{}", p[2])])
        .args(["--relay-ip", "127.0.0.1"])
        .args([
            "--relay-ports",
            &format!("{}-{}", relay_ports[0], relay_ports[3]),
        ])
        .args(["--control", &format!("http://{control_addr}")])
        .args(["--control-key", RELAY_KEY, "--edge-id", "jp-secrets"])
        .args(["--region", "japan", "--pool", "static"])
        .args(["--sync-cache", cache.to_str().unwrap()])
        .env("RUST_LOG", "info");
    let (mut relay, lines) = ChildGuard::spawn("cloudproxy relay", cmd).unwrap();
    wait_for_listeners(&mut relay, &lines, &["udp", "metrics"])
        .unwrap_or_else(|e| panic!("relay did not start: {e}\n{}", relay.output.text()));
    relay.wait_until(
        PATIENCE,
        "the sync cache never got the app's secret",
        || std::fs::read_to_string(&cache).is_ok_and(|c| c.contains(&secret)),
    );
    assert_eq!(mode(&cache), 0o600, "the sync cache");
    let out = relay.output.text();
    assert!(
        out.lines()
            .any(|l| l.contains("WARN") && l.contains("relay-sync.json") && l.contains("now 0600")),
        "no warning for the 0644 cache:\n{out}"
    );
    // No other file next to it (the temporary one is renamed away).
    let files = modes(&dir.0);
    for (name, m) in &files {
        if name != "db" {
            assert_eq!(*m, 0o600, "{name} is {m:04o}: {files:?}");
        }
    }

    // A sync with something new rewrites the cache: still 0600.
    let second = api("POST", "/v1/apps", r#"{"name": "secrets-2"}"#);
    let secret2 = second["credentials"]["secret"].as_str().unwrap().to_owned();
    relay.wait_until(
        PATIENCE,
        "the sync cache never got the second secret",
        || std::fs::read_to_string(&cache).is_ok_and(|c| c.contains(&secret2)),
    );
    assert_eq!(mode(&cache), 0o600, "the rewritten sync cache");

    // `cloudproxy control`'s own SQLite files, in the directory it created.
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    let db_files = modes(db.parent().unwrap());
    assert!(db_files.len() >= 3, "control.db, -wal, -shm: {db_files:?}");
    for (name, m) in &db_files {
        assert_eq!(*m, 0o600, "{name} is {m:04o}: {db_files:?}");
    }
    println!(
        "relay cache {:04o}; control db files {:?}",
        mode(&cache),
        db_files
            .iter()
            .map(|(n, m)| format!("{n} {m:04o}"))
            .collect::<Vec<_>>()
    );
}
