//! The pieces of the data path on real loopback sockets: the echo peer's batched echo, and
//! stream framing of ChannelData (padding, frames split across reads, STUN in between).

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use cloudproxy_bench::data_conn::{DataConn, StreamBufs};
use cloudproxy_bench::echo::EchoPeer;
use cloudproxy_proto::client;

#[test]
fn echo_peer_returns_every_datagram_to_its_sender() {
    let peer = EchoPeer::start(Ipv4Addr::LOCALHOST.into(), 2, 1 << 20, 2048).expect("start");
    let senders: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    for (i, s) in senders.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for n in 0..50u32 {
            let msg = [i as u8, (n >> 8) as u8, n as u8, 0xAB];
            s.send_to(&msg[..3 + (n as usize % 2)], peer.addr())
                .unwrap();
        }
    }
    for (i, s) in senders.iter().enumerate() {
        let mut buf = [0u8; 16];
        for n in 0..50u32 {
            let (len, from) = s.recv_from(&mut buf).expect("an echo within 2 s");
            assert_eq!(from, peer.addr());
            assert_eq!(len, 3 + (n as usize % 2), "same length back");
            assert_eq!(&buf[..3], &[i as u8, (n >> 8) as u8, n as u8]);
        }
    }
    assert_eq!(peer.received(), 150);
}

/// The ceiling forwarder passes each flow's datagrams to the peer and back, unchanged and in
/// order, from one listener address.
#[test]
fn forwarder_relays_each_flow_to_the_peer_and_back() {
    let peer = EchoPeer::start(Ipv4Addr::LOCALHOST.into(), 1, 1 << 20, 2048).expect("start");
    let fwd = cloudproxy_bench::forward::Forwarder::start(
        "127.0.0.1:0".parse().unwrap(),
        peer.addr(),
        2,
        1 << 20,
    )
    .expect("start");
    let flows: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    for (i, s) in flows.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for n in 0..40u8 {
            s.send_to(&[i as u8, n, 0x40, 0], fwd.addr()).unwrap();
        }
    }
    for (i, s) in flows.iter().enumerate() {
        let mut buf = [0u8; 16];
        for n in 0..40u8 {
            let (len, from) = s.recv_from(&mut buf).expect("a reply within 2 s");
            assert_eq!(from, fwd.addr());
            assert_eq!(&buf[..len], &[i as u8, n, 0x40, 0]);
        }
    }
    assert_eq!(peer.received(), 120);
    fwd.stop();
}

#[test]
fn stream_link_cuts_frames_across_reads() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let mut conn = DataConn::Tcp(client, StreamBufs::new(&[]));
    conn.set_nonblocking().unwrap();

    // Three padded ChannelData frames (5, 8 and 1 bytes) and a STUN message, written in
    // awkward pieces.
    let mut wire = Vec::new();
    for payload in [&b"hello"[..], b"12345678", b"x"] {
        wire.extend(client::channel_data(0x4000, payload, true));
    }
    let stun = client::request(
        client::REFRESH,
        client::TransactionId::from(7u128),
        &[],
        None,
    );
    wire.extend(&stun);
    assert_eq!(wire.len() % 4, 0, "stream frames are padded to 4 bytes");
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    for chunk in wire.chunks(5) {
        server.write_all(chunk).unwrap();
        server.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(conn.read_frames(|f| frames.push(f.to_vec())).unwrap());
    }
    while frames.len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        assert!(conn.read_frames(|f| frames.push(f.to_vec())).unwrap());
    }
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[0], client::channel_data(0x4000, b"hello", true));
    assert_eq!(frames[1].len(), 12);
    assert_eq!(frames[2].len(), 8);
    assert_eq!(frames[3], stun);

    // Queued output goes out in one write; a closed peer is reported.
    conn.tx().unwrap().extend_from_slice(&frames[0]);
    conn.flush().unwrap();
    assert!(!conn.backlogged());
    drop(server);
    let closed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(5));
        !conn.read_frames(|_| {}).unwrap_or(false)
    });
    assert!(closed, "the end of the stream is seen");
}
