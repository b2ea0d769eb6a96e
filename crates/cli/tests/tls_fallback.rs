//! When 443 cannot be bound (no root, no CAP_NET_BIND_SERVICE), the relay says so and listens
//! for TLS on the documented fallback port, 5349. Run as an unprivileged user via `setpriv`
//! (needs root to switch user; skipped loudly otherwise, and under CI it must run).

mod common;

use std::process::Command;

use common::{cloudproxy_bin, in_ci, reserve_ports, wait_for_listeners, which, ChildGuard};

#[test]
fn tls_falls_back_to_5349_without_privilege() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root || which("setpriv").is_none() {
        assert!(
            !in_ci(),
            "CI runs as root with setpriv: this test must run there"
        );
        eprintln!(
            "\n*** SKIPPED tls_falls_back_to_5349_without_privilege: needs root and setpriv\n"
        );
        return;
    }
    if std::net::TcpListener::bind("127.0.0.1:5349").is_err() {
        assert!(!in_ci(), "port 5349 is taken on the CI machine");
        eprintln!("\n*** SKIPPED tls_falls_back_to_5349_without_privilege: 5349 is taken here\n");
        return;
    }
    // The checkout may sit where `nobody` cannot read (e.g. under /root): run a copy from a
    // world-readable temporary directory.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("cloudproxy-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("cloudproxy");
    std::fs::copy(cloudproxy_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = reserve_ports(1, true)[0];
    let listen = format!("127.0.0.1:{port}");
    // setpriv execs the relay in place (runuser would fork, and killing it would leave the
    // relay running).
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&bin)
        .args(["relay", "--udp", &listen, "--tcp", &listen])
        .args([
            "--tls",
            "127.0.0.1:443",
            "--no-metrics",
            "--static-secret",
            "s",
        ])
        .env("NO_COLOR", "1");
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy relay (nobody)", cmd).unwrap();
    let found = wait_for_listeners(&mut guard, &lines, &["tls"])
        .unwrap_or_else(|e| panic!("relay did not start: {e}\n{}", guard.output.text()));
    assert_eq!(found[0].1, "127.0.0.1:5349".parse().unwrap());
    let out = guard.output.text();
    assert!(
        out.contains("cannot bind TLS") && out.contains("5349"),
        "the fallback is said clearly:\n{out}"
    );
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
