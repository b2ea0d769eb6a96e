//! Driving `/demo/web` (the browser library's demo page) in Chromium: shared by the loopback
//! and the firewall-lab browser tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cdp::{chromium, Browser, Page};
use super::in_ci;

/// Chromium switches for WebRTC tests: without the first, host candidates are mDNS names
/// (`<uuid>.local`) no test resolves; without the second, loopback is left out of ICE.
pub(crate) const WEBRTC_SWITCHES: &[&str] = &[
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
];

/// Debian's Chromium, or `None` with a notice (a failure under CI).
pub(crate) fn browser_or_skip(test: &str) -> Option<PathBuf> {
    let binary = chromium();
    if binary.is_none() {
        assert!(
            !in_ci(),
            "{test}: chromium is not installed, and CI is set: failing"
        );
        eprintln!("\n!! SKIPPED {test}: chromium is not installed (apt-get install chromium).\n");
    }
    binary
}

/// Loads `base`'s demo for `uid` in `channel` in a new tab.
pub(crate) fn demo_page(browser: &mut Browser, base: &str, channel: &str, uid: u32) -> Page {
    let page = browser.page("en");
    browser.goto(
        &page,
        &format!("{base}/demo/web?uid={uid}&channel={channel}"),
    );
    let ready = browser.eval(&page, "typeof window.demo === 'object'");
    assert_eq!(ready, true, "the demo script ran: {}", browser.text(&page));
    page
}

/// Picks `mode` (0, 3, 5) in the page's select and joins as the demo's button does.
pub(crate) fn join(browser: &mut Browser, page: &Page, mode: u8) -> Value {
    try_join(browser, page, mode).unwrap_or_else(|e| panic!("mode {mode}: join failed: {e}"))
}

/// [`join`], with a failed join as `Err` (the error's code and message).
pub(crate) fn try_join(browser: &mut Browser, page: &Page, mode: u8) -> Result<Value, String> {
    browser.eval_async(
        page,
        &format!(
            "document.getElementById('mode').value = '{mode}'; \
                 window.demo.join().then(i => ({{path: i.path, usingProxy: i.usingProxy, \
                 seenAs: i.seenAs, members: i.members, elapsedMs: i.elapsedMs}}), \
                 e => Promise.reject(new Error(e.code + ': ' + e.message)))"
        ),
    )
}

/// The events the page recorded, as `[name, args]`.
pub(crate) fn events(browser: &mut Browser, page: &Page) -> Vec<(String, Value)> {
    let v = browser.eval(page, "JSON.stringify(window.demo.events)");
    let list: Vec<Value> = serde_json::from_str(v.as_str().unwrap()).unwrap();
    list.into_iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["args"].clone()))
        .collect()
}

pub(crate) fn event<'a>(list: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    list.iter().rev().find(|(n, _)| n == name).map(|(_, a)| a)
}

/// Sends `n` messages `"<tag><i>"` from the page.
pub(crate) fn send(browser: &mut Browser, page: &Page, tag: &str, n: usize) {
    browser.eval(
        page,
        &format!("for (let i = 0; i < {n}; i++) window.demo.client.send('{tag}' + i); true"),
    );
}

/// Waits until the page received `n` messages from `from`; returns their texts in order.
pub(crate) fn received_from(
    browser: &mut Browser,
    page: &Page,
    from: u32,
    n: usize,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = browser.eval(
            page,
            &format!(
                "JSON.stringify(window.demo.received.filter(m => m.from === {from}).map(m => m.text))"
            ),
        );
        let texts: Vec<String> = serde_json::from_str(v.as_str().unwrap()).unwrap();
        if texts.len() >= n || Instant::now() > deadline {
            return texts;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
