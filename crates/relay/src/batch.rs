//! Batched UDP I/O for one shard: `recvmmsg` into preallocated packet slots, a queue of
//! outgoing datagrams that point into those same slots, and one `sendmmsg` per socket to flush
//! it.
//!
//! ## The scheme
//!
//! A shard owns one [`Batch`]: [`SLOTS`] slots of [`SLOT`] bytes, each big enough for the
//! largest datagram plus the core's `HEADROOM` in front and `TAILROOM` behind. Slots are
//! handed out in order: a socket's `recvmmsg` fills the next free ones (client datagrams at
//! offset 0, peer datagrams at `HEADROOM` so the ChannelData header can be written in front),
//! the server decides where each goes, and the driver [`Batch::push`]es an [`Out`] naming the
//! socket, destination and byte range of the slot — no copy. [`Batch::flush`] groups the queue
//! by socket (arrival order kept within a socket) and sends each group with one `sendmmsg`;
//! then every slot is free again. The shard flushes when the slots run low, before any control
//! work (which may close a relay socket, so no queued descriptor can go stale), and once per
//! scheduler turn from a flush task, so datagrams for one socket gathered by several relay
//! tasks go out together.
//!
//! ## When the kernel refuses
//!
//! `EAGAIN` (the socket's send buffer is full) waits for the socket to become writable with a
//! short blocking `poll` — at most [`FULL_WAITS`] × [`FULL_WAIT_MS`] ms per flush — and resends
//! from the first datagram not taken, so nothing is reordered. Only if the socket stays full
//! are the remaining datagrams of that group dropped, and counted
//! (`cloudproxy_send_dropped_total`). Any other error belongs to the one datagram that failed
//! (a firewall's `EPERM`, `EMSGSIZE`): it is dropped and counted, and the rest still go. The
//! wait blocks this shard's thread; the shard could not make progress toward that socket
//! anyway, and the bound keeps one stuck socket from stalling the others for long.
//!
//! Everything is allocated once in [`Batch::new`]; nothing is allocated per packet.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use cloudproxy_mmsg::{wait_writable, Headers};
use cloudproxy_proto::{Transport, HEADROOM, TAILROOM};

use crate::metrics::{Direction, LocalTraffic};

/// Largest datagram we accept; anything longer is truncated by the kernel and then fails to
/// parse.
pub(crate) const MAX_DATAGRAM: usize = 65_535;
/// Bytes per slot: headroom, the largest datagram, tailroom, rounded up to a cache line.
pub(crate) const SLOT: usize = (HEADROOM + MAX_DATAGRAM + TAILROOM).div_ceil(64) * 64;
/// Slots per shard.
pub(crate) const SLOTS: usize = 64;
/// Datagrams asked for per `recvmmsg`.
pub(crate) const RECV_BATCH: usize = 32;
/// The fewest headers a `recvmmsg` is offered.
const MIN_RECV: usize = 4;
/// How many times a flush waits for a full socket to drain before dropping the rest.
pub(crate) const FULL_WAITS: u32 = 4;
/// How long each of those waits may take.
pub(crate) const FULL_WAIT_MS: i32 = 1;

/// One queued datagram: `len` bytes at `start` of slot `slot`, to `to` from socket `fd`.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub fd: RawFd,
    pub to: SocketAddr,
    pub slot: u16,
    pub start: u32,
    pub len: u32,
    /// What the traffic metrics count for it once sent.
    pub dir: Direction,
    pub transport: Transport,
    pub counted: u32,
}

/// What one `recvmmsg` slot received.
#[derive(Clone, Copy)]
pub(crate) struct Received {
    pub slot: usize,
    pub len: usize,
    pub from: SocketAddr,
}

pub(crate) struct Batch {
    /// Headers set up for the next `recvmmsg`: twice what the last one got (4 to
    /// [`RECV_BATCH`]), so a lone datagram does not pay for setting up 32 of them.
    want: usize,
    /// Whether the last `recvmmsg` filled every header it offered (more may be waiting).
    filled: bool,
    buf: Box<[u8]>,
    /// Slots `0..used` hold datagrams received (or copied in) since the last flush.
    used: usize,
    out: Vec<Out>,
    rx: Vec<Received>,
    /// One message header per slot (the `recvmmsg`/`sendmmsg` layer shared with the bench).
    headers: Headers,
    /// Datagrams dropped since the last [`Batch::take_dropped`].
    dropped: u64,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self {
            want: MIN_RECV,
            filled: false,
            buf: vec![0u8; SLOT * SLOTS].into_boxed_slice(),
            used: 0,
            out: Vec::with_capacity(SLOTS),
            rx: Vec::with_capacity(RECV_BATCH),
            headers: Headers::new(SLOTS, 0),
            dropped: 0,
        }
    }

    /// Slots not yet holding a datagram.
    pub(crate) fn free(&self) -> usize {
        SLOTS - self.used
    }

    /// Whether nothing is queued and every slot is free.
    pub(crate) fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// All of slot `slot`.
    pub(crate) fn slot_mut(&mut self, slot: usize) -> &mut [u8] {
        &mut self.buf[slot * SLOT..(slot + 1) * SLOT]
    }

    /// The first `len` bytes of slot `slot` from `offset`.
    pub(crate) fn packet(&self, slot: usize, offset: usize, len: usize) -> &[u8] {
        let at = slot * SLOT + offset;
        &self.buf[at..at + len]
    }

    /// What the last [`Batch::recv`] received, in order.
    pub(crate) fn received(&self) -> &[Received] {
        &self.rx
    }

    /// Receives up to twice what the last call got (4 to [`RECV_BATCH`] datagrams; fewer if
    /// fewer slots are free, and the caller flushes first when it wants a full batch; see
    /// [`Batch::filled`]) without blocking, each `offset` bytes into
    /// its slot. Returns how many; `WouldBlock` when none is waiting, so tokio's readiness can
    /// be cleared. Read them with [`Batch::received`].
    pub(crate) fn recv(&mut self, fd: RawFd, offset: usize) -> io::Result<usize> {
        self.rx.clear();
        let n = self.want.min(self.free());
        if n == 0 {
            self.filled = false;
            return Ok(0);
        }
        let first = self.used;
        let base = self.buf.as_mut_ptr();
        for j in 0..n {
            // SAFETY: slot `first + j` < SLOTS lies within `buf`, and `offset` is within it.
            let at = unsafe { base.add((first + j) * SLOT + offset) };
            self.headers
                .set_recv(j, at, MAX_DATAGRAM.min(SLOT - offset - TAILROOM));
        }
        // SAFETY: headers 0..n point into `buf` (set just above), which neither moves nor is
        // borrowed during the call.
        let rc = unsafe { self.headers.recv(fd, n, libc::MSG_DONTWAIT) };
        let got = match rc {
            Ok(got) => got,
            Err(e) => {
                self.filled = false;
                self.want = MIN_RECV;
                return Err(e);
            }
        };
        self.filled = got == n;
        self.want = (got * 2).clamp(MIN_RECV, RECV_BATCH);
        for j in 0..got {
            let Some(from) = self.headers.received_from(j) else {
                continue;
            };
            self.rx.push(Received {
                slot: first + j,
                len: self.headers.received_len(j),
                from,
            });
        }
        self.used += got;
        Ok(got)
    }

    /// Whether the last [`Batch::recv`] got as many datagrams as it asked for: if not, the
    /// socket is drained.
    pub(crate) fn filled(&self) -> bool {
        self.filled
    }

    /// Copies `bytes` into the next free slot and returns it, or `None` when every slot is
    /// taken (flush first).
    pub(crate) fn copy_in(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.used == SLOTS || bytes.len() > SLOT {
            return None;
        }
        let slot = self.used;
        self.slot_mut(slot)[..bytes.len()].copy_from_slice(bytes);
        self.used += 1;
        Some(slot)
    }

    /// Queues a datagram held in a slot.
    pub(crate) fn push(&mut self, out: Out) {
        debug_assert!((out.slot as usize) < self.used);
        debug_assert!(out.start as usize + out.len as usize <= SLOT);
        // At most one datagram per slot, so the queue never outgrows its capacity.
        if self.out.len() < SLOTS {
            self.out.push(out);
        }
    }

    /// Dropped datagrams counted since the last call.
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Sends everything queued, one `sendmmsg` per socket, counting what went into `traffic`,
    /// and frees every slot.
    pub(crate) fn flush(&mut self, traffic: &mut LocalTraffic) {
        if !self.out.is_empty() {
            // Slots are handed out in arrival order and hold one datagram each, so sorting by
            // (socket, slot) groups by socket and keeps each socket's order. Unstable sort:
            // no allocation, and the keys are unique.
            if !self.out.is_sorted_by_key(|o| (o.fd, o.slot)) {
                self.out.sort_unstable_by_key(|o| (o.fd, o.slot));
            }
            let mut a = 0;
            while a < self.out.len() {
                let fd = self.out[a].fd;
                let b = a + self.out[a..].iter().take_while(|o| o.fd == fd).count();
                self.send_group(a, b, traffic);
                a = b;
            }
            self.out.clear();
        }
        self.used = 0;
    }

    /// Sends queued datagrams `a..b`, all from one socket.
    fn send_group(&mut self, a: usize, b: usize, traffic: &mut LocalTraffic) {
        let fd = self.out[a].fd;
        let base = self.buf.as_mut_ptr();
        for (k, o) in self.out[a..b].iter().enumerate() {
            // SAFETY: `push` checked that the range lies within the slot.
            let at = unsafe { base.add(o.slot as usize * SLOT + o.start as usize) };
            self.headers.set_send(k, at, o.len as usize, Some(&o.to));
        }
        let n = b - a;
        let (mut k, mut waits) = (0, 0);
        while k < n {
            // SAFETY: headers k..n point into `buf` (set just above), which neither moves nor
            // is freed during the call.
            let rc = unsafe { self.headers.send(fd, k..n, libc::MSG_DONTWAIT) };
            let e = match rc {
                Ok(sent) if sent > 0 => {
                    for o in &self.out[a + k..a + k + sent] {
                        traffic.record(o.dir, o.transport, o.counted as usize);
                    }
                    k += sent;
                    continue;
                }
                Ok(_) => io::Error::from(io::ErrorKind::WouldBlock),
                Err(e) => e,
            };
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if waits < FULL_WAITS => {
                    waits += 1;
                    wait_writable(fd, FULL_WAIT_MS);
                }
                io::ErrorKind::WouldBlock => {
                    tracing::trace!("send buffer full: dropping {} datagrams", n - k);
                    self.dropped += (n - k) as u64;
                    return;
                }
                _ => {
                    // The error is about datagram k alone; the rest may still go.
                    tracing::trace!("send to {}: {e}", self.out[a + k].to);
                    self.dropped += 1;
                    k += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Datagrams from two sockets are grouped per socket and keep their order.
    #[test]
    fn recv_queue_flush_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let src = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..40u8 {
            src.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        let mut b = Batch::new();
        let mut traffic = LocalTraffic::default();
        let mut got = 0;
        while got < 40 {
            match b.recv(rx.as_raw_fd(), HEADROOM) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
            for r in b.received().to_vec() {
                assert_eq!(r.len, 10);
                assert_eq!(r.from, src.local_addr().unwrap());
                // Alternate the sending socket, so the queue needs grouping.
                let fd = if r.slot % 2 == 0 {
                    sink.as_raw_fd()
                } else {
                    other.as_raw_fd()
                };
                b.push(Out {
                    fd,
                    to: sink.local_addr().unwrap(),
                    slot: r.slot as u16,
                    start: HEADROOM as u32,
                    len: r.len as u32,
                    dir: Direction::PeerToClient,
                    transport: Transport::Udp,
                    counted: r.len as u32,
                });
            }
        }
        b.flush(&mut traffic);
        assert!(b.is_empty());
        let mut from_sink = Vec::new();
        let mut from_other = Vec::new();
        let mut buf = [0u8; 64];
        sink.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        for _ in 0..40 {
            let (n, from) = sink.recv_from(&mut buf).unwrap();
            assert_eq!(n, 10);
            if from == sink.local_addr().unwrap() {
                from_sink.push(buf[0]);
            } else {
                from_other.push(buf[0]);
            }
        }
        let even: Vec<u8> = (0..40).filter(|i| i % 2 == 0).collect();
        let odd: Vec<u8> = (0..40).filter(|i| i % 2 == 1).collect();
        assert_eq!(from_sink, even);
        assert_eq!(from_other, odd);
        assert_eq!(b.take_dropped(), 0);
    }
}
