//! Force-mode signaling through a firewall that lets the client reach nothing but its
//! region's published relay addresses: `cloudproxy up` runs in the relay's namespace (control
//! plane, relay and media service), and `cloudproxy join --refresh-proxies` in the client's
//! namespace fetches the region's allow-list through the relay — in-band over UDP for Force
//! UDP, over HTTPS on TLS 443 for Force TCP — then joins. The router's drop-and-count rule
//! proves nothing else was contacted.
//!
//! Needs root and network namespaces (CI has both); without them it skips loudly, except
//! under CI, where it fails.

mod labworld;

use std::net::SocketAddr;
use std::time::Duration;

use cloudproxy_lab::{Lab, Profile, Role, RELAY_ADDR};
use labworld::{published_tls, published_udp, sa, up_in_relay, BIN};
use serde_json::Value;

fn join(
    lab: &Lab,
    app: &str,
    token: &str,
    mode: &str,
    proxy: SocketAddr,
) -> (bool, Vec<Value>, String) {
    let media = sa(RELAY_ADDR, 7000).to_string();
    let proxy = proxy.to_string();
    let args = [
        "join",
        "--media",
        &media,
        "--app-id",
        app,
        "--channel",
        "demo-room",
        "--uid",
        "1",
        "--token",
        token,
        "--mode",
        mode,
        "--proxy",
        &proxy,
        "--refresh-proxies",
        "japan",
        "--send",
        "20",
        "--interval-ms",
        "10",
        "--json",
    ];
    let out = lab
        .spawn(Role::Client, BIN, args)
        .expect("join starts")
        .finish(Duration::from_secs(40))
        .expect("join ends");
    let lines = out
        .stdout
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.success(), lines, out.stderr.join("\n"))
}

fn check(lab: &Lab, app: &str, token: &str, mode: &str, proxy: SocketAddr) {
    let (ok, lines, stderr) = join(lab, app, token, mode, proxy);
    assert!(ok, "{mode}: {lines:#?}\n{stderr}");
    let refreshed = lines
        .iter()
        .find(|v| v["event"] == "proxies_refreshed")
        .unwrap_or_else(|| panic!("no proxies_refreshed: {lines:#?}"));
    assert_eq!(
        refreshed["udp"],
        serde_json::json!([published_udp().to_string()]),
        "{refreshed}"
    );
    assert_eq!(
        refreshed["tls"],
        serde_json::json!([published_tls().to_string()]),
        "{refreshed}"
    );
    let summary = lines
        .iter()
        .rev()
        .find(|v| v["event"] == "summary")
        .expect("a summary");
    assert_eq!(summary["sent"], 20, "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    let outside = lab.outside_count().unwrap();
    assert_eq!(
        outside,
        0,
        "{mode}: {outside} packet(s) outside the published set\n{}",
        lab.ruleset().unwrap_or_default()
    );
}

#[test]
fn force_udp_signals_in_band_through_the_published_udp_port_only() {
    let Some(lab) = Lab::start_or_skip(Profile::PublishedUdpOnly {
        proxies: vec![published_udp()],
    }) else {
        return;
    };
    let up = up_in_relay(&lab, "udp");
    check(&lab, &up.app, &up.token, "udp", published_udp());
}

#[test]
fn force_tcp_signals_over_https_on_the_published_tls_port_only() {
    let Some(lab) = Lab::start_or_skip(Profile::PublishedTls443Only {
        proxies: vec![std::net::IpAddr::V4(RELAY_ADDR)],
    }) else {
        return;
    };
    let up = up_in_relay(&lab, "tcp");
    check(&lab, &up.app, &up.token, "tcp", published_tls());
}
