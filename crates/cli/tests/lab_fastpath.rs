//! The XDP fast path in the firewall lab: Force UDP through a relay started with
//! `--fast-path xdp --xdp-mode generic` on its lab interface. The client's ChannelData and the
//! media service's answers are forwarded in the relay's kernel: the session flows with no loss,
//! the relay's fast-path counters hold every data packet, and its socket path relays none.
//!
//! Needs root, network namespaces and a build with clang (CI has all). Without them the test
//! skips loudly, except under CI, where it fails.

mod common;
mod labworld;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use cloudproxy_lab::{Profile, Role, RELAY_ADDR};
use labworld::*;

/// The relay's metrics address inside its namespace.
fn relay_metrics() -> SocketAddr {
    sa(RELAY_ADDR, 9478)
}

/// `GET /metrics` from inside the relay's namespace.
fn metrics(w: &World) -> String {
    let ns = format!("/var/run/netns/{}", w.lab.netns(Role::Relay));
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("the relay's namespace");
        // SAFETY: a valid namespace descriptor; only this thread moves.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let mut s = TcpStream::connect_timeout(&relay_metrics(), Duration::from_secs(5))
            .expect("connect to the relay's metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .join()
    .expect("metrics thread")
}

/// The value of the series `name` exactly (labels included), 0 if absent.
fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A veth hands over datagrams with TX checksum offload on, their UDP checksum not yet
/// filled in; a wire would not. The lab's senders compute it, as real hosts' NICs would.
fn checksums_on_the_wire(w: &World) {
    for role in [Role::Client, Role::Media] {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &w.lab.netns(role),
                "ethtool",
                "-K",
                "eth0",
                "tx",
                "off",
            ])
            .output()
            .expect("run ethtool");
        assert!(out.status.success(), "ethtool in {role:?}: {out:?}");
    }
}

#[test]
fn force_udp_flows_in_the_kernel() {
    let metrics_flag = relay_metrics().to_string();
    let Some(w) = world_with_relay_flags(
        Profile::PublishedUdpOnly {
            proxies: vec![published_udp()],
        },
        &[(RELAY_ADDR, &[])],
        &[
            "--metrics",
            &metrics_flag,
            "--fast-path",
            "xdp",
            "--xdp-interface",
            "eth0",
            "--xdp-mode",
            "generic",
        ],
    ) else {
        return;
    };
    let relay = &w.relays[0].1;
    let log = relay.stderr_lines().join("\n");
    if log.contains("XDP fast path off") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the fast path must run in CI:\n{log}"
        );
        eprintln!("skipped: {log}");
        return;
    }
    checksums_on_the_wire(&w);
    let send = 300;
    let run = join(&w, "udp", &[published_udp()], 7, send);
    assert!(run.ok, "join failed: {:#?}\n{}", run.lines, run.stderr);
    let s = run.summary();
    assert_eq!(s["path"], "turn_udp", "{s}");
    assert_eq!(s["sent"], send, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    // The counters are read into the metrics every second.
    std::thread::sleep(Duration::from_millis(2500));
    let text = metrics(&w);
    let fast_c2p = series(
        &text,
        "cloudproxy_fastpath_packets_total{direction=\"client_to_peer\"}",
    );
    let fast_p2c = series(
        &text,
        "cloudproxy_fastpath_packets_total{direction=\"peer_to_client\"}",
    );
    let socket_c2p = series(
        &text,
        "cloudproxy_packets_total{direction=\"client_to_peer\",transport=\"udp\"}",
    );
    let socket_p2c = series(
        &text,
        "cloudproxy_packets_total{direction=\"peer_to_client\",transport=\"udp\"}",
    );
    eprintln!(
        "kernel: {fast_c2p} client->peer, {fast_p2c} peer->client; sockets: {socket_c2p} \
         client->peer, {socket_p2c} peer->client; join sent {send}"
    );
    assert!(
        fast_c2p >= send as u64,
        "every data packet in the kernel:\n{text}"
    );
    assert!(fast_p2c >= send as u64, "every echo in the kernel:\n{text}");
    assert_eq!(
        socket_c2p, 0,
        "the socket path relayed client data:\n{text}"
    );
    assert_eq!(socket_p2c, 0, "the socket path relayed peer data:\n{text}");
    // The session ended: its entry is gone.
    assert_eq!(series(&text, "cloudproxy_fastpath_entries"), 0, "{text}");
}

/// Where XDP cannot run (here: an interface that does not exist), the relay says why in one
/// line and relays on the socket path.
#[test]
fn without_xdp_the_relay_says_why_and_relays_on_sockets() {
    let mut relay = common::start_cloudproxy(&common::RelayOptions {
        extra_args: ["--fast-path", "xdp", "--xdp-interface", "cpx-no-such-if0"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    relay.assert_alive();
    let logs = relay.logs();
    let why: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("XDP fast path off"))
        .collect();
    assert_eq!(why.len(), 1, "one line says why:\n{logs}");
    eprintln!("{}", why[0]);
    // It still relays: an Allocate on the socket path succeeds.
    let conn = cloudproxy_sdk::blocking::Conn::udp(relay.udp);
    assert_eq!(common::turn::try_allocate(conn, &relay.secret), Ok(()));
}
