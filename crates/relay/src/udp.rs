//! UDP tasks: a listener per shard and one task per relayed transport address. Both receive
//! with `recvmmsg` into the shard's [`Batch`](crate::batch::Batch) and queue what the server
//! decides to forward; the shard sends the queue with one `sendmmsg` per socket.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use cloudproxy_proto::{ClientAddr, PeerAddr, RelayAddr, Transport, HEADROOM};
use tokio::io::unix::AsyncFd;

use crate::batch::{Out, RECV_BATCH};
use crate::metrics::Direction;
use crate::shard::SharedShard;

/// A UDP socket registered with the shard's tokio reactor. Reads and writes go straight to the
/// kernel through its descriptor; tokio only reports readiness.
pub(crate) type Socket = AsyncFd<std::net::UdpSocket>;

/// Registers `socket` (non-blocking) with the current shard's reactor, for read readiness only:
/// sends never wait on tokio (see `batch.rs`).
pub(crate) fn register(socket: std::net::UdpSocket) -> std::io::Result<Socket> {
    // SAFETY: `socket` owns its descriptor, and the `AsyncFd` owns `socket` from here on, so the
    // descriptor stays open and the same for the `AsyncFd`'s whole life.
    unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Datagrams one task handles per wake-up before letting the shard's other tasks run.
const BURST: usize = 2 * RECV_BATCH;

/// What one wake-up of a UDP task did.
enum Burst {
    /// Received a full burst, and the socket may have more.
    More,
    /// The socket is drained (for now); readiness was cleared.
    Drained,
}

/// Reads client datagrams from one listener.
pub(crate) async fn listen(shard: SharedShard, socket: Rc<Socket>, local: SocketAddr) {
    let fd = socket.as_raw_fd();
    loop {
        let Ok(mut ready) = socket.readable().await else {
            tracing::debug!("UDP listener {local} failed");
            return;
        };
        let mut handled = 0;
        // The borrow ends with this block, before any await.
        let burst = {
            let mut guard = shard.borrow_mut();
            let s = &mut *guard;
            let mut control = false;
            let burst = loop {
                if s.batch.free() < RECV_BATCH {
                    s.flush_data();
                }
                let n = match s.batch.recv(fd, 0) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Burst::Drained,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on Linux; not fatal.
                        tracing::trace!("UDP recv on {local}: {e}");
                        handled += 1;
                        if handled >= BURST {
                            break Burst::More;
                        }
                        continue;
                    }
                };
                let now = Instant::now();
                for i in 0..s.batch.received().len() {
                    let r = s.batch.received()[i];
                    let client = ClientAddr {
                        transport: Transport::Udp,
                        remote: r.from,
                        local,
                    };
                    let bytes = s.batch.packet(r.slot, 0, r.len);
                    match s.server.handle_client_input(bytes, client, now) {
                        Some(fwd) => s.queue_forward(&fwd, r.slot, 0),
                        None => control = true,
                    }
                }
                handled += n;
                if !s.batch.filled() {
                    break Burst::Drained;
                }
                if handled >= BURST {
                    break Burst::More;
                }
            };
            // Control input (Allocate, Refresh, ...) is carried out after the burst: the
            // server's responses and relay socket binds and closes, after the data queued
            // before them has gone.
            if control {
                s.flush(&shard);
            } else {
                s.schedule_flush();
            }
            burst
        };
        match burst {
            Burst::Drained => ready.clear_ready(),
            Burst::More => {
                drop(ready);
                // A full burst leaves readiness set: let the shard's other tasks have a turn.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Reads peer datagrams on one relayed transport address, `HEADROOM` bytes into the slots so
/// the server can write the ChannelData or Data indication header in front without copying.
///
/// The task holds no buffer of its own: it waits for readability, then receives into the
/// shard's batch. A 64 KiB buffer per allocation would cost 64 KiB of memory per allocation
/// once touched; one batch per shard costs nothing per allocation.
pub(crate) async fn relay(shard: SharedShard, socket: Rc<Socket>, addr: SocketAddr) {
    let fd = socket.as_raw_fd();
    loop {
        let Ok(mut ready) = socket.readable().await else {
            tracing::debug!("relay socket {addr} failed");
            return;
        };
        let burst = {
            let mut guard = shard.borrow_mut();
            let s = &mut *guard;
            let mut handled = 0;
            let burst = loop {
                if s.batch.free() < RECV_BATCH {
                    s.flush_data();
                }
                let n = match s.batch.recv(fd, HEADROOM) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Burst::Drained,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on Linux; not fatal.
                        tracing::trace!("relay recv on {addr}: {e}");
                        handled += 1;
                        if handled >= BURST {
                            break Burst::More;
                        }
                        continue;
                    }
                };
                let now = Instant::now();
                for i in 0..s.batch.received().len() {
                    let r = s.batch.received()[i];
                    let out = s.server.handle_peer_input(
                        RelayAddr(addr),
                        PeerAddr(r.from),
                        s.batch.slot_mut(r.slot),
                        r.len,
                        now,
                    );
                    if let Some((client, range)) = out {
                        s.queue_to_client(&client, r.slot, range, r.len);
                    }
                }
                handled += n;
                if !s.batch.filled() {
                    break Burst::Drained;
                }
                if handled >= BURST {
                    break Burst::More;
                }
            };
            s.schedule_flush();
            burst
        };
        match burst {
            Burst::Drained => ready.clear_ready(),
            Burst::More => {
                drop(ready);
                tokio::task::yield_now().await;
            }
        }
    }
}

impl crate::shard::Shard {
    /// Queues client data (in slot `slot`, at `fwd.range` from `offset`) for the peer, from
    /// the allocation's relay socket.
    pub(crate) fn queue_forward(
        &mut self,
        fwd: &cloudproxy_proto::Forward,
        slot: usize,
        offset: usize,
    ) {
        let Some(relay) = self.relay_socket(fwd.relay.0) else {
            return;
        };
        let len = fwd.range.len() as u32;
        self.batch.push(Out {
            fd: relay,
            to: fwd.peer.0,
            slot: slot as u16,
            start: (offset + fwd.range.start) as u32,
            len,
            dir: Direction::ClientToPeer,
            transport: Transport::Udp,
            counted: len,
        });
    }

    /// Queues peer data (slot `slot`, bytes `range`, framed by the server) for a UDP client
    /// from the listener it reached; a TCP/TLS client's frame goes into its stream queue at
    /// once.
    pub(crate) fn queue_to_client(
        &mut self,
        client: &ClientAddr,
        slot: usize,
        range: std::ops::Range<usize>,
        payload: usize,
    ) {
        match client.transport {
            Transport::Udp => {
                let Some(fd) = self.listener_fd(client.local) else {
                    return;
                };
                self.batch.push(Out {
                    fd,
                    to: client.remote,
                    slot: slot as u16,
                    start: range.start as u32,
                    len: range.len() as u32,
                    dir: Direction::PeerToClient,
                    transport: Transport::Udp,
                    counted: payload as u32,
                });
            }
            Transport::Tcp | Transport::Tls => {
                let sent = match self.streams.get(client) {
                    Some(sink) => sink.push(self.batch.packet(slot, range.start, range.len())),
                    None => false,
                };
                if sent {
                    self.traffic
                        .record(Direction::PeerToClient, client.transport, payload);
                }
            }
        }
    }
}
