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

/// Datagrams one relay task handles per wake-up before letting the shard's other tasks run.
const BURST: usize = 64;

/// Reads peer datagrams on one relayed transport address, `HEADROOM` bytes into the buffer so
/// the server can write the ChannelData or Data indication header in front without copying.
///
/// The task holds no buffer of its own: it waits for readability, then borrows the shard's one
/// peer buffer and drains the socket without blocking. A 64 KiB buffer per allocation would
/// cost 64 KiB of memory per allocation once touched; one per shard costs nothing per
/// allocation.
pub(crate) async fn relay(shard: SharedShard, socket: Rc<UdpSocket>, addr: SocketAddr) {
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!("relay socket {addr}: {e}");
            return;
        }
        // The borrow ends with this block, before any await.
        let handled = {
            let mut guard = shard.borrow_mut();
            let s = &mut *guard;
            // Taken out and put back: no allocation, and `s` stays free to borrow.
            let mut buf = std::mem::take(&mut s.peer_buf);
            let mut handled = 0;
            while handled < BURST {
                handled += 1;
                let (n, peer) =
                    match socket.try_recv_from(&mut buf[HEADROOM..HEADROOM + MAX_DATAGRAM]) {
                        Ok(r) => r,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here on Linux; not fatal.
                            tracing::trace!("relay recv on {addr}: {e}");
                            continue;
                        }
                    };
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
            s.peer_buf = buf;
            handled
        };
        if handled == BURST {
            // A full burst leaves readiness set: let the shard's other tasks have a turn.
            tokio::task::yield_now().await;
        }
    }
}

/// The shard's one buffer for peer datagrams.
pub(crate) fn peer_buffer() -> Vec<u8> {
    vec![0u8; HEADROOM + MAX_DATAGRAM + TAILROOM]
}
