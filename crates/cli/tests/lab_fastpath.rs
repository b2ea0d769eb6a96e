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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cloudproxy_lab::{Profile, Role, MEDIA_ADDR, RELAY_ADDR};
use cloudproxy_proto::client::{Attr, CHANNEL_BIND, REFRESH};
use cloudproxy_testkit::turn::{echo_on, Conn, TurnClient};
use common::xdp_maps::{dump, expect_entries, relay_maps};
use common::TempDir;
use labworld::*;

/// One XDP relay at a time in this binary, so "the newest maps" are the running relay's.
static XDP: Mutex<()> = Mutex::new(());

const STATIC_SECRET: &str = "lab-fastpath-secret";

/// Runs `f` on a thread inside the namespace of `role`.
fn within<T: Send + 'static>(w: &World, role: Role, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = format!("/var/run/netns/{}", w.lab.netns(role));
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).expect("the namespace");
        // SAFETY: a valid namespace descriptor; only this thread moves.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// The relay's metrics address inside its namespace.
fn relay_metrics() -> SocketAddr {
    sa(RELAY_ADDR, 9478)
}

/// `GET /metrics` from inside the relay's namespace.
fn metrics(w: &World) -> String {
    within(w, Role::Relay, move || {
        let mut s = TcpStream::connect_timeout(&relay_metrics(), Duration::from_secs(5))
            .expect("connect to the relay's metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
}

/// The value of the series `name` exactly (labels included), 0 if absent.
fn series(text: &str, name: &str) -> u64 {
    common::series_value(text, name).map_or(0, |v| v as u64)
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

/// A lab with one relay started with the XDP fast path (generic mode), or `None` when the
/// lab or XDP is unavailable here (outside CI).
fn xdp_world() -> Option<World> {
    xdp_world_in("generic")
}

/// [`xdp_world`] with the program attached in `mode` (`native` or `generic`).
fn xdp_world_in(mode: &str) -> Option<World> {
    xdp_world_for(
        Profile::PublishedUdpOnly {
            proxies: vec![published_udp()],
        },
        &[],
        mode,
    )
}

/// The lab as `profile` shapes it, its relay (also serving TLS on `extra_tls`) forwarding in
/// the kernel with the program attached in `mode`.
fn xdp_world_for(profile: Profile, extra_tls: &[SocketAddr], mode: &str) -> Option<World> {
    xdp_world_with(profile, extra_tls, mode, &[])
}

/// [`xdp_world_for`] with more relay flags.
fn xdp_world_with(
    profile: Profile,
    extra_tls: &[SocketAddr],
    mode: &str,
    extra: &[&str],
) -> Option<World> {
    let metrics_flag = relay_metrics().to_string();
    let mut flags = vec![
        "--metrics",
        &metrics_flag,
        "--fast-path",
        "xdp",
        "--xdp-interface",
        "eth0",
        "--xdp-mode",
        mode,
        "--static-secret",
        STATIC_SECRET,
    ];
    flags.extend_from_slice(extra);
    let w = world_with_relay_flags(profile, &[(RELAY_ADDR, extra_tls)], &flags)?;
    let log = w.relays[0].1.stderr_lines().join("\n");
    if log.contains("XDP fast path off") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the fast path must run in CI:\n{log}"
        );
        eprintln!("skipped: {log}");
        return None;
    }
    checksums_on_the_wire(&w);
    Some(w)
}

#[test]
fn force_udp_flows_in_the_kernel() {
    let _one = XDP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = xdp_world() else {
        return;
    };
    force_udp_in_the_kernel(&w);
}

/// Force UDP sessions of 300 packets, one of audio-frame size (160-byte payloads) and one of
/// tiny odd-sized ones (7 bytes: a 24-byte ChannelData frame): no loss, every packet and echo
/// in the kernel with its checksum intact, none on the relay's sockets, no entry left after.
fn force_udp_in_the_kernel(w: &World) {
    let per_session = 300;
    for (uid, size) in [(7, "160"), (8, "7")] {
        let run = join_with(
            w,
            "udp",
            &[published_udp()],
            uid,
            per_session,
            &["--size", size],
        );
        assert!(run.ok, "join failed: {:#?}\n{}", run.lines, run.stderr);
        let s = run.summary();
        assert_eq!(s["path"], "turn_udp", "{s}");
        assert_eq!(s["sent"], per_session, "{s}");
        assert_eq!(s["lost"], 0, "size {size}: {s}");
    }
    let send = 2 * per_session;
    // The counters are read into the metrics every second.
    std::thread::sleep(Duration::from_millis(2500));
    let text = metrics(w);
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

/// The relay's own timers end bindings in the kernel too: a channel left to expire (3 s here,
/// with its permission) leaves both maps, and once the number's cool-down is over it binds to
/// another peer, whose entries replace the old ones.
#[test]
fn expired_bindings_leave_the_kernel_and_the_number_rebinds_to_a_new_peer() {
    let _one = XDP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("xdp-expiry");
    let config = dir.0.join("relay.toml");
    std::fs::write(
        &config,
        "[lifetimes]\nchannel_secs = 3\npermission_secs = 3\nchannel_cooldown_secs = 2\n",
    )
    .unwrap();
    let world = xdp_world_with(
        Profile::PublishedUdpOnly {
            proxies: vec![published_udp()],
        },
        &[],
        "generic",
        &["--config", config.to_str().unwrap()],
    );
    drop(dir);
    let Some(w) = world else {
        return;
    };
    let (c2p, p2c) = relay_maps();
    let _echo = Echo::start(&w, &[9000, 9001]);
    let mut c = allocated_client(&w);
    bind(&mut c, 0x4000, 9000);
    expect_entries(c2p, 1, "after ChannelBind");
    expect_entries(p2c, 1, "after ChannelBind");
    echo_on(&mut c, 0x4000, b"before the expiry");
    let bound = std::time::Instant::now();
    expect_entries(c2p, 0, "after the binding expired");
    expect_entries(p2c, 0, "after the binding expired");
    eprintln!(
        "entries gone {:?} after the bind (lifetime 3 s)",
        bound.elapsed()
    );
    assert!(
        bound.elapsed() >= Duration::from_secs(2),
        "gone before the binding's lifetime: {:?}",
        bound.elapsed()
    );
    // After the cool-down, the number goes to another peer.
    std::thread::sleep(Duration::from_millis(2500));
    bind(&mut c, 0x4000, 9001);
    let e = expect_entries(c2p, 1, "after rebinding")[0].clone();
    assert_eq!((e.channel(), e.peer_port()), (0x4000, 9001));
    let back = expect_entries(p2c, 1, "after rebinding")[0].clone();
    assert_eq!(
        u16::from_be_bytes([back.key[8], back.key[9]]),
        9001,
        "the answer path is the new peer's: {back:?}"
    );
    echo_on(&mut c, 0x4000, b"to the new peer");
}

/// The relay's (kernel, socket) packet counts, client to peer, from its metrics.
fn relayed(w: &World) -> (u64, u64) {
    let text = metrics(w);
    let kernel = series(
        &text,
        "cloudproxy_fastpath_packets_total{direction=\"client_to_peer\"}",
    );
    let sockets = ["udp", "tcp", "tls"]
        .iter()
        .map(|t| {
            series(
                &text,
                &format!(
                    "cloudproxy_packets_total{{direction=\"client_to_peer\",transport=\"{t}\"}}"
                ),
            )
        })
        .sum();
    (kernel, sockets)
}

/// Auto with the fast path on: on an open network it goes direct and the relay forwards
/// nothing; with UDP blocked it falls back over TLS 443, which the socket path relays (the
/// kernel takes only ChannelData over UDP) — every packet, and none in the kernel.
#[test]
fn auto_direct_and_relayed_with_the_fast_path_on() {
    let _one = XDP.lock().unwrap_or_else(|e| e.into_inner());
    let send = 100;
    {
        let Some(w) = xdp_world_for(Profile::Open, &[pool_tls()], "generic") else {
            return;
        };
        auto_session(&w, 11, send, "direct");
        assert_eq!(relayed(&w), (0, 0), "an Auto session that went direct");
    }
    let Some(w) = xdp_world_for(Profile::UdpBlocked, &[pool_tls()], "generic") else {
        return;
    };
    auto_session(&w, 12, send, "turn_tls");
    let (kernel, sockets) = relayed(&w);
    eprintln!("Auto over TLS 443: {kernel} packets in the kernel, {sockets} on sockets");
    assert_eq!(kernel, 0, "TLS is the socket path's");
    assert!(
        sockets >= send as u64,
        "every data packet relayed: {sockets}"
    );
}

/// An Auto join of `send` packets that takes `path` and loses none; returns once the relay's
/// counters have been read into its metrics.
fn auto_session(w: &World, uid: u32, send: u32, path: &str) {
    let run = join(w, "auto", &[pool_tls()], uid, send);
    assert!(run.ok, "join failed: {:#?}\n{}", run.lines, run.stderr);
    let s = run.summary();
    assert_eq!((&s["path"], &s["lost"]), (&path.into(), &0.into()), "{s}");
    assert_eq!(s["sent"], send, "{s}");
    std::thread::sleep(Duration::from_millis(2500));
}

/// Where XDP cannot run (here: an interface that does not exist), the relay says why in one
/// line and relays on the socket path.
#[test]
fn without_xdp_the_relay_says_why_and_relays_on_sockets() {
    // Its failed load creates maps for a moment: not while another test looks for the newest.
    let _one = XDP.lock().unwrap_or_else(|e| e.into_inner());
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
    let conn = cloudproxy_testkit::turn::Conn::udp(relay.udp);
    assert_eq!(common::turn::try_allocate(conn, &relay.secret), Ok(()));
}

/// UDP echo peers in the media namespace, until dropped.
struct Echo(Arc<AtomicBool>);

impl Echo {
    fn start(w: &World, ports: &[u16]) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        for &port in ports {
            let s = within(w, Role::Media, move || {
                std::net::UdpSocket::bind(sa(MEDIA_ADDR, port)).expect("bind the echo peer")
            });
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            });
        }
        Echo(stop)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A TURN client in the client's namespace, with the relay's static secret.
fn turn_client(w: &World) -> TurnClient {
    let s = within(w, Role::Client, || {
        std::net::UdpSocket::bind("0.0.0.0:0").expect("bind the client")
    });
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    TurnClient::with_secret(Conn::Udp(s, published_udp()), STATIC_SECRET)
}

/// [`turn_client`] with a UDP allocation.
fn allocated_client(w: &World) -> TurnClient {
    let mut c = turn_client(w);
    let r = c.transact(
        cloudproxy_proto::client::ALLOCATE,
        &[Attr::RequestedTransportUdp],
    );
    assert!(r.success, "allocate: {:?}", r.error);
    c
}

fn bind(c: &mut TurnClient, number: u16, peer_port: u16) {
    let r = c.transact(
        CHANNEL_BIND,
        &[
            Attr::ChannelNumber(number),
            Attr::PeerAddress(sa(MEDIA_ADDR, peer_port)),
        ],
    );
    assert!(r.success, "channel bind: {:?}", r.error);
}

/// The kernel's entries follow the server's bindings: a bind installs both directions, a
/// refresh moves the expiry, a second channel adds its own, deleting the allocation removes
/// them, and a drained relay leaves nothing behind when it exits.
#[test]
fn kernel_entries_follow_bindings() {
    let _one = XDP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = xdp_world() else {
        return;
    };
    let (c2p, p2c) = relay_maps();
    assert_eq!((dump(c2p).len(), dump(p2c).len()), (0, 0));
    let _echo = Echo::start(&w, &[9000, 9001]);
    let mut c = allocated_client(&w);

    bind(&mut c, 0x4000, 9000);
    let e = expect_entries(c2p, 1, "after ChannelBind")[0].clone();
    assert_eq!((e.channel(), e.peer_port()), (0x4000, 9000));
    expect_entries(p2c, 1, "after ChannelBind");
    for i in 0..20u8 {
        echo_on(&mut c, 0x4000, &[i; 100]);
    }

    // A refresh moves the expiry on, in place.
    std::thread::sleep(Duration::from_millis(1100));
    bind(&mut c, 0x4000, 9000);
    let refreshed = expect_entries(c2p, 1, "after the refresh")[0].clone();
    assert!(
        refreshed.expires_ns() >= e.expires_ns() + 1_000_000_000,
        "expiry moved on: {} -> {}",
        e.expires_ns(),
        refreshed.expires_ns()
    );

    // A second channel, to another peer: its own entries.
    bind(&mut c, 0x4001, 9001);
    let both = expect_entries(c2p, 2, "two channels");
    assert!(both
        .iter()
        .any(|e| (e.channel(), e.peer_port()) == (0x4001, 9001)));
    expect_entries(p2c, 2, "two channels");
    echo_on(&mut c, 0x4001, b"second peer");

    // Deleting the allocation removes everything it had in the kernel.
    let r = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "delete: {:?}", r.error);
    expect_entries(c2p, 0, "after the allocation ended");
    expect_entries(p2c, 0, "after the allocation ended");

    // Drain: a live session keeps flowing in the kernel; when it ends the relay exits, and
    // its program and maps go with it.
    let mut c = allocated_client(&w);
    bind(&mut c, 0x4000, 9000);
    expect_entries(c2p, 1, "before the drain");
    let relay = &w.relays[0].1;
    let term = Command::new("kill")
        .args(["-TERM", &relay.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    std::thread::sleep(Duration::from_millis(300));
    echo_on(&mut c, 0x4000, b"while draining");
    expect_entries(c2p, 1, "while draining");
    let r = c.transact(REFRESH, &[Attr::Lifetime(0)]);
    assert!(r.success, "delete: {:?}", r.error);
    let status = relay
        .wait(Duration::from_secs(20))
        .expect("the drained relay exits");
    assert!(status.success(), "{status:?}");
    // The kernel frees a map once its last reference is gone, after an RCU grace period.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("bpftool")
            .args(["map", "show", "id", &c2p.to_string()])
            .output()
            .unwrap();
        if !out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay's maps outlived it by 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Native mode (in the veth driver). A veth transmits XDP_TX frames only when its peer end
/// has an XDP program too, so the router's end gets a pass-through one, as a NIC needs
/// nothing.
#[test]
fn force_udp_flows_in_the_kernel_in_native_mode() {
    let _one = XDP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = xdp_world_in("native") else {
        return;
    };
    let dir = TempDir::new("xdp-pass");
    let (src, obj) = (dir.0.join("pass.c"), dir.0.join("pass.o"));
    std::fs::write(
        &src,
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\
         SEC(\"xdp\") int pass(struct xdp_md *ctx) { return XDP_PASS; }\n\
         char LICENSE[] SEC(\"license\") = \"GPL\";\n",
    )
    .unwrap();
    let cc = Command::new("clang")
        .args([
            "-O2",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("clang");
    assert!(cc.status.success(), "{cc:?}");
    let attach = Command::new("ip")
        .args([
            "-n",
            &w.lab.netns(Role::Router),
            "link",
            "set",
            "dev",
            "to-relay",
            "xdpdrv",
        ])
        .arg("obj")
        .arg(&obj)
        .args(["sec", "xdp"])
        .output()
        .expect("ip");
    drop(dir);
    assert!(
        attach.status.success(),
        "pass-through on the router's end: {attach:?}"
    );
    force_udp_in_the_kernel(&w);
}
