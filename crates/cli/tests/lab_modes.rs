//! The firewall lab: the client, the relay and the media service each in their own network
//! namespace, behind a router whose nftables rules play the locked-down network. Every mode is
//! driven through `cloudproxy join` as a user would run it, and in the Force modes the router's
//! drop-and-count rule proves the client sent nothing outside the published addresses.
//!
//! Needs root and network namespaces (CI has both). Without them the tests skip loudly, except
//! under CI, where they fail.

mod labworld;

use std::net::IpAddr;

use cloudproxy_lab::{Profile, Role, RELAY_ADDR};
use labworld::*;

fn assert_flows(run: &JoinRun, path: &str, send: u64) {
    assert!(run.ok, "join failed: {:#?}\n{}", run.lines, run.stderr);
    let s = run.summary();
    assert_eq!(s["path"], path, "{s}");
    assert_eq!(s["sent"], send, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
}

fn assert_fails_clearly(run: &JoinRun, mode: &str) {
    assert!(!run.ok, "{mode} must fail here: {:#?}", run.lines);
    let e = run
        .last("error")
        .unwrap_or_else(|| panic!("no error line: {:#?}\n{}", run.lines, run.stderr));
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("could not join"),
        "{e}"
    );
    assert!(!e["attempts"].as_array().unwrap().is_empty(), "{e}");
    assert!(e["elapsed_ms"].as_u64().unwrap() <= 6000, "bounded: {e}");
}

fn assert_nothing_outside(w: &World, what: &str) {
    let outside = w.lab.outside_count().unwrap();
    assert_eq!(
        outside,
        0,
        "{what}: the client sent {outside} packet(s) outside the published set\n{}",
        w.lab.ruleset().unwrap_or_default()
    );
}

#[test]
fn open_network_auto_goes_direct() {
    let Some(w) = world(Profile::Open) else {
        return;
    };
    let run = join(&w, "auto", &[pool_tls()], 1, 50);
    assert_flows(&run, "direct", 50);
    assert_eq!(run.last("is_using_cloud_proxy").unwrap()["using"], false);
    assert!(!run.has("join_fallback_to_proxy"));
    // The media service saw the client itself.
    let seen = run.summary()["seen_as"].as_str().unwrap().to_owned();
    assert!(
        seen.starts_with(&format!("{}:", w.lab.addr(Role::Client))),
        "{seen}"
    );
}

#[test]
fn udp_blocked_auto_falls_back_to_tls_443() {
    let Some(w) = world(Profile::UdpBlocked) else {
        return;
    };
    let run = join(&w, "auto", &[pool_tls()], 2, 50);
    assert_flows(&run, "turn_tls", 50);
    assert_eq!(run.last("is_using_cloud_proxy").unwrap()["using"], true);
    assert_eq!(
        run.last("join_fallback_to_proxy").unwrap()["proxy"],
        pool_tls().to_string()
    );
    // The media service saw the relay, not the client.
    let seen = run.summary()["seen_as"].as_str().unwrap().to_owned();
    assert!(seen.starts_with(&format!("{RELAY_ADDR}:")), "{seen}");
}

#[test]
fn published_udp_only_force_udp_works_and_force_tcp_fails() {
    let Some(w) = world(Profile::PublishedUdpOnly {
        proxies: vec![published_udp()],
    }) else {
        return;
    };
    let run = join(&w, "udp", &[published_udp()], 3, 50);
    assert_flows(&run, "turn_udp", 50);
    assert!(run.has("proxy_connected"));
    assert_nothing_outside(&w, "Force UDP");
    let run = join(&w, "tcp", &[published_tls()], 4, 5);
    assert_fails_clearly(&run, "Force TCP");
    assert_nothing_outside(&w, "Force TCP");
}

#[test]
fn published_tls_only_force_tcp_works_and_force_udp_fails() {
    let Some(w) = world(Profile::PublishedTls443Only {
        proxies: vec![IpAddr::V4(RELAY_ADDR)],
    }) else {
        return;
    };
    let run = join(&w, "tcp", &[published_tls()], 5, 50);
    assert_flows(&run, "turn_tls", 50);
    assert_nothing_outside(&w, "Force TCP");
    let run = join(&w, "udp", &[published_udp()], 6, 5);
    assert_fails_clearly(&run, "Force UDP");
    assert_nothing_outside(&w, "Force UDP");
}

#[test]
fn nothing_allowed_every_mode_fails_within_bounded_time() {
    let Some(w) = world(Profile::Nothing {
        published: vec![IpAddr::V4(RELAY_ADDR)],
    }) else {
        return;
    };
    for (mode, proxies) in [
        ("udp", vec![published_udp()]),
        ("tcp", vec![published_tls()]),
    ] {
        let run = join(&w, mode, &proxies, 7, 5);
        assert_fails_clearly(&run, mode);
        assert_nothing_outside(&w, mode);
    }
    let run = join(&w, "auto", &[pool_tls()], 8, 5);
    assert_fails_clearly(&run, "auto");
}

#[test]
fn five_percent_loss_media_still_flows_in_every_mode() {
    let Some(w) = world(Profile::Loss { percent: 5 }) else {
        return;
    };
    let mut report = Vec::new();
    for (mode, proxies, path) in [
        ("auto", vec![pool_tls()], None),
        ("udp", vec![published_udp()], Some("turn_udp")),
        ("tcp", vec![published_tls()], Some("turn_tls")),
    ] {
        let run = join(&w, mode, &proxies, 9, 200);
        assert!(
            run.ok,
            "{mode} under loss: {:#?}\n{}",
            run.lines, run.stderr
        );
        let s = run.summary();
        if let Some(path) = path {
            assert_eq!(s["path"], path);
        }
        let (sent, lost) = (s["sent"].as_u64().unwrap(), s["lost"].as_u64().unwrap());
        assert_eq!(sent, 200);
        assert!(lost < sent / 2, "media must still flow: {s}");
        report.push(format!(
            "{mode}: path {} sent {sent} lost {lost} ({:.1}%)",
            s["path"],
            100.0 * lost as f64 / sent as f64
        ));
    }
    eprintln!(
        "loss per mode at 5% random drop:\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn diagnose_in_a_udp_blocked_network_recommends_force_tcp() {
    let Some(w) = world(Profile::UdpBlocked) else {
        return;
    };
    let proxies = [
        ("--udp-proxy", published_udp()),
        ("--tcp-proxy", published_udp()),
        ("--tls-proxy", published_tls()),
    ];
    let (out, report) = diagnose(&w, 20, &proxies, &[]);
    assert!(out.status.success(), "{:?}", out.stderr);
    let ok = |path: &str| {
        report["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["path"] == path)
            .map(|p| p["ok"] == true)
            .unwrap()
    };
    assert!(!ok("direct") && !ok("turn_udp"), "{report}");
    assert!(ok("turn_tcp") && ok("turn_tls"), "{report}");
    assert_eq!(report["recommended_mode"], "tcp_proxy", "{report}");
    // Progress went to stderr as it ran.
    assert!(
        out.stderr.iter().any(|l| l.contains("[4/4]")),
        "{:?}",
        out.stderr
    );
}
