//! UDP tasks: one per listener of a shard and one per relayed transport address. Both are the
//! same receive loop: wait for readability, `recvmmsg` into the shard's
//! [`Batch`](crate::batch::Batch), hand each datagram to the shard, and leave the sending to
//! the shard's sender task (one `sendmmsg` per socket for everything the ready tasks queued).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use cloudproxy_proto::HEADROOM;

use crate::batch::{Received, RECV_BATCH};
use crate::shard::{Outcome, Shard, SharedShard};
use crate::sockets;

/// Datagrams one task handles per wake-up before letting the shard's other tasks run.
const BURST: usize = 2 * RECV_BATCH;

/// What one wake-up of a UDP task did.
enum Burst {
    /// Received a full burst, and the socket may have more.
    More,
    /// The socket is drained (for now); readiness was cleared.
    Drained,
}

/// Reads client datagrams from the listener bound to `local`.
pub(crate) async fn listen(shard: SharedShard, socket: Rc<sockets::Udp>, local: SocketAddr) {
    receive(shard, socket, local, 0, |s, r, now| {
        s.handle_client_datagram(r, local, now)
    })
    .await
}

/// Reads peer datagrams on relayed transport address `addr`, `HEADROOM` bytes into the slots
/// so the server can write the ChannelData or Data indication header in front without copying.
///
/// The task holds no buffer of its own: one batch per shard costs nothing per allocation,
/// where a 64 KiB buffer per allocation would cost 64 KiB each once touched.
pub(crate) async fn relay(shard: SharedShard, socket: Rc<sockets::Udp>, addr: SocketAddr) {
    receive(shard, socket, addr, HEADROOM, |s, r, now| {
        s.handle_peer_datagram(addr, r, now)
    })
    .await
}

/// The receive loop: bursts of `recvmmsg` into the batch at `offset`, each datagram handed to
/// `handle`. Control input (Allocate, Refresh, ...) is carried out after the burst, once the
/// data queued before it has gone: responses, relay socket binds and closes.
async fn receive(
    shard: SharedShard,
    socket: Rc<sockets::Udp>,
    addr: SocketAddr,
    offset: usize,
    mut handle: impl FnMut(&mut Shard, Received, Instant) -> Outcome,
) {
    let fd = socket.as_raw_fd();
    loop {
        let Ok(mut ready) = socket.readable().await else {
            tracing::debug!("UDP socket {addr} failed");
            return;
        };
        // The borrow ends with this block, before any await.
        let burst = {
            let mut guard = shard.borrow_mut();
            let s = &mut *guard;
            let mut handled = 0;
            let mut control = false;
            let burst = loop {
                if s.batch.free() < RECV_BATCH {
                    s.send_queued();
                }
                let n = match s.batch.recv(fd, offset) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Burst::Drained,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on Linux; not fatal.
                        tracing::trace!("UDP recv on {addr}: {e}");
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
                    control |= handle(s, r, now) == Outcome::Handled;
                }
                handled += n;
                if !s.batch.filled() {
                    break Burst::Drained;
                }
                if handled >= BURST {
                    break Burst::More;
                }
            };
            if control {
                s.apply_output();
            } else {
                s.schedule_send();
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
