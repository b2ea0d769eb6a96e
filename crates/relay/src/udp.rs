//! UDP tasks: a listener per shard and one task per relayed transport address.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use cloudproxy_proto::{ClientAddr, PeerAddr, RelayAddr, Transport, HEADROOM, TAILROOM};
use tokio::net::UdpSocket;

use crate::metrics::Direction;
use crate::shard::SharedShard;

/// Largest datagram we accept; anything longer is truncated by the kernel and then fails to
/// parse.
const MAX_DATAGRAM: usize = 65_535;

/// Reads client datagrams from one listener. The buffer is allocated once per task.
pub(crate) async fn listen(shard: SharedShard, socket: Rc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, remote) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; they are not fatal.
                tracing::trace!("UDP recv on {local}: {e}");
                continue;
            }
        };
        let client = ClientAddr {
            transport: Transport::Udp,
            remote,
            local,
        };
        let mut s = shard.borrow_mut();
        let bytes = &buf[..n];
        match s.server.handle_client_input(bytes, client, Instant::now()) {
            Some(fwd) => s.forward(&fwd, bytes, Transport::Udp),
            None => s.flush(&shard),
        }
    }
}

/// Reads peer datagrams on one relayed transport address, `HEADROOM` bytes into the buffer so
/// the server can write the ChannelData or Data indication header in front without copying.
pub(crate) async fn relay(shard: SharedShard, socket: Rc<UdpSocket>, addr: SocketAddr) {
    let mut buf = vec![0u8; HEADROOM + MAX_DATAGRAM + TAILROOM];
    loop {
        let (n, peer) = match socket
            .recv_from(&mut buf[HEADROOM..HEADROOM + MAX_DATAGRAM])
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::trace!("relay recv on {addr}: {e}");
                continue;
            }
        };
        let mut s = shard.borrow_mut();
        let out = s.server.handle_peer_input(
            RelayAddr(addr),
            PeerAddr(peer),
            &mut buf,
            n,
            Instant::now(),
        );
        if let Some((client, range)) = out {
            if s.send_to_client(&client, &buf[range]) {
                s.traffic
                    .record(Direction::PeerToClient, client.transport, n);
            }
        }
    }
}
