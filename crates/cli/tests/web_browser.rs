//! The browser library in a real browser: Debian's Chromium, headless, driven over the
//! DevTools protocol (`common::cdp`), against `cloudproxy up`. Every page is `/demo/web`
//! loaded through the relay's TLS port, so the library's `POST /v1/ice-servers` passes
//! there as the rest of the API does; the media service's WHIP endpoint is on its own port.
//!
//! - Two pages join one channel in Auto, in Force UDP (`startProxyServer(3)`) and in Force TCP
//!   (`startProxyServer(5)`); 50 data-channel messages go each way, in order; the events
//!   match the mode (`is-using-cloud-proxy` false for Auto on loopback, true for 3 and 5 with
//!   `proxy-connected`, and the path's relay protocol udp or tls); RTT by PING/PONG; a mode
//!   change inside the channel fails with the Rust SDK's message.
//! - A page and `cloudproxy join` in one channel exchange messages.
//!
//! Chromium hides host addresses behind mDNS names and leaves loopback out of ICE unless
//! told: `--disable-features=WebRtcHideLocalIpsWithMdns` and
//! `--allow-loopback-in-peer-connection`. A screenshot of the demo goes to a temporary
//! directory, or to `docs/screenshots/` with `CLOUDPROXY_UPDATE_SCREENSHOTS=1`.

mod common;

use std::path::Path;

use std::process::Command;
use std::time::Duration;

use common::cdp::{screenshot_dir, Browser};
use common::control::{unix_now, Credential};
use common::up::{start_up, Up};
use common::web::*;
use common::{cloudproxy_bin, join_summary, run_bounded, TempDir};

const PATIENCE: Duration = Duration::from_secs(120);
const MESSAGES: usize = 50;

/// The demo through the relay's TLS port.
fn base(up: &Up) -> String {
    format!("https://{}", up.tls)
}

/// One mode: two pages join, 50 messages each way, the events and the path.
fn two_pages(browser: &mut Browser, up: &Up, mode: u8, shots: Option<&Path>) {
    let channel = format!("web-mode-{mode}");
    let (a, b) = (
        demo_page(browser, &base(up), &channel, 1),
        demo_page(browser, &base(up), &channel, 2),
    );
    let info_a = join(browser, &a, mode);
    let info_b = join(browser, &b, mode);
    println!("mode {mode}: page 1 {info_a}\nmode {mode}: page 2 {info_b}");
    let proxied = mode != 0;
    for (info, page) in [(&info_a, &a), (&info_b, &b)] {
        assert_eq!(info["usingProxy"], proxied, "mode {mode}: {info}");
        let ev = events(browser, page);
        assert_eq!(
            event(&ev, "is-using-cloud-proxy"),
            Some(&serde_json::json!([proxied])),
            "mode {mode}: {ev:?}"
        );
        assert_eq!(
            event(&ev, "connection-state-change").unwrap()[0],
            "connected",
            "{ev:?}"
        );
        let connecting = &ev[0];
        assert_eq!(connecting.0, "connection-state-change");
        assert_eq!(
            connecting.1[2],
            if proxied {
                "setting_proxy_server"
            } else {
                "joining"
            },
            "{ev:?}"
        );
        assert!(event(&ev, "join-fallback-to-proxy").is_none(), "{ev:?}");
        match mode {
            0 => {
                // Direct: a host candidate, or on loopback a peer-reflexive one (the check
                // to 127.0.0.1 leaves from 127.0.0.1, not from the interface's address).
                let kind = info["path"]["candidateType"].as_str().unwrap();
                assert!(["host", "prflx"].contains(&kind), "{info}");
                assert_eq!(info["path"]["name"], "direct", "{info}");
                assert!(event(&ev, "proxy-connected").is_none(), "{ev:?}");
            }
            _ => {
                assert_eq!(info["path"]["candidateType"], "relay", "{info}");
                let protocol = if mode == 3 { "udp" } else { "tls" };
                assert_eq!(info["path"]["relayProtocol"], protocol, "{info}");
                let pc = event(&ev, "proxy-connected").expect("proxy-connected");
                assert!(pc[0]["elapsed"].as_u64().is_some(), "{pc}");
                // The media service saw the relay's relayed address, not the page.
                let seen = info["seenAs"].as_str().unwrap();
                assert!(seen.starts_with("127.0.0.1:"), "{seen}");
            }
        }
    }
    assert_eq!(info_b["members"], 2, "{info_b}");

    // 50 messages each way, every one arriving, in order.
    send(browser, &a, "a", MESSAGES);
    send(browser, &b, "b", MESSAGES);
    let at_b = received_from(browser, &b, 1, MESSAGES);
    let at_a = received_from(browser, &a, 2, MESSAGES);
    let expect = |tag: &str| {
        (0..MESSAGES)
            .map(|i| format!("{tag}{i}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(at_b, expect("a"), "mode {mode}: page 2 got page 1's");
    assert_eq!(at_a, expect("b"), "mode {mode}: page 1 got page 2's");

    // RTT over the data channel, and the path the page reads from getStats.
    let rtt = browser
        .eval_async(&a, "window.demo.client.ping()")
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(rtt > 0.0, "{rtt}");
    println!("mode {mode}: RTT {rtt:.2} ms");

    // A mode change inside the channel: the Rust SDK's error, word for word.
    let refused = browser.eval(
        &a,
        "(() => { try { window.demo.client.startProxyServer(3); return 'accepted' } \
         catch (e) { return e.code + ': ' + e.message } })()",
    );
    assert_eq!(
        refused,
        "IN_CHANNEL: the cloud proxy mode can only be set outside a channel: leave first"
    );
    if let Some(dir) = shots {
        // Let the RTT tick once more so the page shows it.
        std::thread::sleep(Duration::from_millis(1200));
        let png = browser.screenshot(&a);
        assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000);
        std::fs::write(dir.join("web-demo.png"), &png).unwrap();
    }
    for page in [&a, &b] {
        browser.eval_async(page, "window.demo.leave()").unwrap();
        let ev = events(browser, page);
        assert_eq!(
            event(&ev, "connection-state-change").unwrap(),
            &serde_json::json!(["disconnected", "connected", "leave"]),
            "{ev:?}"
        );
        // Outside the channel the mode changes again.
        let ok = browser.eval(
            page,
            "(() => { window.demo.client.stopProxyServer(); window.demo.client.startProxyServer(5); \
             return window.demo.client.modeName })()",
        );
        assert_eq!(ok, "tcp");
        // From one Force mode to the other only through Auto, as in the Rust SDK.
        let refused = browser.eval(
            page,
            "(() => { try { window.demo.client.startProxyServer(3); return 'accepted' } \
             catch (e) { return e.code + ': ' + e.message } })()",
        );
        assert_eq!(
            refused,
            "SET_NONE_FIRST: the cloud proxy mode is already tcp: set None (Auto) first, then \
             the new mode"
        );
    }
}

#[test]
fn two_pages_in_every_mode_on_loopback() {
    let Some(binary) = browser_or_skip("two_pages_in_every_mode_on_loopback") else {
        return;
    };
    let dir = TempDir::new("web-browser");
    let up = start_up(&dir.0.join("data"), PATIENCE);
    let shots = screenshot_dir(&dir.0);
    let mut browser = Browser::launch_with(&binary, WEBRTC_SWITCHES);
    two_pages(&mut browser, &up, 0, Some(&shots));
    two_pages(&mut browser, &up, 3, None);
    two_pages(&mut browser, &up, 5, None);
}

#[test]
fn a_page_and_cloudproxy_join_exchange_messages() {
    let Some(binary) = browser_or_skip("a_page_and_cloudproxy_join_exchange_messages") else {
        return;
    };
    let dir = TempDir::new("web-join");
    let up = start_up(&dir.0.join("data"), PATIENCE);
    let mut browser = Browser::launch_with(&binary, WEBRTC_SWITCHES);
    let page = demo_page(&mut browser, &base(&up), "web-and-udp", 10);
    join(&mut browser, &page, 0);
    // The page keeps sending while `join` runs.
    browser.eval(
        &page,
        "let n = 0; window.sender = setInterval(() => window.demo.client.send('p' + n++), 20); true",
    );
    let app = Credential::demo(&up.data);
    let token = app.token_until("web-and-udp", 11, unix_now() + 600);
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["join", "--media", &up.media.to_string()])
        .args(["--app-id", &app.app_id])
        .args(["--channel", "web-and-udp", "--uid", "11", "--token", &token])
        .args(["--send", "50", "--interval", "20ms", "--no-echo"]);
    let run = run_bounded("cloudproxy join", cmd, Duration::from_secs(60));
    browser.eval(&page, "clearInterval(window.sender); true");
    let summary = join_summary(&run.output);
    println!("cloudproxy join: {summary}");
    assert_eq!(summary["sent"], 50, "{summary}");
    let from_page = summary["from_others"].as_u64().unwrap();
    assert!(from_page > 0, "join heard the page: {summary}");
    let at_page = received_from(&mut browser, &page, 11, 50);
    let expect: Vec<usize> = (0..50).collect();
    let seqs: Vec<usize> = serde_json::from_str::<Vec<u32>>(
        browser
            .eval(
                &page,
                "JSON.stringify(window.demo.received.filter(m => m.from === 11).map(m => m.seq))",
            )
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .into_iter()
    .map(|s| s as usize)
    .collect();
    assert_eq!(at_page.len(), 50, "the page heard join's 50");
    assert_eq!(seqs, expect, "in order");
    println!(
        "page → join: {from_page} messages; join → page: {}",
        at_page.len()
    );
    browser.eval_async(&page, "window.demo.leave()").unwrap();
}
