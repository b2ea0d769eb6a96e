//! `cloudproxy up` takes what `relay` takes for the pieces a deployment needs: a relay IP,
//! the public IP published at the control plane, more allowed peers, and a static secret.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{Attr, ALLOCATE, CREATE_PERMISSION};
use cloudproxy_testkit::turn::{Conn, TurnClient};
use common::{cloudproxy_bin, http, reserve_ports, ChildGuard, TempDir};

#[test]
fn up_takes_relay_ip_public_ip_peers_and_a_static_secret() {
    let p = reserve_ports(5, true);
    let a = |i: usize| format!("127.0.0.1:{}", p[i]);
    // A peer the media service is not: allowed only by --allow-peer.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let dir = TempDir::new("up-flags");
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["up", "--data-dir"])
        .arg(dir.0.join("data"))
        .args(["--control", &a(0), "--media", &a(1), "--udp", &a(2)])
        .args(["--tls", &a(3), "--metrics", &a(4)])
        .args(["--relay-ip", "127.0.0.2", "--public-ip", "203.0.113.7"])
        .args(["--allow-peer", &peer_addr.to_string()])
        .args(["--static-secret", "s3cret"])
        .env_remove("CLOUDPROXY_SECRET");
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy up", cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = guard.try_wait() {
            panic!("up exited with {status}:\n{}", guard.output.text());
        }
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l == "ready" => break,
            _ => assert!(
                Instant::now() < deadline,
                "not ready:\n{}",
                guard.output.text()
            ),
        }
    }

    // The static secret's REST credentials work, and the relayed address is --relay-ip's.
    let udp: SocketAddr = a(2).parse().unwrap();
    let mut c = TurnClient::with_secret(Conn::udp(udp), "s3cret");
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "{:?}\n{}", r.error, guard.output.text());
    assert_eq!(r.relayed[0].ip().to_string(), "127.0.0.2");
    // --allow-peer opens that peer, and only that one (besides the media service).
    let r = c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(peer_addr)]);
    assert!(r.success, "{:?}", r.error);
    // (TURN permissions are per IP address, so "another peer" is another address.)
    let other: SocketAddr = format!("127.0.0.3:{}", peer_addr.port()).parse().unwrap();
    let r = c.transact(CREATE_PERMISSION, &[Attr::PeerAddress(other)]);
    assert_eq!(r.error.map(|e| e.0), Some(403));
    // A wrong secret is refused.
    let mut wrong = TurnClient::with_secret(Conn::udp(udp), "not-it");
    assert_eq!(
        wrong
            .transact(ALLOCATE, &[Attr::RequestedTransportUdp])
            .error
            .map(|e| e.0),
        Some(401)
    );

    // The control plane lists the relay at --public-ip, with the listeners' ports.
    let key = std::fs::read_to_string(dir.0.join("data/operator.key")).unwrap();
    let (status, text) = http(&a(0), "GET", "/v1/edges/local-1", Some(key.trim()), "");
    assert_eq!(status, 200, "{text}");
    let body = &text[text.find("\r\n\r\n").expect("headers") + 4..];
    let edge: serde_json::Value = serde_json::from_str(body).expect(body);
    let mut published: Vec<String> = edge["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            format!(
                "{}:{}:{}",
                l["transport"].as_str().unwrap(),
                l["ip"].as_str().unwrap(),
                l["port"]
            )
        })
        .collect();
    published.sort();
    assert_eq!(
        published,
        [
            format!("tcp:203.0.113.7:{}", p[2]),
            format!("tls:203.0.113.7:{}", p[3]),
            format!("udp:203.0.113.7:{}", p[2]),
        ]
    );
}
