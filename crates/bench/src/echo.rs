//! The peer every allocation's channel points at: a UDP echo that returns each datagram to its
//! sender (the relayed address), in place.
//!
//! Each thread owns one socket of an `SO_REUSEPORT` group on the same port, so the kernel
//! spreads relayed addresses over the threads. A thread receives up to 64 datagrams with one
//! `recvmmsg` and returns them with one `sendmmsg` from the same buffers: the kernel filled in
//! each sender's address, and the reply header points at it. No copy, no allocation.
//!
//! It answers at once: every microsecond a datagram waits here would count as relay latency.
//! (Pacing the peer to batch more — sleeping after a partial batch — saved under 0.05 core at
//! 35k packets/s here and made the replies bursty enough to cost the relay packets.)

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{self, Batch};

/// How often a blocked echo thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A running echo peer; stops and joins its threads when dropped.
pub struct EchoPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoPeer {
    /// Binds `ip` on a free port with `threads` sockets and starts echoing.
    pub fn start(ip: IpAddr, threads: usize, buffer: usize, slot: usize) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::new(ip, 0), threads, buffer, slot)
    }

    /// Binds `addr` (port 0: any free port) with `threads` sockets and starts echoing.
    pub fn start_on(
        addr: SocketAddr,
        threads: usize,
        buffer: usize,
        slot: usize,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let mut addr = addr;
        let mut sockets = Vec::new();
        for _ in 0..threads.max(1) {
            let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            sock.set_reuse_port(true)?;
            sys::set_buffers(&sock, buffer);
            sock.set_read_timeout(Some(POLL))?;
            sock.bind(&addr.into())?;
            if addr.port() == 0 {
                addr = sock
                    .local_addr()?
                    .as_socket()
                    .ok_or_else(|| std::io::Error::other("echo socket has no IP address"))?;
            }
            sockets.push(sock);
        }
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(i, sock)| {
                let (stop, received) = (stop.clone(), received.clone());
                std::thread::Builder::new()
                    .name(format!("bench-echo-{i}"))
                    .spawn(move || echo(&sock, slot, &stop, &received))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            addr,
            stop,
            received,
            threads,
        })
    }

    /// The peer address every channel is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams that reached the peer so far (relayed client → peer).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn echo(sock: &Socket, slot: usize, stop: &AtomicBool, received: &AtomicU64) {
    sys::tighten_timer_slack();
    let fd = sock.as_raw_fd();
    let mut batch = Batch::new(slot);
    while !stop.load(Ordering::Relaxed) {
        // Blocks for the first datagram (up to POLL), then takes whatever else is queued.
        let n = match batch.recv(fd, libc::MSG_WAITFORONE) {
            Ok(n) => n,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
        let mut done = 0;
        while done < n {
            match batch.echo_back(fd, done..n) {
                Ok(0) | Err(_) => done += 1, // skip the datagram the kernel refused
                Ok(k) => done += k,
            }
        }
    }
}
