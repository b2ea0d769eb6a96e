//! The XDP program on a real interface: two network namespaces joined by a veth pair, the
//! program attached (generic mode) to the relay's end. The client and the peer live in the
//! other namespace (two addresses on one interface), so every forwarded datagram goes back out
//! of the interface it came in on, as it would toward a router.
//!
//! Needs root (namespaces, XDP). Without root, or without clang at build time, the tests say
//! so and pass — except under CI (`CI=true`), where they fail.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudproxy_xdp::{Channel, FastPath, Mode, BUILT_WITHOUT};

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 5000);
const LISTENER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 3478);
const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 40000);
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 3), 6000);

fn v6(last: u16, port: u16) -> SocketAddr {
    SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, last), port, 0, 0).into()
}

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        "not root".to_owned()
    } else if !BUILT_WITHOUT.is_empty() {
        BUILT_WITHOUT.to_owned()
    } else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the XDP tests must run in CI: {why}"
    );
    eprintln!("skipped: {why}");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two namespaces; deleted on drop.
struct Lab {
    client_ns: String,
    relay_ns: String,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let id = std::process::id();
        let lab = Lab {
            client_ns: format!("cpx-xc-{tag}-{id}"),
            relay_ns: format!("cpx-xr-{tag}-{id}"),
        };
        let (c, r) = (&lab.client_ns, &lab.relay_ns);
        ip(&["netns", "add", c]);
        ip(&["netns", "add", r]);
        ip(&[
            "link", "add", "c0", "netns", c, "type", "veth", "peer", "r0", "netns", r,
        ]);
        ip(&["-n", c, "addr", "add", "10.77.0.1/24", "dev", "c0"]);
        ip(&["-n", c, "addr", "add", "10.77.0.3/24", "dev", "c0"]);
        ip(&["-n", r, "addr", "add", "10.77.0.2/24", "dev", "r0"]);
        // IPv6 too, without duplicate address detection (it would hold them back a second).
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            "fd00:77::1/64",
            "dev",
            "c0",
            "nodad",
        ]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            "fd00:77::3/64",
            "dev",
            "c0",
            "nodad",
        ]);
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            "fd00:77::2/64",
            "dev",
            "r0",
            "nodad",
        ]);
        for (ns, dev) in [(c, "c0"), (r, "r0")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // With TX checksum offload a veth hands over datagrams whose UDP checksum is not
        // filled in yet, and a checksum error would go unseen.
        let off = Command::new("ip")
            .args(["netns", "exec", c, "ethtool", "-K", "c0", "tx", "off"])
            .output()
            .expect("run ethtool");
        assert!(off.status.success(), "ethtool: {off:?}");
        // The relay's neighbour entries, fixed: attaching XDP resets the veth, and a neighbour
        // solicitation lost to that would hold the first datagram back a second.
        let mac = Command::new("ip")
            .args(["netns", "exec", r, "cat", "/sys/class/net/r0/address"])
            .output()
            .expect("read the relay's MAC");
        let mac = String::from_utf8_lossy(&mac.stdout).trim().to_owned();
        for relay_ip in ["10.77.0.2", "fd00:77::2"] {
            ip(&[
                "-n", c, "neigh", "replace", relay_ip, "lladdr", &mac, "dev", "c0",
            ]);
        }
        lab
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets it makes stay there).
    fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid namespace descriptor; only this thread moves.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    }

    fn udp(&self, at: impl Into<SocketAddr>) -> UdpSocket {
        let at: SocketAddr = at.into();
        Self::within(&self.client_ns, move || {
            let s = UdpSocket::bind(at).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
    }

    fn fast_path(&self) -> FastPath {
        Self::within(&self.relay_ns, || {
            FastPath::load("r0", Mode::Generic).expect("load and attach")
        })
    }

    /// UDP checksum errors counted in the client namespace (IPv4 and IPv6).
    fn checksum_errors(&self) -> u64 {
        let read = |file: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.client_ns, "cat", file])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let snmp = read("/proc/net/snmp");
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
        let i = names
            .split_whitespace()
            .position(|n| n == "InCsumErrors")
            .unwrap();
        let v4: u64 = values.split_whitespace().nth(i).unwrap().parse().unwrap();
        let v6: u64 = read("/proc/net/snmp6")
            .lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .map_or(0, |v| v.trim().parse().unwrap());
        v4 + v6
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.client_ns, &self.relay_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn channel() -> Channel {
    Channel {
        client: CLIENT.into(),
        listener: LISTENER.into(),
        number: 0x4001,
        relay: RELAY.into(),
        peer: PEER.into(),
    }
}

fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = number.to_be_bytes().to_vec();
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A payload that differs in every datagram and in its odd bytes, so a checksum or offset
/// error cannot hide.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7 + 1) as u8).collect()
}

#[test]
fn channel_data_both_ways_in_the_kernel() {
    if !usable() {
        return;
    }
    both_ways(&Lab::new("both4"), channel());
}

#[test]
fn channel_data_both_ways_in_the_kernel_over_ipv6() {
    if !usable() {
        return;
    }
    let lab = Lab::new("both6");
    both_ways(
        &lab,
        Channel {
            client: v6(1, 5000),
            listener: v6(2, 3478),
            number: 0x4001,
            relay: v6(2, 40000),
            peer: v6(3, 6000),
        },
    );
}

/// 200 datagrams each way, of every size class, through the kernel; then removal.
fn both_ways(lab: &Lab, ch: Channel) {
    let client = lab.udp(ch.client);
    let peer = lab.udp(ch.peer);
    let mut fp = lab.fast_path();
    let ids = fp
        .install(&ch, Instant::now() + Duration::from_secs(60))
        .unwrap();
    assert_eq!(fp.map_entries(), (1, 1));
    let errors_before = lab.checksum_errors();

    let mut buf = [0u8; 2048];
    let (n, sizes) = (210, [0usize, 1, 2, 3, 160, 1000, 1400]);
    let mut bytes = 0;
    for i in 0..n {
        let len = sizes[i % sizes.len()];
        let p = payload(i, len);
        bytes += len as u64;
        client
            .send_to(&channel_data(ch.number, &p), ch.listener)
            .unwrap();
        let (got, from) = peer.recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "the peer got no datagram {i} ({e}); kernel forwarded {:?}, checksum errors {} \
                 (were {errors_before})",
                fp.counters(ids.to_peer),
                lab.checksum_errors()
            )
        });
        assert_eq!(from, ch.relay, "sent from the relayed address");
        assert_eq!(
            &buf[..got],
            &p[..],
            "payload byte-identical, header stripped"
        );

        peer.send_to(&p, ch.relay).unwrap();
        let (got, from) = client
            .recv_from(&mut buf)
            .expect("the client got the datagram");
        assert_eq!(from, ch.listener, "sent from the listener the client used");
        assert_eq!(
            &buf[..got],
            &channel_data(ch.number, &p)[..],
            "ChannelData framed"
        );
    }
    assert_eq!(
        lab.checksum_errors(),
        errors_before,
        "no UDP checksum errors"
    );
    let to_peer = fp.counters(ids.to_peer).unwrap();
    let to_client = fp.counters(ids.to_client).unwrap();
    assert_eq!((to_peer.packets, to_peer.bytes), (n as u64, bytes));
    assert_eq!((to_client.packets, to_client.bytes), (n as u64, bytes));
    eprintln!(
        "forwarded {n} datagrams each way in the kernel, {bytes} payload bytes each way ({})",
        if ch.client.is_ipv4() { "IPv4" } else { "IPv6" }
    );

    let totals = fp.remove(&ch).expect("installed");
    assert_eq!(totals.0, to_peer);
    assert_eq!(fp.map_entries(), (0, 0));
    // Removed: the relay's namespace gets it, and nobody listens there.
    client
        .send_to(&channel_data(ch.number, b"late"), ch.listener)
        .unwrap();
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "nothing forwarded after removal"
    );
}

#[test]
fn only_exact_live_frames_are_forwarded() {
    if !usable() {
        return;
    }
    let lab = Lab::new("edge");
    let client = lab.udp(CLIENT);
    let peer = lab.udp(PEER);
    let mut fp = lab.fast_path();
    let ids = fp
        .install(&channel(), Instant::now() + Duration::from_secs(60))
        .unwrap();
    let mut buf = [0u8; 2048];
    // Padded (UDP trailing bytes after the frame), another channel, a short frame, STUN:
    // all go to the socket path, none forwarded.
    let mut padded = channel_data(0x4001, b"abc");
    padded.push(0);
    for d in [
        padded,
        channel_data(0x4002, b"abc"),
        channel_data(0x4001, b"abc")[..5].to_vec(),
        vec![0u8; 20],
    ] {
        client.send_to(&d, LISTENER).unwrap();
        assert!(
            peer.recv_from(&mut buf).is_err(),
            "{d:?} must not be forwarded"
        );
    }
    // A live exact frame goes (the entry now ends soon).
    fp.install(&channel(), Instant::now() + Duration::from_secs(2))
        .unwrap();
    client
        .send_to(&channel_data(0x4001, b"ok"), LISTENER)
        .unwrap();
    assert_eq!(peer.recv_from(&mut buf).unwrap().0, 2);
    // Past its expiry the kernel stops forwarding by itself.
    std::thread::sleep(Duration::from_millis(2200));
    client
        .send_to(&channel_data(0x4001, b"expired"), LISTENER)
        .unwrap();
    assert!(peer.recv_from(&mut buf).is_err(), "expired entry forwarded");
    assert_eq!(fp.counters(ids.to_peer).unwrap().packets, 1);
    // Refreshed, it forwards again, with the same counters.
    assert_eq!(
        fp.install(&channel(), Instant::now() + Duration::from_secs(60))
            .unwrap(),
        ids
    );
    client
        .send_to(&channel_data(0x4001, b"again"), LISTENER)
        .unwrap();
    assert_eq!(peer.recv_from(&mut buf).unwrap().0, 5);
    assert_eq!(fp.counters(ids.to_peer).unwrap().packets, 2);
}

/// A day of bindings: the table fills to exactly its bound (then says so), every entry comes
/// out again, and the maps and counters are back to empty, ready for the next day.
#[test]
fn the_table_fills_to_its_bound_and_empties_again() {
    if !usable() {
        return;
    }
    let lab = Lab::new("full");
    let mut fp = lab.fast_path();
    let until = Instant::now() + Duration::from_secs(60);
    let ch = |i: u32| Channel {
        client: SocketAddrV4::new(
            Ipv4Addr::from(0x0a4d_0000 + (i >> 8)),
            1024 + (i & 0xff) as u16,
        )
        .into(),
        number: 0x4000,
        ..channel()
    };
    for round in 0..2 {
        for i in 0..cloudproxy_xdp::MAX_ENTRIES {
            fp.install(&ch(i), until)
                .unwrap_or_else(|e| panic!("round {round}, entry {i}: {e}"));
        }
        assert_eq!(fp.len(), cloudproxy_xdp::MAX_ENTRIES as usize);
        let over = fp.install(&ch(cloudproxy_xdp::MAX_ENTRIES), until);
        assert!(
            matches!(over, Err(cloudproxy_xdp::XdpError::Full)),
            "one past the bound: {over:?}"
        );
        for i in 0..cloudproxy_xdp::MAX_ENTRIES {
            assert!(fp.remove(&ch(i)).is_some(), "round {round}, entry {i}");
        }
        assert_eq!(fp.len(), 0);
        assert_eq!(
            fp.map_entries(),
            (0, 0),
            "round {round}: the kernel's maps are empty"
        );
    }
}
