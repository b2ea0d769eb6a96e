//! The browser library in the firewall lab: Chromium runs in the client's namespace, and
//! `cloudproxy up` (control plane, published relay, media service with its WebRTC endpoint)
//! in the relay's, on the published address; a dynamic-pool relay (the Auto proxy) runs
//! there on the pool address, registered with that control plane.
//!
//! - open network: Auto goes direct;
//! - UDP blocked: Auto falls back to the dynamic proxy over TLS 443 and fires
//!   `join-fallback-to-proxy`; its time to join is printed (BENCHMARKS.md);
//! - published UDP only: Force UDP works, Force TCP fails clearly;
//! - TCP 443 to the published address only: Force TCP works, Force UDP fails clearly.
//!
//! A browser needs HTTP for its signaling (the page, `POST /v1/ice-servers`, the WHIP
//! offer), so the two Force profiles also let TCP through to the control plane's and the
//! WebRTC endpoint's ports on the published address (`Profile::WithSignaling`); in every
//! Force run the router's counter shows 0 packets to any other address, signaling
//! included. Needs root and network namespaces (CI has both) and Chromium; without them the
//! tests skip loudly, except under CI, where they fail.

mod common;
mod labworld;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloudproxy_lab::{Lab, LabChild, Profile, Role, RELAY_ADDR, RELAY_POOL_ADDR};
use common::cdp::Browser;
use common::web::*;
use common::TempDir;
use labworld::{published_udp, sa, spawn_up, BIN};
use serde_json::json;

/// The control plane of `up`, on the published address.
fn control() -> SocketAddr {
    sa(RELAY_ADDR, 8480)
}

/// The media service's WebRTC (WHIP) endpoint, on the published address.
fn whip() -> SocketAddr {
    sa(RELAY_ADDR, 7080)
}

struct WebLab {
    browser: Browser,
    base: String,
    _pool: LabChild,
    _up: LabChild,
    lab: Lab,
    /// Holds `up`'s data directory; last, so it is removed once `up` and the pool relay are
    /// gone (fields drop in declaration order).
    _dir: TempDir,
}

fn web_lab(profile: Profile, test: &str) -> Option<WebLab> {
    let binary = browser_or_skip(test)?;
    let lab = Lab::start_or_skip(profile)?;
    let dir = TempDir::new(&format!("lab-web-{test}"));
    let data = dir.0.join("data");
    let (control_addr, whip_addr) = (control().to_string(), whip().to_string());
    let up = spawn_up(
        &lab,
        &data,
        &["--control", &control_addr, "--media-http", &whip_addr],
    );
    up.wait_for_line(Duration::from_secs(60), |l| l == "ready")
        .expect("cloudproxy up is ready");
    let key = std::fs::read_to_string(data.join("operator.key")).unwrap();
    let pool_turn = sa(RELAY_POOL_ADDR, 3478).to_string();
    let pool = lab
        .spawn(
            Role::Relay,
            BIN,
            [
                "relay",
                "--udp",
                &pool_turn,
                "--tcp",
                &pool_turn,
                "--tls",
                &sa(RELAY_POOL_ADDR, 443).to_string(),
                "--relay-ip",
                &RELAY_POOL_ADDR.to_string(),
                "--allow-peer",
                &format!("{RELAY_ADDR}/32"),
                "--control",
                &format!("http://{}", control()),
                "--control-key",
                key.trim(),
                "--edge-id",
                "pool-1",
                "--region",
                "japan",
                "--pool",
                "dynamic",
                "--no-metrics",
            ],
        )
        .expect("the dynamic relay starts");
    pool.wait_for_line(Duration::from_secs(30), |l| l.starts_with("tls "))
        .expect("the dynamic relay is ready");
    // Chromium's own services (component updates, accounts, autofill, optimization hints)
    // resolve Google host names even with --disable-background-networking; the counter
    // would count those DNS queries as the page's. No host name resolves here: every URL
    // of the test is one of the relay addresses.
    let mut switches = WEBRTC_SWITCHES.to_vec();
    let rules = format!(
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {RELAY_ADDR}, EXCLUDE {RELAY_POOL_ADDR}"
    );
    switches.push(&rules);
    let browser = Browser::launch_in_netns(&binary, &switches, &lab.netns(Role::Client));
    Some(WebLab {
        browser,
        base: format!("http://{}", control()),
        _pool: pool,
        _up: up,
        lab,
        _dir: dir,
    })
}

/// The Force profiles with the signaling ports open.
fn with_signaling(base: Profile) -> Profile {
    Profile::WithSignaling {
        base: Box::new(base),
        signaling: vec![control(), whip()],
    }
}

impl WebLab {
    /// Waits until the control plane lists the dynamic relay (its first heartbeat), as the
    /// page sees it.
    fn wait_for_auto_proxy(&mut self, page: &common::cdp::Page) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = self
                .browser
                .eval_async(
                    page,
                    "fetch('/v1/proxies?region=japan').then(r => r.json()).then(b => b.proxies.length)",
                )
                .unwrap();
            if n.as_u64() > Some(0) {
                return;
            }
            assert!(Instant::now() < deadline, "the dynamic relay never listed");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn assert_nothing_outside(&self, what: &str) {
        let outside = self.lab.outside_count().unwrap();
        assert_eq!(
            outside,
            0,
            "{what}: the browser sent {outside} packet(s) outside the published set\n{}",
            self.lab.ruleset().unwrap_or_default()
        );
    }
}

/// Two pages join in `mode`; 10 messages go each way; returns both join infos.
fn both_join(w: &mut WebLab, channel: &str, mode: u8) -> (serde_json::Value, serde_json::Value) {
    let b = &mut w.browser;
    let a_page = demo_page(b, &w.base, channel, 1);
    let b_page = demo_page(b, &w.base, channel, 2);
    let a = join(b, &a_page, mode);
    let bb = join(b, &b_page, mode);
    println!(
        "{channel}: joined in {} and {} ms ({} / {})",
        a["elapsedMs"], bb["elapsedMs"], a["path"]["name"], bb["path"]["name"]
    );
    send(b, &a_page, "a", 10);
    send(b, &b_page, "b", 10);
    assert_eq!(received_from(b, &b_page, 1, 10).len(), 10, "{channel}");
    assert_eq!(received_from(b, &a_page, 2, 10).len(), 10, "{channel}");
    for (page, info) in [(&a_page, &a), (&b_page, &bb)] {
        let ev = events(b, page);
        let using = info["usingProxy"].as_bool().unwrap();
        assert_eq!(
            event(&ev, "is-using-cloud-proxy"),
            Some(&json!([using])),
            "{ev:?}"
        );
        // Only Auto falls back; a Force mode is on the proxy from the start.
        let fell_back = event(&ev, "join-fallback-to-proxy").is_some();
        assert_eq!(fell_back, mode == 0 && using, "{ev:?}");
        assert_eq!(event(&ev, "proxy-connected").is_some(), using, "{ev:?}");
        b.eval_async(page, "window.demo.leave()").unwrap();
    }
    (a, bb)
}

/// A page alone tries `mode`, which must fail naming the mode.
fn fails_clearly(w: &mut WebLab, mode: u8, named: &str) {
    let page = demo_page(&mut w.browser, &w.base, "must-fail", 9);
    let e = try_join(&mut w.browser, &page, mode).expect_err("must fail");
    println!("mode {mode} refused: {e}");
    assert!(e.contains("JOIN_TIMEOUT"), "{e}");
    assert!(e.contains(named), "{e}");
    let ev = events(&mut w.browser, &page);
    assert_eq!(
        event(&ev, "connection-state-change").unwrap()[0],
        "failed",
        "{ev:?}"
    );
    assert!(event(&ev, "is-using-cloud-proxy").is_none(), "{ev:?}");
}

#[test]
fn open_network_auto_goes_direct() {
    let Some(mut w) = web_lab(Profile::Open, "open") else {
        return;
    };
    let page = demo_page(&mut w.browser, &w.base.clone(), "probe", 99);
    w.wait_for_auto_proxy(&page);
    let (a, b) = both_join(&mut w, "open-auto", 0);
    for info in [&a, &b] {
        assert_eq!(info["usingProxy"], false, "{info}");
        assert_ne!(info["path"]["candidateType"], "relay", "{info}");
        // The media service saw the client itself.
        assert!(
            info["seenAs"].as_str().unwrap().starts_with("10.201.1.2:"),
            "{info}"
        );
    }
}

#[test]
fn udp_blocked_auto_falls_back_to_tls_443() {
    let Some(mut w) = web_lab(Profile::UdpBlocked, "udp-blocked") else {
        return;
    };
    let base = w.base.clone();
    let page = demo_page(&mut w.browser, &base, "probe", 99);
    w.wait_for_auto_proxy(&page);
    let (a, b) = both_join(&mut w, "udp-blocked-auto", 0);
    for info in [&a, &b] {
        assert_eq!(info["usingProxy"], true, "{info}");
        assert_eq!(info["path"]["relayProtocol"], "tls", "{info}");
        // Through the dynamic relay: the media service saw its relayed address.
        let seen = info["seenAs"].as_str().unwrap();
        assert!(seen.starts_with(&format!("{RELAY_POOL_ADDR}:")), "{seen}");
    }
    // The fallback event names the proxy's relayed address; time to join, several joins.
    let mut times = Vec::new();
    for i in 0..7 {
        let page = demo_page(&mut w.browser, &base, &format!("ttj-{i}"), 20 + i);
        let info = join(&mut w.browser, &page, 0);
        let ev = events(&mut w.browser, &page);
        let fallback = event(&ev, "join-fallback-to-proxy").expect("join-fallback-to-proxy");
        assert!(
            fallback[0]
                .as_str()
                .unwrap()
                .starts_with(&format!("{RELAY_POOL_ADDR}:")),
            "{fallback}"
        );
        assert_eq!(event(&ev, "is-using-cloud-proxy"), Some(&json!([true])));
        times.push(info["elapsedMs"].as_u64().unwrap());
        w.browser.eval_async(&page, "window.demo.leave()").unwrap();
    }
    times.sort_unstable();
    println!(
        "time to join in Chromium, Auto with UDP blocked (TLS 443 fallback): median {} ms, \
         min {}, max {} ({} joins: {times:?})",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}

#[test]
fn published_udp_only_force_udp_works_force_tcp_fails() {
    let profile = with_signaling(Profile::PublishedUdpOnly {
        proxies: vec![published_udp()],
    });
    let Some(mut w) = web_lab(profile, "udp-only") else {
        return;
    };
    fails_clearly(&mut w, 5, "Force TCP");
    let (a, b) = both_join(&mut w, "udp-only-3", 3);
    for info in [&a, &b] {
        assert_eq!(info["path"]["relayProtocol"], "udp", "{info}");
        let seen = info["seenAs"].as_str().unwrap();
        assert!(seen.starts_with(&format!("{RELAY_ADDR}:")), "{seen}");
    }
    w.assert_nothing_outside("published UDP only, Force UDP and Force TCP");
}

#[test]
fn published_tls_443_only_force_tcp_works_force_udp_fails() {
    let profile = with_signaling(Profile::PublishedTls443Only {
        proxies: vec![RELAY_ADDR.into()],
    });
    let Some(mut w) = web_lab(profile, "tls-only") else {
        return;
    };
    fails_clearly(&mut w, 3, "Force UDP");
    let (a, b) = both_join(&mut w, "tls-only-5", 5);
    for info in [&a, &b] {
        assert_eq!(info["path"]["relayProtocol"], "tls", "{info}");
    }
    w.assert_nothing_outside("TCP 443 to published only, Force TCP and Force UDP");
}
