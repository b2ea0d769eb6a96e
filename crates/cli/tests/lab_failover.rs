//! Failover in the firewall lab (issue 14): two published relays, `cloudproxy join` joins
//! through one of them, and that relay is killed with SIGKILL mid-call — or frozen with SIGSTOP,
//! which is what an unreachable relay looks like to the client: no reset, no ICMP, silence. In each mode the client
//! must report `reconnecting` then `connected`, carry on through the other relay with a media gap
//! under 2 s, and in the Force modes send nothing outside the published set.
//!
//! The gap is measured by `join` from its own echoed packets (a packet every 10 ms): from the
//! last one received before the session reported `reconnecting` to the first one after — no
//! packet can come through the killed relay, so that is the last packet before the kill. It is
//! printed for each mode.
//!
//! Needs root and network namespaces (CI has both). Without them the tests skip loudly, except
//! under CI, where they fail.

mod labworld;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cloudproxy_lab::{Profile, Role, RELAY_ADDR, SECOND_RELAY_ADDR};
use labworld::*;
use serde_json::Value;

/// Packets `join` sends, one every 10 ms: 5 s of media.
const SEND: u32 = 500;
/// How long the call runs before the relay is killed.
const KILL_AFTER: Duration = Duration::from_millis(1500);
/// The product's promise (issue 14): the media gap of a failover, in milliseconds.
const MAX_GAP_MS: u64 = 2000;

const RELAYS: [Ipv4Addr; 2] = [RELAY_ADDR, SECOND_RELAY_ADDR];

/// How the relay the client uses goes away.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// SIGKILL: the host answers for it (TCP reset, ICMP port unreachable).
    Killed,
    /// SIGSTOP: it goes silent; only the client's probes can tell.
    Frozen,
}

/// What one failover left behind.
struct Failover {
    world: World,
    run: JoinRun,
    killed: Ipv4Addr,
}

/// Starts both relays, joins in `mode` with both as proxies on `port`, kills the relay the
/// client joined through once the call has run for [`KILL_AFTER`], and lets the call finish.
fn failover(profile: Profile, mode: &str, port: u16, uid: u32, outage: Outage) -> Option<Failover> {
    let world = world_with_relays(profile, &[(RELAY_ADDR, &[]), (SECOND_RELAY_ADDR, &[])])?;
    let proxies = RELAYS.map(|ip| sa(ip, port));
    let join = world
        .lab
        .spawn(Role::Client, BIN, join_args(mode, &proxies, uid, SEND, &[]))
        .expect("join starts");
    let mut lines = Vec::new();
    let server: SocketAddr = loop {
        let line = join
            .next_line(Duration::from_secs(20))
            .expect("join prints its events")
            .unwrap_or_else(|| {
                panic!(
                    "{mode}: join ended before joining: {lines:#?}\n{:?}",
                    join.stderr_lines()
                )
            });
        lines.push(line.clone());
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        if v["event"] == "joined" {
            break v["server"].as_str().unwrap().parse().unwrap();
        }
    };
    std::thread::sleep(KILL_AFTER);
    let (killed, relay) = world
        .relays
        .iter()
        .find(|(ip, _)| IpAddr::V4(*ip) == server.ip())
        .unwrap_or_else(|| panic!("{mode}: joined through {server}, not a lab relay"));
    match outage {
        Outage::Killed => relay.kill().expect("SIGKILL the relay"),
        Outage::Frozen => {
            let status = std::process::Command::new("kill")
                .args(["-STOP", &relay.pid().to_string()])
                .status()
                .expect("kill -STOP");
            assert!(status.success(), "SIGSTOP the relay");
        }
    }
    let killed = *killed;
    let out = join
        .finish(Duration::from_secs(40))
        .expect("join ends within 40 s");
    lines.extend(out.stdout);
    let run = JoinRun::parse(out.status.success(), lines, out.stderr);
    Some(Failover { world, run, killed })
}

/// The checks every mode shares; returns the failover's gap in milliseconds.
fn assert_failed_over(f: &Failover, mode: &str, path: &str) -> u64 {
    let run = &f.run;
    assert!(
        run.ok,
        "{mode}: join failed: {:#?}\n{}",
        run.lines, run.stderr
    );
    let s = run.summary();
    assert_eq!(s["sent"], SEND, "{mode}: {s}");
    assert_eq!(s["path"], path, "{mode}: {s}");
    assert_eq!(s["reconnects"], 1, "{mode}: one failover: {s}");

    // `reconnecting`, then `connected`, after the join.
    let states: Vec<&str> = run
        .lines
        .iter()
        .skip_while(|v| v["event"] != "joined")
        .filter(|v| v["event"] == "connection_state_changed")
        .filter_map(|v| v["state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["reconnecting", "connected", "disconnected"],
        "{mode}: states after the join: {:#?}",
        run.lines
    );

    // The surviving relay carried the rest of the call.
    let survivor = f
        .world
        .relays
        .iter()
        .find(|(ip, _)| *ip != f.killed)
        .unwrap();
    assert!(
        survivor.1.try_wait().unwrap().is_none(),
        "{mode}: the other relay must still run"
    );
    let echoed = s["echoed"].as_u64().unwrap();
    assert!(
        echoed >= u64::from(SEND) / 2,
        "{mode}: media must flow after the failover: {s}"
    );

    let gaps = s["reconnect_gaps_ms"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{mode}: one gap per reconnect: {s}");
    let gap = gaps[0].as_u64().unwrap();
    eprintln!(
        "{mode}: relay {} gone, failover gap {gap} ms (longest silence {} ms, {} of {SEND} \
         packets lost)",
        f.killed, s["max_gap_ms"], s["lost"]
    );
    assert!(
        gap < MAX_GAP_MS,
        "{mode}: failover gap {gap} ms, must be under {MAX_GAP_MS} ms: {s}"
    );
    let longest = s["max_gap_ms"].as_u64().unwrap();
    assert!(
        longest < MAX_GAP_MS,
        "{mode}: longest silence {longest} ms: {s}"
    );
    gap
}

fn assert_nothing_outside(f: &Failover, mode: &str) {
    let outside = f.world.lab.outside_count().unwrap();
    assert_eq!(
        outside,
        0,
        "{mode}: the client sent {outside} packet(s) outside the published set\n{}",
        f.world.lab.ruleset().unwrap_or_default()
    );
}

#[test]
fn force_udp_fails_over_to_the_other_published_relay() {
    let Some(f) = failover(
        Profile::PublishedUdpOnly {
            proxies: RELAYS.map(|ip| sa(ip, 3478)).to_vec(),
        },
        "udp",
        3478,
        31,
        Outage::Killed,
    ) else {
        return;
    };
    assert_failed_over(&f, "Force UDP", "turn_udp");
    assert_nothing_outside(&f, "Force UDP");
}

#[test]
fn force_tcp_fails_over_to_the_other_published_relay() {
    let Some(f) = failover(
        Profile::PublishedTls443Only {
            proxies: RELAYS.map(IpAddr::V4).to_vec(),
        },
        "tcp",
        443,
        32,
        Outage::Killed,
    ) else {
        return;
    };
    assert_failed_over(&f, "Force TCP", "turn_tls");
    assert_nothing_outside(&f, "Force TCP");
}

#[test]
fn auto_behind_a_udp_block_fails_over_to_the_other_proxy() {
    let Some(f) = failover(Profile::UdpBlocked, "auto", 443, 33, Outage::Killed) else {
        return;
    };
    assert_failed_over(&f, "Auto", "turn_tls");
    // Auto tries the media service directly first, on the join and on the reconnect; the
    // firewall drops that UDP. Printed, not bounded: only the Force modes promise it.
    eprintln!(
        "Auto: {} direct packet(s) dropped by the UDP block",
        f.world.lab.outside_count().unwrap()
    );
}

// An unreachable relay: frozen, it neither resets nor answers. The client's probes (every
// 100 ms once the path has been quiet for 500 ms) find it dead after 1.5 s of silence.

#[test]
fn force_udp_fails_over_from_a_relay_that_went_silent() {
    let Some(f) = failover(
        Profile::PublishedUdpOnly {
            proxies: RELAYS.map(|ip| sa(ip, 3478)).to_vec(),
        },
        "udp",
        3478,
        34,
        Outage::Frozen,
    ) else {
        return;
    };
    assert_failed_over(&f, "Force UDP, silent relay", "turn_udp");
    assert_nothing_outside(&f, "Force UDP, silent relay");
}

#[test]
fn force_tcp_fails_over_from_a_relay_that_went_silent() {
    let Some(f) = failover(
        Profile::PublishedTls443Only {
            proxies: RELAYS.map(IpAddr::V4).to_vec(),
        },
        "tcp",
        443,
        35,
        Outage::Frozen,
    ) else {
        return;
    };
    assert_failed_over(&f, "Force TCP, silent relay", "turn_tls");
    assert_nothing_outside(&f, "Force TCP, silent relay");
}

#[test]
fn auto_fails_over_from_a_relay_that_went_silent() {
    let Some(f) = failover(Profile::UdpBlocked, "auto", 443, 36, Outage::Frozen) else {
        return;
    };
    assert_failed_over(&f, "Auto, silent relay", "turn_tls");
}
