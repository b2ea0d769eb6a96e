//! A sending/receiving thread: it owns a share of the allocations and paces, sends, receives
//! and matches their ChannelData in one poll loop.
//!
//! The loop: read the [`Control`] word (step and rate), add tokens for the time since the last
//! round (the bucket holds at most 5 ms worth, so a thread that falls behind sends *less*,
//! visibly, instead of bursting), deal the due packets round-robin over the allocations
//! (several to one UDP socket go out in one `sendmmsg`), then wait until about 150 µs of
//! tokens have accumulated and drain readable sockets with `recvmmsg`. Over UDP the wait is a
//! plain sleep and arrivals are read on the next wake-up (their kernel receive timestamps keep
//! the latency exact); on streams, and when idle, it is `epoll_pwait2`, which also wakes on
//! arrival. Per packet it writes a 24-byte probe header into a pre-built frame; nothing is
//! allocated on this path. Counters the driver watches live in [`Live`], one per thread.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_proto::channel;

use crate::control::{Control, Live, Outcome, MAX_STEPS};
use crate::flow::{on_frame, Flow, Request, Tally};
use crate::link::Link;
use crate::probe::{Probe, SeqWindow};
use crate::report::DataCounters;
use crate::setup::{Allocation, CHANNEL};
use crate::sys::{self, Batch, Epoll, BATCH};

/// The most tokens the bucket holds: a thread that falls further behind (descheduled on a
/// busy machine) drops the excess rather than bursting it.
const BURST: Duration = Duration::from_millis(5);
/// Sleep until about this much sending is due, so batches stay small and smooth.
const PACE: Duration = Duration::from_micros(150);
/// At most this many packets per wake-up of a paced thread.
const PACE_MAX_PACKETS: f64 = 32.0;
/// Longest sleep, so the control word is read often enough.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// At most this many packets per round, so receiving is never starved.
const MAX_ROUND: usize = 1024;
/// Refresh allocation, permission and channel this often (lifetimes are 600/300/600 s).
const REFRESH_EVERY: Duration = Duration::from_secs(120);
const MAINTENANCE: Duration = Duration::from_secs(1);
/// Allocation deletions outstanding at once per thread at the end of a run.
const RELEASE_WINDOW: usize = 64;
/// A deletion unanswered this long is sent again.
const RELEASE_TIMEOUT: Duration = Duration::from_millis(300);

pub struct Worker {
    links: Vec<Link>,
    flows: Vec<Flow>,
    tally: Tally,
    control: Arc<Control>,
    epoll: Epoll,
    send: Batch,
    recv: Batch,
    /// BATCH frames back to back, for segmented sends; `gso` until the kernel refuses one.
    gso_buf: Vec<u8>,
    gso: bool,
    frame: Vec<u8>,
    peer: SocketAddr,
    stream: bool,
    /// No TURN server (a plain forwarder): no refreshes, nothing to release.
    raw: bool,
    cursor: usize,
    ready: Vec<u64>,
    backlog: Vec<usize>,
}

impl Worker {
    /// Takes over `allocations` (made non-blocking and registered with a new epoll).
    pub fn new(
        allocations: Vec<Allocation>,
        size: usize,
        peer: SocketAddr,
        stream: bool,
        raw: bool,
        control: Arc<Control>,
        live: Arc<Live>,
    ) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        let pad = if stream {
            channel::stream_padding(size)
        } else {
            0
        };
        let mut frame = vec![0u8; 4 + size + pad];
        channel::write_header(&mut frame, CHANNEL, size as u16);
        let slot = frame.len().max(2048);
        let mut send = Batch::new(slot);
        for i in 0..BATCH {
            send.slot_mut(i)[..frame.len()].copy_from_slice(&frame);
        }
        let now = Instant::now();
        let (mut links, mut flows) = (Vec::new(), Vec::new());
        for (i, a) in allocations.into_iter().enumerate() {
            a.link.set_nonblocking()?;
            if let Link::Udp(_) = a.link {
                // Best effort: without it, latency is taken when the datagram is read.
                let _ = sys::enable_rx_timestamps(a.link.fd());
            }
            epoll.add(a.link.fd(), i as u64)?;
            links.push(a.link);
            flows.push(Flow {
                index: a.index,
                auth: a.auth,
                seq: 0,
                window: SeqWindow::default(),
                pending: Vec::new(),
                resend: Vec::new(),
                // Spread refreshes over a minute so 10,000 allocations do not refresh at once.
                next_refresh: now + REFRESH_EVERY + Duration::from_millis(a.index as u64 % 60_000),
                alive: true,
                in_backlog: false,
            });
        }
        Ok(Self {
            links,
            flows,
            tally: Tally {
                live,
                latency: Vec::new(),
                counters: DataCounters::default(),
            },
            control,
            epoll,
            send,
            recv: Batch::new(slot),
            gso_buf: frame.repeat(BATCH),
            gso: !stream,
            frame,
            peer,
            stream,
            raw,
            cursor: 0,
            ready: Vec::with_capacity(256),
            backlog: Vec::new(),
        })
    }

    /// Runs until the control says stop, then releases the allocations.
    pub fn run(mut self) -> Outcome {
        sys::tighten_timer_slack();
        let mut current = (u16::MAX, -1.0);
        let mut tokens = 0.0f64;
        let mut last = Instant::now();
        let mut next_maintenance = last + MAINTENANCE;
        while !self.control.stopped() {
            let now = Instant::now();
            let (step, rate) = self.control.load();
            if (step, rate) != current {
                current = (step, rate);
                tokens = 0.0;
                last = now;
            }
            let total = rate * self.flows.len() as f64;
            let mut wait = IDLE_WAIT;
            if total > 0.0 && (step as usize) < MAX_STEPS {
                tokens += total * now.duration_since(last).as_secs_f64();
                last = now;
                tokens = tokens.min((total * BURST.as_secs_f64()).max(8.0));
                let due = (tokens as usize).min(MAX_ROUND);
                if due > 0 {
                    tokens -= due as f64;
                    self.send_round(due, step);
                }
                let want = (total * PACE.as_secs_f64()).clamp(1.0, PACE_MAX_PACKETS);
                wait = Duration::from_secs_f64((want - tokens).max(0.0) / total).min(IDLE_WAIT);
                if !self.stream {
                    // UDP while sending: wake only to send, and read whatever arrived then.
                    // The kernel stamped each datagram on arrival, so waiting to read it does
                    // not change its latency, and one wake-up per batch replaces one per
                    // packet.
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    wait = Duration::ZERO;
                }
            }
            if !self.backlog.is_empty() {
                self.flush_backlog();
            }
            if now >= next_maintenance && !self.raw {
                self.maintain(now);
                next_maintenance = now + MAINTENANCE;
            }
            self.poll(wait);
        }
        self.shutdown()
    }

    /// Deals `due` packets round-robin over the allocations.
    fn send_round(&mut self, due: usize, step: u16) {
        let n = self.flows.len();
        let (per, extra) = (due / n, due % n);
        for j in 0..n {
            let k = per + usize::from(j < extra);
            if k == 0 {
                break;
            }
            self.send_flow((self.cursor + j) % n, k, step);
        }
        self.cursor = (self.cursor + extra) % n;
    }

    fn send_flow(&mut self, i: usize, k: usize, step: u16) {
        let s = step as usize;
        let live = &self.tally.live;
        let flow = &mut self.flows[i];
        if !flow.alive {
            live.unsent[s].fetch_add(k as u64, Ordering::Relaxed);
            return;
        }
        let link = &mut self.links[i];
        let mut probe = Probe {
            step,
            allocation: flow.index,
            seq: flow.seq,
            sent_ns: sys::now_ns(),
        };
        let Some(tx) = link.tx() else {
            // UDP: up to BATCH datagrams per system call, as one segmented send (GSO) when the
            // kernel takes it, else with sendmmsg.
            let frame_len = self.frame.len();
            let gso_max = (BATCH).min(65_000 / frame_len);
            let mut left = k;
            while left > 0 {
                let c = left.min(if self.gso { gso_max } else { BATCH });
                let sent = if self.gso && c >= 2 {
                    for b in 0..c {
                        probe.seq = flow.seq + b as u64;
                        probe.write(&mut self.gso_buf[b * frame_len + 4..]);
                    }
                    let run = &self.gso_buf[..c * frame_len];
                    match sys::send_segmented(link.fd(), run, frame_len as u16) {
                        Ok(bytes) => bytes / frame_len,
                        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                            self.tally.counters.send_errors += 1;
                            0
                        }
                        Err(_) => {
                            // No UDP GSO here (or not for this socket): sendmmsg from now on.
                            self.gso = false;
                            continue;
                        }
                    }
                } else {
                    for b in 0..c {
                        probe.seq = flow.seq + b as u64;
                        probe.write(&mut self.send.slot_mut(b)[4..]);
                    }
                    match self.send.send(link.fd(), c, false, |_| frame_len) {
                        Ok(m) => m,
                        Err(_) => {
                            self.tally.counters.send_errors += 1;
                            0
                        }
                    }
                };
                flow.seq += sent as u64;
                live.sent[s].fetch_add(sent as u64, Ordering::Relaxed);
                left -= c;
                if sent < c {
                    live.unsent[s].fetch_add((c - sent + left) as u64, Ordering::Relaxed);
                    return;
                }
            }
            return;
        };
        // TCP/TLS: frames appended to the connection's buffer, written once.
        if !tx.is_empty() || link.backlogged() {
            if link.flush().is_err() {
                flow.alive = false;
                self.tally.counters.closed += 1;
            }
            if link.backlogged() || !flow.alive {
                live.unsent[s].fetch_add(k as u64, Ordering::Relaxed);
                return;
            }
        }
        let tx = link.tx().expect("a stream link");
        for b in 0..k {
            let start = tx.len();
            tx.extend_from_slice(&self.frame);
            probe.seq = flow.seq + b as u64;
            probe.write(&mut tx[start + 4..]);
        }
        flow.seq += k as u64;
        live.sent[s].fetch_add(k as u64, Ordering::Relaxed);
        if link.flush().is_err() {
            flow.alive = false;
            self.tally.counters.closed += 1;
        } else if link.backlogged() && !flow.in_backlog {
            flow.in_backlog = true;
            self.backlog.push(i);
        }
    }

    fn flush_backlog(&mut self) {
        let (links, flows, counters) = (&mut self.links, &mut self.flows, &mut self.tally.counters);
        self.backlog.retain(|&i| {
            if links[i].flush().is_err() && flows[i].alive {
                flows[i].alive = false;
                counters.closed += 1;
            }
            let keep = flows[i].alive && links[i].backlogged();
            flows[i].in_backlog = keep;
            keep
        });
    }

    fn poll(&mut self, wait: Duration) {
        let ready = &mut self.ready;
        if self.epoll.wait(wait, |t| ready.push(t)).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let tokens = std::mem::take(&mut self.ready);
        for &t in &tokens {
            self.receive(t as usize);
        }
        self.ready = tokens;
        self.ready.clear();
    }

    /// Drains one readable connection.
    fn receive(&mut self, i: usize) {
        let (flow, tally) = (&mut self.flows[i], &mut self.tally);
        match &mut self.links[i] {
            Link::Udp(sock) => {
                use std::os::fd::AsRawFd;
                let fd = sock.as_raw_fd();
                loop {
                    let n = match self.recv.recv(fd, libc::MSG_DONTWAIT) {
                        Ok(n) => n,
                        // An ICMP error (e.g. port unreachable) is reported once; go on.
                        Err(_) => {
                            tally.counters.receive_errors += 1;
                            break;
                        }
                    };
                    let now_ns = sys::now_ns();
                    for j in 0..n {
                        let at = self.recv.rx_time_ns(j).unwrap_or(now_ns);
                        on_frame(flow, tally, self.recv.packet(j), at);
                    }
                    if n < BATCH {
                        break;
                    }
                }
            }
            link => {
                let now_ns = sys::now_ns();
                match link.read_frames(|f| on_frame(flow, tally, f, now_ns)) {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        if flow.alive {
                            flow.alive = false;
                            tally.counters.closed += 1;
                        }
                        // Stop watching it: a closed socket stays readable forever.
                        let _ = self.epoll.remove(link.fd());
                    }
                }
            }
        }
        let resend = std::mem::take(&mut self.flows[i].resend);
        for (what, retried) in resend {
            self.request(i, what, retried);
        }
    }

    /// Starts a refresh cycle on every allocation whose time has come.
    fn maintain(&mut self, now: Instant) {
        for i in 0..self.flows.len() {
            let flow = &mut self.flows[i];
            if !flow.alive || now < flow.next_refresh {
                continue;
            }
            flow.next_refresh = now + REFRESH_EVERY;
            // An unanswered request from the last cycle counts as a failure.
            self.tally.counters.refresh_failed += flow.pending.len() as u64;
            flow.pending.clear();
            self.request(i, Request::Bind, false);
            self.request(i, Request::Refresh(600), false);
        }
    }

    /// Sends a refresh-type request on allocation `i` and remembers it.
    fn request(&mut self, i: usize, what: Request, retried: bool) {
        let msg = self.flows[i].request(what, retried, self.peer);
        if self.links[i].send_control(&msg).is_err() {
            self.tally.counters.refresh_failed += 1;
        }
    }

    /// Deletes UDP allocations (Refresh with lifetime 0, RFC 8656 §7.3) so the server does
    /// not hold them for minutes, and hands back the tallies. At most [`RELEASE_WINDOW`]
    /// deletions are outstanding at once (10,000 at once would overflow the server's socket
    /// buffer), and an unanswered one is sent again up to twice; the whole release is bounded.
    fn shutdown(mut self) -> Outcome {
        if !self.stream && !self.raw {
            let mut queue: Vec<usize> = (0..self.flows.len())
                .filter(|&i| self.flows[i].alive)
                .rev()
                .collect();
            let n = queue.len() as u64;
            let deadline = Instant::now() + Duration::from_millis(2000 + n / 2);
            // (flow, sent at, attempts)
            let mut inflight: Vec<(usize, Instant, u8)> = Vec::new();
            while (!queue.is_empty() || !inflight.is_empty()) && Instant::now() < deadline {
                while inflight.len() < RELEASE_WINDOW {
                    let Some(i) = queue.pop() else { break };
                    self.flows[i].pending.clear();
                    self.request(i, Request::Refresh(0), false);
                    inflight.push((i, Instant::now(), 1));
                }
                self.poll(Duration::from_millis(5));
                let now = Instant::now();
                let mut retry = Vec::new();
                inflight.retain(|&(i, at, tries)| {
                    if self.flows[i].pending.is_empty() {
                        return false;
                    }
                    if now.duration_since(at) < RELEASE_TIMEOUT {
                        return true;
                    }
                    if tries < 3 {
                        retry.push((i, tries + 1));
                    } else {
                        self.tally.counters.release_failed += 1;
                    }
                    false
                });
                for (i, tries) in retry {
                    self.flows[i].pending.clear();
                    self.request(i, Request::Refresh(0), false);
                    inflight.push((i, now, tries));
                }
            }
            self.tally.counters.release_failed += (queue.len() + inflight.len()) as u64;
        }
        Outcome {
            latency: self.tally.latency,
            counters: self.tally.counters,
        }
    }
}
