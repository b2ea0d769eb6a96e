//! A scripted TURN server over UDP, written from the RFC's wire format by hand (no code shared
//! with the generator or our relay), with knobs for the failures and impairments the
//! generator must measure: wrong credentials, a stale nonce, a forbidden peer, and dropped or
//! duplicated packets counted exactly. Integrity is not checked; one thread, bounded by a
//! stop flag.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const COOKIE: u32 = 0x2112_A442;

/// How the fake behaves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Script {
    /// Answer every authenticated Allocate with 401 (a wrong secret).
    pub reject_credentials: bool,
    /// Answer the first authenticated Allocate of each client with 438 Stale Nonce.
    pub stale_nonce_once: bool,
    /// Answer ChannelBind with 403 Forbidden.
    pub forbid_peer: bool,
    /// Drop every n-th ChannelData from a client (client → peer).
    pub drop_every: Option<u64>,
    /// Send every n-th packet from the peer to the client twice.
    pub duplicate_every: Option<u64>,
}

/// What the fake saw and did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub stale_nonces: AtomicU64,
    /// Refresh requests with LIFETIME 0 (allocation deletions).
    pub deletions: AtomicU64,
}

pub(crate) struct FakeTurn {
    pub addr: SocketAddr,
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeTurn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Client {
    relay: UdpSocket,
    peer: Option<SocketAddr>,
    channel: u16,
    stale_sent: bool,
    from_client: u64,
    to_client: u64,
}

impl FakeTurn {
    pub(crate) fn start(script: Script) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the fake server");
        sock.set_nonblocking(true).expect("nonblocking");
        let addr = sock.local_addr().expect("addr");
        let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
        let (s, t) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || serve(&sock, script, &s, &t));
        Self {
            addr,
            tally,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(sock: &UdpSocket, script: Script, stop: &AtomicBool, tally: &Tally) {
    let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            idle = false;
            on_client(sock, &mut clients, from, &buf[..n], script, tally);
        }
        for (client, c) in clients.iter_mut() {
            while let Ok((n, from)) = c.relay.recv_from(&mut buf[4..]) {
                idle = false;
                if Some(from) != c.peer {
                    continue;
                }
                buf[0..2].copy_from_slice(&c.channel.to_be_bytes());
                buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                let _ = sock.send_to(&buf[..4 + n], client);
                c.to_client += 1;
                if script.duplicate_every.is_some_and(|k| c.to_client % k == 0) {
                    let _ = sock.send_to(&buf[..4 + n], client);
                    tally.duplicated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn on_client(
    sock: &UdpSocket,
    clients: &mut HashMap<SocketAddr, Client>,
    from: SocketAddr,
    msg: &[u8],
    script: Script,
    tally: &Tally,
) {
    if msg.len() < 4 {
        return;
    }
    if (0x40..0x80).contains(&msg[0]) {
        let Some(c) = clients.get_mut(&from) else {
            return;
        };
        let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
        c.from_client += 1;
        if script.drop_every.is_some_and(|k| c.from_client % k == 0) {
            tally.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let (Some(peer), Some(data)) = (c.peer, msg.get(4..4 + len)) {
            let _ = c.relay.send_to(data, peer);
        }
        return;
    }
    if msg.len() < 20 {
        return;
    }
    let kind = u16::from_be_bytes([msg[0], msg[1]]);
    let tid: [u8; 12] = msg[8..20].try_into().expect("12 bytes");
    let attrs = attributes(&msg[20..]);
    let authed = attrs.iter().any(|(t, _)| *t == 0x0008);
    let reply = |class_bits: u16, body: Vec<u8>| {
        let _ = sock.send_to(&message(kind | class_bits, &tid, &body), from);
    };
    let challenge = || {
        let mut body = error_code(401, "Unauthorized");
        body.extend(attr(0x0014, b"fake.realm"));
        body.extend(attr(0x0015, b"nonce-1"));
        body
    };
    match kind {
        0x0003 if !authed || script.reject_credentials => reply(0x0110, challenge()),
        0x0003 => {
            let c = clients.entry(from).or_insert_with(|| Client {
                relay: UdpSocket::bind("127.0.0.1:0").expect("relay socket"),
                peer: None,
                channel: 0,
                stale_sent: false,
                from_client: 0,
                to_client: 0,
            });
            c.relay.set_nonblocking(true).expect("nonblocking");
            if script.stale_nonce_once && !c.stale_sent {
                c.stale_sent = true;
                tally.stale_nonces.fetch_add(1, Ordering::Relaxed);
                let mut body = error_code(438, "Stale Nonce");
                body.extend(attr(0x0015, b"nonce-2"));
                return reply(0x0110, body);
            }
            let relayed = c.relay.local_addr().expect("relay addr");
            let mut body = attr(0x0016, &xor_address(relayed));
            body.extend(attr(0x000D, &600u32.to_be_bytes()));
            reply(0x0100, body)
        }
        0x0009 if script.forbid_peer => reply(0x0110, error_code(403, "Forbidden")),
        0x0009 => {
            let get = |t: u16| {
                attrs
                    .iter()
                    .find(|(at, _)| *at == t)
                    .map(|(_, v)| v.clone())
            };
            let (Some(c), Some(number), Some(peer)) =
                (clients.get_mut(&from), get(0x000C), get(0x0012))
            else {
                return reply(0x0110, error_code(400, "Bad Request"));
            };
            c.channel = u16::from_be_bytes([number[0], number[1]]);
            c.peer = Some(unxor_address(&peer));
            reply(0x0100, Vec::new())
        }
        0x0004 => {
            let lifetime = attrs.iter().find(|(t, _)| *t == 0x000D);
            if lifetime.is_some_and(|(_, v)| v[..] == [0, 0, 0, 0]) {
                tally.deletions.fetch_add(1, Ordering::Relaxed);
                clients.remove(&from);
            }
            reply(0x0100, Vec::new())
        }
        _ => {}
    }
}

fn attributes(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let t = u16::from_be_bytes([b[0], b[1]]);
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        let Some(v) = b.get(4..4 + len) else { break };
        out.push((t, v.to_vec()));
        b = &b[((4 + len).div_ceil(4) * 4).min(b.len())..];
    }
    out
}

fn attr(t: u16, v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + v.len());
    out.extend(t.to_be_bytes());
    out.extend((v.len() as u16).to_be_bytes());
    out.extend(v);
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}

fn error_code(code: u16, reason: &str) -> Vec<u8> {
    let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
    v.extend(reason.as_bytes());
    attr(0x0009, &v)
}

fn message(kind: u16, tid: &[u8; 12], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + body.len());
    out.extend(kind.to_be_bytes());
    out.extend((body.len() as u16).to_be_bytes());
    out.extend(COOKIE.to_be_bytes());
    out.extend(tid);
    out.extend(body);
    out
}

fn xor_address(a: SocketAddr) -> Vec<u8> {
    let IpAddr::V4(ip) = a.ip() else {
        panic!("the fake speaks IPv4 only")
    };
    let mut v = vec![0, 0x01];
    v.extend((a.port() ^ (COOKIE >> 16) as u16).to_be_bytes());
    v.extend((u32::from(ip) ^ COOKIE).to_be_bytes());
    v
}

fn unxor_address(v: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (COOKIE >> 16) as u16;
    let ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ COOKIE;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)
}
