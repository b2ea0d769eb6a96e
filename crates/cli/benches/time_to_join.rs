//! Time-to-join benchmark (not a test): the median time from `join` to a joined channel, over
//! N runs, for each firewall-lab profile and mode, and Auto's Happy-Eyeballs racing (250 ms
//! stagger) side by side with the sequential strategy (wait for the direct UDP attempt to time
//! out, then try TLS). Prints a table; asserts nothing about speed.
//!
//! `cargo bench -p cloudproxy --bench time_to_join` (root; N from `JOIN_RUNS`, default 7).

#[path = "../tests/labworld/mod.rs"]
mod labworld;

use std::net::IpAddr;

use cloudproxy_lab::{Profile, RELAY_ADDR};
use labworld::*;

/// One row: a profile, a mode, the proxies to give `join`, and extra `join` flags.
type Case = (
    &'static str,
    Profile,
    &'static str,
    Vec<std::net::SocketAddr>,
    &'static [&'static str],
);

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn main() {
    // libtest-style flags (`--bench`) are passed by cargo; nothing to parse.
    let runs: usize = std::env::var("JOIN_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    // The attempt timeout `labworld::join_with` gives every join; the sequential strategy
    // waits this long for the direct attempt before trying TLS.
    const ATTEMPT_TIMEOUT: &str = "2000";
    let attempt_timeout = ATTEMPT_TIMEOUT;
    let cases: Vec<Case> = vec![
        ("open", Profile::Open, "auto", vec![pool_tls()], &[]),
        (
            "udp blocked",
            Profile::UdpBlocked,
            "auto",
            vec![pool_tls()],
            &[],
        ),
        (
            "udp blocked",
            Profile::UdpBlocked,
            "auto (sequential)",
            vec![pool_tls()],
            &["--stagger-ms", ATTEMPT_TIMEOUT],
        ),
        (
            "published udp only",
            Profile::PublishedUdpOnly {
                proxies: vec![published_udp()],
            },
            "udp",
            vec![published_udp()],
            &[],
        ),
        (
            "published tls 443 only",
            Profile::PublishedTls443Only {
                proxies: vec![IpAddr::V4(RELAY_ADDR)],
            },
            "tcp",
            vec![published_tls()],
            &[],
        ),
    ];
    println!("time to join, median of {runs} runs (attempt timeout {attempt_timeout} ms)");
    println!(
        "{:<24} {:<18} {:>10} {:>10} {:>10}",
        "profile", "mode", "median ms", "min ms", "max ms"
    );
    for (name, profile, mode, proxies, extra) in cases {
        let Some(w) = world(profile) else {
            println!("(network namespaces unavailable: skipped)");
            return;
        };
        let cli_mode = mode.split(' ').next().unwrap_or(mode);
        let mut times = Vec::new();
        for i in 0..runs {
            // `join_with` already sets --attempt-timeout-ms 2000.
            let run = join_with(&w, cli_mode, &proxies, 100 + i as u32, 1, extra);
            if let Some(ms) = run.last("summary").and_then(|s| s["join_ms"].as_u64()) {
                times.push(ms);
            }
        }
        let (min, max) = (times.iter().min().copied(), times.iter().max().copied());
        let show = |v: Option<u64>| v.map_or("failed".to_owned(), |v| v.to_string());
        println!(
            "{:<24} {:<18} {:>10} {:>10} {:>10}",
            name,
            mode,
            show(median(times)),
            show(min),
            show(max)
        );
    }
}
