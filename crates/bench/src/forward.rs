//! The throughput ceiling: a batched UDP forwarder with no TURN logic at all.
//!
//! It has the relay's shape and system calls and nothing else: one thread per core, each with
//! an `SO_REUSEPORT` listener and an epoll loop; every client address (flow) gets its own
//! socket toward the one peer address, as an allocation gets its relayed address. Datagrams
//! are received 64 at a time with `recvmmsg` and forwarded unchanged with one `sendmmsg` per
//! socket — the ChannelData header included, so the echo peer returns the very frame the
//! generator sent and the generator reads it back as ChannelData. No parsing, no permission
//! or channel lookup, no metrics: what a TURN relay built on the same calls could reach.
//!
//! The generator drives it with `raw` set ([`crate::Config::raw`]): no set-up, one connected
//! UDP socket per "allocation", and the echo peer on the fixed port the forwarder sends to.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{self, Batch, Epoll, BATCH};

/// Slot size: the generator's largest frame fits.
const SLOT: usize = 4 + crate::MAX_SIZE + 4;
const LISTENER: u64 = u64::MAX;

/// A running forwarder; [`Forwarder::stop`] (or drop) stops its threads.
pub struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// Binds `listen` once per thread (`SO_REUSEPORT`; port 0 picks one) and forwards every
    /// flow to `peer` and back.
    pub fn start(
        listen: SocketAddr,
        peer: SocketAddr,
        threads: usize,
        buffer: usize,
    ) -> io::Result<Self> {
        sys::raise_fd_limit();
        let stop = Arc::new(AtomicBool::new(false));
        let mut addr = listen;
        let mut sockets = Vec::new();
        for _ in 0..threads.max(1) {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_port(true)?;
            s.set_nonblocking(true)?;
            sys::set_buffers(&s, buffer);
            s.bind(&addr.into())?;
            if addr.port() == 0 {
                addr = s
                    .local_addr()?
                    .as_socket()
                    .ok_or_else(|| io::Error::other("listener has no IP address"))?;
            }
            sockets.push(UdpSocket::from(s));
        }
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("forward-{i}"))
                    .spawn(move || {
                        if let Err(e) = Loop::new(listener, peer, buffer).and_then(|l| l.run(&stop))
                        {
                            eprintln!("forwarder thread {i}: {e}");
                        }
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            addr,
            stop,
            threads,
        })
    }

    /// The listener address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops and joins the threads.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

struct Flow {
    sock: UdpSocket,
    client: SocketAddr,
}

/// One thread's state.
struct Loop {
    listener: UdpSocket,
    peer: SocketAddr,
    buffer: usize,
    epoll: Epoll,
    flows: Vec<Flow>,
    by_client: HashMap<SocketAddr, usize>,
    rx: Batch,
    ready: Vec<u64>,
    /// (flow, slot) of the datagrams of one listener batch, grouped by flow before sending.
    order: Vec<(usize, usize)>,
}

impl Loop {
    fn new(listener: UdpSocket, peer: SocketAddr, buffer: usize) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.add(listener.as_raw_fd(), LISTENER)?;
        Ok(Self {
            listener,
            peer,
            buffer,
            epoll,
            flows: Vec::new(),
            by_client: HashMap::new(),
            rx: Batch::new(SLOT),
            ready: Vec::with_capacity(256),
            order: Vec::with_capacity(BATCH),
        })
    }

    fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            self.epoll
                .wait(Duration::from_millis(100), |t| ready.push(t))?;
            for &token in &ready {
                if token == LISTENER {
                    self.on_clients()?;
                } else {
                    self.on_peer(token as usize);
                }
            }
            self.ready = ready;
        }
        Ok(())
    }

    /// Client datagrams: to the peer from each client's own socket.
    fn on_clients(&mut self) -> io::Result<()> {
        let fd = self.listener.as_raw_fd();
        loop {
            let n = self.rx.recv(fd, 0)?;
            self.order.clear();
            for i in 0..n {
                let Some(client) = self.rx.addr(i) else {
                    continue;
                };
                let flow = match self.by_client.get(&client) {
                    Some(&f) => f,
                    None => self.new_flow(client)?,
                };
                self.order.push((flow, i));
            }
            self.order.sort_unstable();
            let mut a = 0;
            while a < self.order.len() {
                let flow = self.order[a].0;
                let b = a + self.order[a..]
                    .iter()
                    .take_while(|(f, _)| *f == flow)
                    .count();
                let fd = self.flows[flow].sock.as_raw_fd();
                let slots = &self.order[a..b];
                send_all(
                    fd,
                    b - a,
                    |k, rx| rx.send_slots(fd, slots.iter().skip(k).map(|&(_, i)| i), None),
                    &mut self.rx,
                );
                a = b;
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }

    /// Peer datagrams on flow `f`'s socket: back to its client from the listener.
    fn on_peer(&mut self, f: usize) {
        let Some(flow) = self.flows.get(f) else {
            return;
        };
        let (fd, client) = (flow.sock.as_raw_fd(), flow.client);
        let listener = self.listener.as_raw_fd();
        loop {
            let n = match self.rx.recv(fd, 0) {
                Ok(n) => n,
                Err(_) => return,
            };
            send_all(
                listener,
                n,
                |k, rx| rx.send_slots(listener, k..n, Some(client)),
                &mut self.rx,
            );
            if n < BATCH {
                return;
            }
        }
    }

    fn new_flow(&mut self, client: SocketAddr) -> io::Result<usize> {
        let s = Socket::new(
            Domain::for_address(self.peer),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        s.set_nonblocking(true)?;
        sys::set_buffers(&s, self.buffer.min(1 << 20));
        s.bind(&SocketAddr::new(self.listener.local_addr()?.ip(), 0).into())?;
        s.connect(&self.peer.into())?;
        let f = self.flows.len();
        self.epoll.add(s.as_raw_fd(), f as u64)?;
        self.flows.push(Flow {
            sock: s.into(),
            client,
        });
        self.by_client.insert(client, f);
        Ok(f)
    }
}

/// Sends `n` datagrams with `send(k, batch)` (which sends from the `k`th on and returns how
/// many went), waiting for the socket when it is full and skipping a datagram it refuses.
fn send_all(
    fd: RawFd,
    n: usize,
    mut send: impl FnMut(usize, &mut Batch) -> io::Result<usize>,
    rx: &mut Batch,
) {
    let mut k = 0;
    let mut waits = 0;
    while k < n {
        match send(k, rx) {
            Ok(0) if waits < 4 => {
                waits += 1;
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one pollfd that outlives the call.
                unsafe { libc::poll(&mut p, 1, 1) };
            }
            Ok(0) => return,
            Ok(sent) => k += sent,
            Err(_) => k += 1,
        }
    }
}
