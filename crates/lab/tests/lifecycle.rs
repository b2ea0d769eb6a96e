//! The lab builds what the crate docs promise, never touches the host's namespace, cleans up
//! after itself (also on panic and after crashed runs), keeps concurrent labs apart, and bounds
//! every wait.

mod common;

use std::panic;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloudproxy_lab::{cleanup_stale, Lab, LabError, Profile, Role};
use common::*;

fn run_text(lab: &Lab, role: Role, program: &str, args: &[&str]) -> String {
    let out = lab
        .run(role, program, args, Duration::from_secs(10))
        .expect("run");
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn topology_matches_the_docs_and_leaves_the_host_alone() {
    let Some(lab) = lab(Profile::Open) else {
        return;
    };
    let client = run_text(
        &lab,
        Role::Client,
        "ip",
        &["-4", "addr", "show", "dev", "eth0"],
    );
    assert!(client.contains("10.201.1.2/24"), "{client}");
    let relay = run_text(
        &lab,
        Role::Relay,
        "ip",
        &["-4", "addr", "show", "dev", "eth0"],
    );
    for addr in ["10.201.2.2/24", "10.201.2.3/24", "10.201.2.4/24"] {
        assert!(relay.contains(addr), "{addr} missing: {relay}");
    }
    let route = run_text(&lab, Role::Media, "ip", &["route", "show", "default"]);
    assert!(route.contains("via 10.201.3.1"), "{route}");
    let forward = |role| run_text(&lab, role, "cat", &["/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(forward(Role::Router).trim(), "1");
    assert_eq!(forward(Role::Client).trim(), "0");
    // No IPv6 on the links (no chatter for the counters), but ::1 stays for [::] binds.
    let v6 = run_text(
        &lab,
        Role::Client,
        "ip",
        &["-6", "addr", "show", "dev", "eth0"],
    );
    assert!(v6.trim().is_empty(), "{v6}");
    let lo6 = run_text(
        &lab,
        Role::Client,
        "ip",
        &["-6", "addr", "show", "dev", "lo"],
    );
    assert!(lo6.contains("::1"), "{lo6}");
    let rules = lab.ruleset().expect("ruleset");
    assert!(rules.contains("table inet lab") && rules.contains("policy drop"));

    let host = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    let host = String::from_utf8_lossy(&host.stdout);
    for name in ["to-client", "to-relay", "to-media", "sink"] {
        assert!(
            !host.contains(&format!(" {name}")),
            "{name} in the host: {host}"
        );
    }
}

#[test]
fn teardown_kills_processes_and_removes_every_namespace() {
    let Some(mut lab) = lab(Profile::Open) else {
        return;
    };
    let server = serve(&lab, Role::Media, &["udp:0.0.0.0:5000"]);
    let names: Vec<String> = Role::ALL.iter().map(|&r| lab.netns(r)).collect();
    assert!(names.iter().all(|n| namespaces().contains(n)));
    lab.teardown().expect("teardown");
    let left = namespaces();
    assert!(names.iter().all(|n| !left.contains(n)), "left: {left:?}");
    assert!(
        server.try_wait().expect("try_wait").is_some(),
        "server survived"
    );
    assert!(matches!(
        lab.run(Role::Client, "true", [""; 0], Duration::from_secs(1)),
        Err(LabError::TornDown(_))
    ));
    lab.teardown().expect("teardown is idempotent");
}

#[test]
fn a_panicking_test_still_removes_its_namespaces() {
    // Only to skip where labs cannot run (this first lab is dropped at once).
    if lab(Profile::Nothing { published: vec![] }).is_none() {
        return;
    }
    let names = Mutex::new(Vec::new());
    let result = panic::catch_unwind(|| {
        let lab = Lab::new(Profile::Nothing { published: vec![] }).expect("lab");
        let _server = serve(&lab, Role::Relay, &["tcp:0.0.0.0:443"]);
        *names.lock().unwrap() = Role::ALL.iter().map(|&r| lab.netns(r)).collect::<Vec<_>>();
        panic!("deliberate");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 4);
    let left = namespaces();
    assert!(names.iter().all(|n| !left.contains(n)), "left: {left:?}");
}

#[test]
fn cleanup_stale_removes_labs_of_dead_processes_only() {
    let Some(live) = lab(Profile::Open) else {
        return;
    };
    // A pid above pid_max can never be alive: this stands for a crashed run.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("pid_max number");
    let stale = format!("cpl{}x0c", pid_max + 1);
    let added = Command::new("ip").args(["netns", "add", &stale]).status();
    assert!(added.expect("ip netns add").success());
    let removed = cleanup_stale().expect("cleanup_stale");
    let left = namespaces();
    assert!(!left.contains(&stale), "{stale} left");
    assert!(
        removed.contains(&stale) || !left.contains(&stale),
        "{removed:?}"
    );
    for role in Role::ALL {
        assert!(left.contains(&live.netns(role)), "live lab lost {role}");
    }
}

#[test]
fn two_labs_at_once_stay_apart() {
    let Some(open) = lab(Profile::Open) else {
        return;
    };
    let Some(closed) = lab(Profile::Nothing { published: vec![] }) else {
        return;
    };
    assert_ne!(open.id(), closed.id());
    let _a = start_servers(&open);
    let _b = start_servers(&closed);
    assert_eq!(udp(&open, Role::Client, MEDIA_UDP, 10).received, 10);
    assert_eq!(udp(&closed, Role::Client, MEDIA_UDP, 10).received, 0);
    assert_eq!(open.outside_count().expect("count"), 0);
    assert_eq!(closed.outside_count().expect("count"), 10);
    assert_eq!(closed.dropped_count().expect("count"), 10);
}

#[test]
fn every_wait_is_bounded() {
    let Some(lab) = lab(Profile::Open) else {
        return;
    };
    let start = Instant::now();
    let slow = lab.run(Role::Client, "sleep", ["30"], Duration::from_millis(300));
    assert!(matches!(slow, Err(LabError::Timeout { .. })), "{slow:?}");
    assert!(start.elapsed() < Duration::from_secs(5));

    let silent = lab.spawn(Role::Relay, "sleep", ["30"]).expect("spawn");
    let waited = silent.wait_for_line(Duration::from_millis(200), |_| true);
    assert!(
        matches!(waited, Err(LabError::Timeout { .. })),
        "{waited:?}"
    );
    assert!(matches!(
        silent.wait(Duration::from_millis(100)),
        Err(LabError::Timeout { .. })
    ));

    let quitter = lab
        .spawn(
            Role::Media,
            "sh",
            ["-c", "echo starting; echo oops >&2; exit 3"],
        )
        .expect("spawn");
    let ended = quitter.wait_for_line(Duration::from_secs(5), |l| l == "ready");
    match ended {
        Err(LabError::Ended { ref stderr, .. }) => assert!(stderr.contains("oops"), "{stderr}"),
        other => panic!("expected Ended, got {other:?}"),
    }
    let out = quitter.finish(Duration::from_secs(5)).expect("finish");
    assert_eq!(out.status.code(), Some(3));
    assert!(start.elapsed() < Duration::from_secs(10));

    let missing = lab.spawn(Role::Client, "/nonexistent/program", [""; 0]);
    let early = missing.and_then(|c| c.finish(Duration::from_secs(5)));
    assert!(!early.expect("ip netns exec reports it").status.success());
}
