//! Helpers shared by the lab's self-tests: echo servers and probes run with `cpl-lab-probe`.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use cloudproxy_lab::{Lab, LabChild, Profile, Role, MEDIA_ADDR, RELAY_ADDR, RELAY_POOL_ADDR};

/// The probe tool built from `src/bin/cpl-lab-probe.rs`.
pub(crate) const PROBE: &str = env!("CARGO_BIN_EXE_cpl-lab-probe");

/// Bound for a probe run; a probe bounds its own waits well below this.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);

/// The relay's published TURN-over-UDP port.
pub(crate) const RELAY_UDP: SocketAddrV4 = SocketAddrV4::new(RELAY_ADDR, 3478);
/// A relay UDP port that no profile publishes.
pub(crate) const RELAY_UDP_OTHER: SocketAddrV4 = SocketAddrV4::new(RELAY_ADDR, 3479);
/// The relay's TLS port.
pub(crate) const RELAY_TLS: SocketAddrV4 = SocketAddrV4::new(RELAY_ADDR, 443);
/// A relay TCP port that no profile publishes.
pub(crate) const RELAY_TCP_OTHER: SocketAddrV4 = SocketAddrV4::new(RELAY_ADDR, 8080);
/// The unpublished pool address, UDP.
pub(crate) const POOL_UDP: SocketAddrV4 = SocketAddrV4::new(RELAY_POOL_ADDR, 3478);
/// The unpublished pool address, TLS port.
pub(crate) const POOL_TLS: SocketAddrV4 = SocketAddrV4::new(RELAY_POOL_ADDR, 443);
/// The media service's UDP port.
pub(crate) const MEDIA_UDP: SocketAddrV4 = SocketAddrV4::new(MEDIA_ADDR, 5000);
/// A media TCP port.
pub(crate) const MEDIA_TCP: SocketAddrV4 = SocketAddrV4::new(MEDIA_ADDR, 8443);

/// A lab for `profile`, or `None` (after a loud message) where labs cannot run outside CI.
pub(crate) fn lab(profile: Profile) -> Option<Lab> {
    Lab::start_or_skip(profile)
}

/// Echo servers in the relay and media namespaces; they stop when dropped.
pub(crate) struct Servers {
    pub relay: LabChild,
    pub media: LabChild,
}

pub(crate) fn start_servers(lab: &Lab) -> Servers {
    let relay = serve(
        lab,
        Role::Relay,
        // UDP per address: a socket bound to 0.0.0.0 would answer datagrams sent to the pool
        // address from the primary one, and the client (and conntrack) would not take it.
        &[
            &format!("udp:{RELAY_UDP}"),
            &format!("udp:{POOL_UDP}"),
            &format!("udp:{RELAY_UDP_OTHER}"),
            "tcp:0.0.0.0:443",
            "tcp:0.0.0.0:8080",
        ],
    );
    let media = serve(
        lab,
        Role::Media,
        &["udp:0.0.0.0:5000", "tcp:0.0.0.0:443", "tcp:0.0.0.0:8443"],
    );
    Servers { relay, media }
}

/// `cpl-lab-probe serve SPECS…` in `role`, once it said `ready`.
pub(crate) fn serve(lab: &Lab, role: Role, specs: &[&str]) -> LabChild {
    let server = lab
        .spawn(role, PROBE, [&["serve"], specs].concat())
        .expect("spawn echo server");
    server
        .wait_for_line(Duration::from_secs(5), |line| line == "ready")
        .expect("echo server ready");
    server
}

/// What a UDP probe saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Udp {
    pub sent: u32,
    pub received: u32,
}

/// Sends `count` datagrams from `from` to `target` and counts the echoes.
pub(crate) fn udp(lab: &Lab, from: Role, target: SocketAddrV4, count: u32) -> Udp {
    let line = probe(
        lab,
        from,
        &["udp", &target.to_string(), &count.to_string(), "300"],
    );
    let field = |name: &str| -> u32 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    Udp {
        sent: field("sent"),
        received: field("received"),
    }
}

/// Whether a TCP connection from `from` to `target` opens and echoes within `timeout`.
pub(crate) fn tcp(lab: &Lab, from: Role, target: SocketAddrV4, timeout: Duration) -> bool {
    let ms = timeout.as_millis().to_string();
    let line = probe(lab, from, &["tcp", &target.to_string(), &ms]);
    line.contains("echoed=true")
}

/// A short TCP timeout for connections the firewall should drop.
pub(crate) const BLOCKED: Duration = Duration::from_millis(400);
/// A generous TCP timeout for connections that must work.
pub(crate) const OPEN: Duration = Duration::from_secs(5);

fn probe(lab: &Lab, from: Role, args: &[&str]) -> String {
    let out = lab
        .run(from, PROBE, args, PROBE_DEADLINE)
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "probe {args:?} from {from} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `addr` as the `SocketAddr` the profiles take.
pub(crate) fn sa(addr: SocketAddrV4) -> SocketAddr {
    SocketAddr::V4(addr)
}

/// Names of the lab namespaces currently present.
pub(crate) fn namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}
