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
//!
//! With churn ([`crate::churn`]) a new allocation may arrive for a slot between rounds; the one
//! it replaces moves to the *leaving* list: nothing more is sent on it, echoes still in flight
//! are received and counted for [`LEAVE_DRAIN`], then it is deleted like at the end of a run.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_proto::channel;

use crate::churn::Arrival;
use crate::control::{Control, Live, Outcome, MAX_STEPS};
use crate::data_conn::DataConn;
use crate::flow::{on_frame, Flow, Request, Tally};
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
/// Deletions sent per allocation at most (the first and its retries): 2.4 s of patience, so a
/// server stalled by a busy machine still gets to answer.
const RELEASE_TRIES: u8 = 8;
/// How long a leaving allocation keeps receiving before it is deleted: the echoes of its last
/// packets are still on their way (the same wait as the end of a step over UDP).
pub const LEAVE_DRAIN: Duration = Duration::from_millis(500);
/// Epoll tokens at or above this are leaving allocations (`LEAVING + k`); below, active slots.
const LEAVING: u64 = 1 << 40;

/// An allocation on its way out ([`crate::churn`]).
struct Leaving {
    conn: DataConn,
    flow: Flow,
    /// When its deletion is (first) sent.
    delete_at: Instant,
    /// Deletions sent so far, and when the last one went.
    tries: u8,
    sent_at: Instant,
}

/// One sending/receiving thread's state: its allocations, their flows and counters, and the
/// batches and epoll instance of its poll loop (see the module docs).
pub struct Worker {
    conns: Vec<DataConn>,
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
    /// New allocations from the churn thread.
    arrivals: Option<Receiver<Arrival>>,
    /// Replaced allocations being drained and deleted; `None` entries are free.
    leaving: Vec<Option<Leaving>>,
}

/// The per-allocation state a worker keeps next to the connection.
fn flow_of(a: &mut Allocation, now: Instant) -> Flow {
    Flow {
        index: a.index,
        auth: a.auth.take(),
        seq: 0,
        window: SeqWindow::default(),
        pending: Vec::new(),
        resend: Vec::new(),
        // Spread refreshes over a minute so 10,000 allocations do not refresh at once.
        next_refresh: now + REFRESH_EVERY + Duration::from_millis(a.index as u64 % 60_000),
        alive: true,
        in_backlog: false,
    }
}

/// Makes a set-up allocation's connection ready for the poll loop.
fn prepare(conn: &DataConn) -> std::io::Result<()> {
    conn.set_nonblocking()?;
    if let DataConn::Udp(_) = conn {
        // Best effort: without it, latency is taken when the datagram is read.
        let _ = sys::enable_rx_timestamps(conn.fd());
    }
    Ok(())
}

/// Sends a refresh-type request on one allocation and remembers it.
fn send_request(
    conn: &mut DataConn,
    flow: &mut Flow,
    what: Request,
    retried: bool,
    peer: SocketAddr,
    counters: &mut DataCounters,
) {
    let msg = flow.request(what, retried, peer);
    if conn.send_control(&msg).is_err() {
        if what == Request::Refresh(0) {
            counters.release_failed += 1;
        } else {
            counters.refresh_failed += 1;
        }
    }
}

impl Worker {
    /// Takes over `allocations` (made non-blocking and registered with a new epoll), and
    /// the replacements that come on `arrivals`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        allocations: Vec<Allocation>,
        size: usize,
        peer: SocketAddr,
        stream: bool,
        raw: bool,
        control: Arc<Control>,
        live: Arc<Live>,
        arrivals: Option<Receiver<Arrival>>,
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
        let (mut conns, mut flows) = (Vec::new(), Vec::new());
        for (i, mut a) in allocations.into_iter().enumerate() {
            prepare(&a.conn)?;
            epoll.add(a.conn.fd(), i as u64)?;
            flows.push(flow_of(&mut a, now));
            conns.push(a.conn);
        }
        Ok(Self {
            conns,
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
            arrivals,
            leaving: Vec::new(),
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
            self.take_arrivals(now);
            if !self.leaving.is_empty() {
                self.tend_leaving(now, false);
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
        let conn = &mut self.conns[i];
        let mut probe = Probe {
            step,
            allocation: flow.index,
            seq: flow.seq,
            sent_ns: sys::now_ns(),
        };
        let Some(tx) = conn.tx() else {
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
                    match sys::send_segmented(conn.fd(), run, frame_len as u16) {
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
                    match self.send.send(conn.fd(), c, |_| frame_len) {
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
        if !tx.is_empty() || conn.backlogged() {
            if conn.flush().is_err() {
                flow.alive = false;
                self.tally.counters.closed += 1;
            }
            if conn.backlogged() || !flow.alive {
                live.unsent[s].fetch_add(k as u64, Ordering::Relaxed);
                return;
            }
        }
        let tx = conn.tx().expect("a stream conn");
        for b in 0..k {
            let start = tx.len();
            tx.extend_from_slice(&self.frame);
            probe.seq = flow.seq + b as u64;
            probe.write(&mut tx[start + 4..]);
        }
        flow.seq += k as u64;
        live.sent[s].fetch_add(k as u64, Ordering::Relaxed);
        if conn.flush().is_err() {
            flow.alive = false;
            self.tally.counters.closed += 1;
        } else if conn.backlogged() && !flow.in_backlog {
            flow.in_backlog = true;
            self.backlog.push(i);
        }
    }

    fn flush_backlog(&mut self) {
        let (conns, flows, counters) = (&mut self.conns, &mut self.flows, &mut self.tally.counters);
        self.backlog.retain(|&i| {
            if conns[i].flush().is_err() && flows[i].alive {
                flows[i].alive = false;
                counters.closed += 1;
            }
            let keep = flows[i].alive && conns[i].backlogged();
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
            self.receive(t);
        }
        self.ready = tokens;
        self.ready.clear();
    }

    /// Drains one readable connection: an active slot or a leaving allocation.
    fn receive(&mut self, token: u64) {
        let (conn, flow) = if token >= LEAVING {
            let k = (token - LEAVING) as usize;
            match self.leaving.get_mut(k).and_then(Option::as_mut) {
                Some(l) => (&mut l.conn, &mut l.flow),
                None => return,
            }
        } else {
            let i = token as usize;
            (&mut self.conns[i], &mut self.flows[i])
        };
        let tally = &mut self.tally;
        match &mut *conn {
            DataConn::Udp(sock) => {
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
            stream => {
                let now_ns = sys::now_ns();
                match stream.read_frames(|f| on_frame(flow, tally, f, now_ns)) {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        if flow.alive {
                            flow.alive = false;
                            tally.counters.closed += 1;
                        }
                        // Stop watching it: a closed socket stays readable forever.
                        let _ = self.epoll.remove(stream.fd());
                    }
                }
            }
        }
        let resend = std::mem::take(&mut flow.resend);
        for (what, retried) in resend {
            send_request(conn, flow, what, retried, self.peer, &mut tally.counters);
        }
    }

    /// Puts each allocation the churn thread sent into its slot; the one there leaves.
    fn take_arrivals(&mut self, now: Instant) {
        let Some(arrivals) = &self.arrivals else {
            return;
        };
        while let Ok((slot, mut a)) = arrivals.try_recv() {
            if slot >= self.conns.len() || prepare(&a.conn).is_err() {
                // Dropped unused: the server keeps it until its lifetime runs out.
                self.tally.counters.release_failed += 1;
                continue;
            }
            let mut flow = flow_of(&mut a, now);
            let _ = self.epoll.remove(self.conns[slot].fd());
            if self.epoll.add(a.conn.fd(), slot as u64).is_err() {
                flow.alive = false;
            }
            let conn = std::mem::replace(&mut self.conns[slot], a.conn);
            let flow = std::mem::replace(&mut self.flows[slot], flow);
            self.flows[slot].in_backlog = false;
            self.tally.counters.left += 1;
            let k = match self.leaving.iter().position(Option::is_none) {
                Some(k) => k,
                None => {
                    self.leaving.push(None);
                    self.leaving.len() - 1
                }
            };
            if flow.alive {
                let _ = self.epoll.add(conn.fd(), LEAVING + k as u64);
            }
            self.leaving[k] = Some(Leaving {
                conn,
                flow,
                delete_at: now + LEAVE_DRAIN,
                tries: 0,
                sent_at: now,
            });
        }
    }

    /// Moves each leaving allocation on: after its drain, delete it (Refresh LIFETIME 0,
    /// resent when unanswered; on a stream, closing the connection is the deletion), and drop
    /// it once the server answered. With `run_over`, nothing waits for echoes any more.
    fn tend_leaving(&mut self, now: Instant, run_over: bool) {
        for k in 0..self.leaving.len() {
            let Some(l) = &mut self.leaving[k] else {
                continue;
            };
            let done = if now < l.delete_at && !run_over {
                false
            } else if self.stream || self.raw || !l.flow.alive {
                true
            } else if l.tries > 0 && l.flow.pending.is_empty() {
                // Answered: `on_frame` counted it released (or refused).
                true
            } else if l.tries == 0 || now.duration_since(l.sent_at) >= RELEASE_TIMEOUT {
                if l.tries >= RELEASE_TRIES {
                    self.tally.counters.release_failed += 1;
                    true
                } else {
                    l.flow.pending.clear();
                    let c = &mut self.tally.counters;
                    send_request(
                        &mut l.conn,
                        &mut l.flow,
                        Request::Refresh(0),
                        false,
                        self.peer,
                        c,
                    );
                    l.tries += 1;
                    l.sent_at = now;
                    false
                }
            } else {
                false
            };
            if done {
                let _ = self.epoll.remove(l.conn.fd());
                self.leaving[k] = None;
            }
        }
        if self.leaving.iter().all(Option::is_none) {
            self.leaving.clear();
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
        let c = &mut self.tally.counters;
        send_request(
            &mut self.conns[i],
            &mut self.flows[i],
            what,
            retried,
            self.peer,
            c,
        );
    }

    /// Deletes UDP allocations (Refresh with lifetime 0, RFC 8656 §7.3) so the server does
    /// not hold them for minutes, and hands back the tallies. At most [`RELEASE_WINDOW`]
    /// deletions are outstanding at once (10,000 at once would overflow the server's socket
    /// buffer), and an unanswered one is sent again, [`RELEASE_TRIES`] times in all; the whole
    /// release is bounded.
    fn shutdown(mut self) -> Outcome {
        // The churn thread has finished before the stop (see the driver): what it sent is
        // here, and its allocations are deleted like the others.
        self.take_arrivals(Instant::now());
        if !self.stream && !self.raw {
            let mut queue: Vec<usize> = (0..self.flows.len())
                .filter(|&i| self.flows[i].alive)
                .rev()
                .collect();
            let n = (queue.len() + self.leaving.len()) as u64;
            let patience = RELEASE_TIMEOUT * RELEASE_TRIES as u32;
            let deadline = Instant::now() + patience + Duration::from_millis(500 + n / 2);
            // (flow, sent at, attempts)
            let mut inflight: Vec<(usize, Instant, u8)> = Vec::new();
            while (!queue.is_empty() || !inflight.is_empty() || !self.leaving.is_empty())
                && Instant::now() < deadline
            {
                while inflight.len() < RELEASE_WINDOW {
                    let Some(i) = queue.pop() else { break };
                    self.flows[i].pending.clear();
                    self.request(i, Request::Refresh(0), false);
                    inflight.push((i, Instant::now(), 1));
                }
                self.poll(Duration::from_millis(5));
                let now = Instant::now();
                self.tend_leaving(now, true);
                let mut retry = Vec::new();
                inflight.retain(|&(i, at, tries)| {
                    if self.flows[i].pending.is_empty() {
                        return false;
                    }
                    if now.duration_since(at) < RELEASE_TIMEOUT {
                        return true;
                    }
                    if tries < RELEASE_TRIES {
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
            let leaving = self.leaving.iter().flatten().count();
            self.tally.counters.release_failed += (queue.len() + inflight.len() + leaving) as u64;
        } else {
            // Closing a stream ends its allocation; nothing to wait for.
            self.tend_leaving(Instant::now(), true);
        }
        Outcome {
            latency: self.tally.latency,
            counters: self.tally.counters,
        }
    }
}
