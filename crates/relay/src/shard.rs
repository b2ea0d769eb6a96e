//! One event loop: a thread, a single-threaded tokio runtime, and the sans-IO server it drives.
//!
//! All tasks of a shard run on its one thread and share its state through `Rc<RefCell<_>>`:
//! no lock, no channel hop between a socket and the server. A `RefCell` borrow is never held
//! across an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudproxy_proto::server::AuthFailure;
use cloudproxy_proto::{
    ClientAddr, Command, Event, Forward, Server, ServerConfig, Shared, Transport,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::batch::Batch;
use crate::link::ToLink;
use crate::metrics::{Direction, LocalTraffic, Metrics};
use crate::stream::{ConnectionLimit, StreamSink};
use crate::{udp, Control};

pub(crate) struct ShardSetup {
    pub index: usize,
    pub server: ServerConfig,
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<(TcpListener, Transport)>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub api: Option<Arc<crate::stream::ApiRoute>>,
    pub shared: Shared,
    pub metrics: Arc<Metrics>,
    pub streams: Arc<ConnectionLimit>,
    pub stream_deadlines: crate::stream::Deadlines,
    pub socket_buffer: Option<usize>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub link: Option<crate::link::ShardLink>,
}

/// A relayed transport address and the task reading it.
struct RelaySocket {
    socket: Rc<udp::Socket>,
    task: JoinHandle<()>,
}

pub(crate) struct Shard {
    pub server: Server,
    pub metrics: Arc<Metrics>,
    /// Packet and byte counts not yet published to `metrics`.
    pub traffic: LocalTraffic,
    /// The slots every UDP task of this shard receives into, and the queue of datagrams to
    /// send from them (see `batch.rs`).
    pub batch: Batch,
    /// Wakes the flush task, which sends the queue once the tasks ready now have run.
    flush_wake: Rc<Notify>,
    flush_pending: bool,
    /// UDP listeners, to answer a client from the address it reached.
    listeners: Vec<(SocketAddr, Rc<udp::Socket>)>,
    /// Keyed by our own relayed addresses (locally minted), so a cheap hash does.
    relays: HashMap<SocketAddr, RelaySocket, foldhash::fast::RandomState>,
    /// Outgoing queues of TCP/TLS clients.
    pub streams: HashMap<ClientAddr, StreamSink>,
    socket_buffer: Option<usize>,
    /// Wakes the timer task when the next deadline moved earlier than `armed`.
    timer: Rc<Notify>,
    /// The deadline the timer task sleeps until (`None`: it waits for a wake-up).
    armed: Option<Instant>,
    index: usize,
    /// To the control-plane link (admissions, usage), when there is one.
    link: Option<mpsc::UnboundedSender<ToLink>>,
}

pub(crate) type SharedShard = Rc<RefCell<Shard>>;

impl ShardSetup {
    pub(crate) fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(shard = self.index, "cannot start runtime: {e}");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, self.main());
    }

    async fn main(mut self) {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut server = Server::new(self.server, self.shared, now, unix, &mut rand::rng());
        if let Some(link) = &self.link {
            let d = link.directory.borrow().clone();
            server.set_app_keys(&d.keys);
            server.set_access(d.access.clone());
        }
        let mut listeners = Vec::new();
        for s in self.udp {
            match s.local_addr().and_then(|a| Ok((a, udp::register(s)?))) {
                Ok((a, s)) => listeners.push((a, Rc::new(s))),
                Err(e) => tracing::error!("UDP listener: {e}"),
            }
        }
        let shard = Rc::new(RefCell::new(Shard {
            server,
            metrics: self.metrics,
            traffic: LocalTraffic::default(),
            batch: Batch::new(),
            flush_wake: Rc::new(Notify::new()),
            flush_pending: false,
            listeners: listeners.clone(),
            relays: HashMap::default(),
            streams: HashMap::new(),
            socket_buffer: self.socket_buffer,
            timer: Rc::new(Notify::new()),
            armed: None,
            index: self.index,
            link: self.link.as_ref().map(|l| l.tx.clone()),
        }));
        // Kept to re-apply the control plane's app keys after a reload.
        let directory = self.link.as_ref().map(|l| l.directory.clone());
        if let Some(link) = self.link.take() {
            spawn_link_tasks(&shard, link);
        }
        for (local, l) in listeners {
            tokio::task::spawn_local(udp::listen(shard.clone(), l, local));
        }
        for (l, transport) in self.tcp {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let tls = match transport {
                        Transport::Tls => self.tls.clone(),
                        _ => None,
                    };
                    tokio::task::spawn_local(crate::stream::accept(
                        shard.clone(),
                        l,
                        transport,
                        tls,
                        self.api.clone(),
                        self.streams.clone(),
                        self.stream_deadlines,
                    ));
                }
                Err(e) => tracing::error!("TCP listener: {e}"),
            }
        }
        tokio::task::spawn_local(timers(shard.clone()));
        tokio::task::spawn_local(flusher(shard.clone()));
        tokio::task::spawn_local(publish_traffic(shard.clone()));
        tokio::task::spawn_local(watch_lag(shard.borrow().metrics.clone(), self.index));
        while let Some(c) = self.control.recv().await {
            match c {
                Control::Drain => shard.borrow_mut().server.set_draining(true),
                Control::Reload(r) => {
                    let mut sh = shard.borrow_mut();
                    let revoked = sh.server.reconfigure(
                        &r.auth,
                        r.peer_policy.clone(),
                        r.max_allocations,
                        r.max_allocations_per_user,
                        Instant::now(),
                    );
                    // Under a control plane its keys are the app keys, not the file's.
                    if let Some(d) = &directory {
                        sh.server.set_app_keys(&d.borrow().keys);
                    }
                    if revoked > 0 {
                        tracing::info!(
                            shard = self.index,
                            revoked,
                            "reload: permissions and channels toward peers now denied ended"
                        );
                    }
                    sh.flush(&shard);
                }
                Control::Stop => break,
            }
        }
        tracing::debug!(shard = self.index, "event loop stopped");
    }
}

/// The shard's side of the control-plane link: verdicts, directory changes, usage drains.
fn spawn_link_tasks(shard: &SharedShard, link: crate::link::ShardLink) {
    let crate::link::ShardLink {
        tx,
        mut verdicts,
        mut directory,
    } = link;
    let s = shard.clone();
    let unused = tx.clone();
    tokio::task::spawn_local(async move {
        while let Some(msg) = verdicts.recv().await {
            let mut sh = s.borrow_mut();
            match msg {
                crate::link::FromLink::Verdict(allocation, verdict) => {
                    let granted = match &verdict {
                        cloudproxy_proto::admission::Verdict::Granted { account } => Some(*account),
                        _ => None,
                    };
                    let taken = sh
                        .server
                        .handle_admission(allocation, verdict, Instant::now());
                    if let (false, Some(account)) = (taken, granted) {
                        let _ = unused.send(ToLink::Unused { account });
                    }
                }
                crate::link::FromLink::Signal(request, status, body) => {
                    sh.server.handle_signal_response(request, status, &body);
                }
            }
            sh.flush(&s);
        }
    });
    let s = shard.clone();
    tokio::task::spawn_local(async move {
        while directory.changed().await.is_ok() {
            let d = directory.borrow_and_update().clone();
            let mut sh = s.borrow_mut();
            sh.server.set_app_keys(&d.keys);
            sh.server.set_access(d.access.clone());
            sh.flush(&s);
        }
    });
    let s = shard.clone();
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(USAGE_DRAIN);
        loop {
            tick.tick().await;
            let mut sh = s.borrow_mut();
            sh.server.drain_usage(|account, bytes| {
                let _ = tx.send(ToLink::Usage { account, bytes });
            });
        }
    });
}

/// How often a shard hands its allocations' byte counts to the link.
const USAGE_DRAIN: Duration = Duration::from_secs(5);

/// Sleeps until the server's next deadline, or until woken because it may have moved.
async fn timers(shard: SharedShard) {
    let notify = shard.borrow().timer.clone();
    loop {
        let next = {
            let mut s = shard.borrow_mut();
            let next = s.server.poll_timeout();
            s.armed = next;
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = notify.notified() => continue,
                }
            }
            None => {
                notify.notified().await;
                continue;
            }
        }
        let mut s = shard.borrow_mut();
        s.server.handle_timeout(Instant::now());
        s.flush(&shard);
    }
}

/// Sends the shard's queued datagrams when woken by [`Shard::schedule_flush`]. Woken during a
/// task's burst, it runs after the tasks that were already ready, so datagrams they queue for
/// the same socket (many relay tasks answering clients through one listener) share one
/// `sendmmsg`.
async fn flusher(shard: SharedShard) {
    let wake = shard.borrow().flush_wake.clone();
    loop {
        wake.notified().await;
        shard.borrow_mut().flush_data();
    }
}

/// Publishes the shard's packet counts at least every 250 ms.
async fn publish_traffic(shard: SharedShard) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let mut s = shard.borrow_mut();
        s.metrics.beat(s.index);
        let dropped = s.batch.take_dropped();
        let Shard {
            traffic, metrics, ..
        } = &mut *s;
        traffic.publish(metrics);
        metrics.send_dropped.inc_by(dropped);
    }
}

/// The event loop's tick: short enough to see a stall that overflows a listener's buffer.
const LAG_TICK: Duration = Duration::from_millis(10);

/// Measures how late the event loop runs a 10 ms tick. A late tick means no task of this shard
/// ran meanwhile, so no socket was read. A stall is logged with the thread's CPU time and
/// context switches over it, which tell this loop's own work (CPU time ≈ the stall) from being
/// descheduled (involuntary switches) or blocked in a system call (voluntary switches).
async fn watch_lag(metrics: Arc<Metrics>, shard: usize) {
    let mut before = ThreadUsage::now();
    loop {
        let due = Instant::now() + LAG_TICK;
        tokio::time::sleep_until(due.into()).await;
        let lag = Instant::now().saturating_duration_since(due);
        metrics.event_loop_lag.observe(lag.as_secs_f64());
        let usage = ThreadUsage::now();
        if lag >= crate::metrics::EVENT_LOOP_STALL {
            metrics.event_loop_stalls.inc();
            tracing::warn!(
                shard,
                lag_ms = lag.as_millis() as u64,
                cpu_ms = usage.cpu.saturating_sub(before.cpu).as_millis() as u64,
                voluntary_switches = usage.voluntary.saturating_sub(before.voluntary),
                involuntary_switches = usage.involuntary.saturating_sub(before.involuntary),
                "event loop stalled"
            );
        }
        before = usage;
    }
}

/// The calling thread's CPU time and context switches (`getrusage(RUSAGE_THREAD)`).
#[derive(Clone, Copy, Default)]
struct ThreadUsage {
    cpu: Duration,
    voluntary: u64,
    involuntary: u64,
}

impl ThreadUsage {
    fn now() -> Self {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD reports the calling thread.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) } != 0 {
            return Self::default();
        }
        // SAFETY: getrusage returned 0, so it filled `ru` (and it was zeroed before).
        let ru = unsafe { ru.assume_init() };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Self {
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            voluntary: ru.ru_nvcsw as u64,
            involuntary: ru.ru_nivcsw as u64,
        }
    }
}

impl Shard {
    /// Forwards client data that arrived on a TCP/TLS stream to a peer: the payload is copied
    /// into a slot of the batch (a memcpy is cheap next to a system call) and queued, so one
    /// read of many frames leaves with one `sendmmsg`.
    pub(crate) fn forward(&mut self, fwd: &Forward, bytes: &[u8], transport: Transport) {
        let Some(fd) = self.relay_socket(fwd.relay.0) else {
            return;
        };
        let payload = &bytes[fwd.range.clone()];
        let slot = match self.batch.copy_in(payload) {
            Some(slot) => slot,
            None => {
                self.flush_data();
                match self.batch.copy_in(payload) {
                    Some(slot) => slot,
                    None => return,
                }
            }
        };
        let len = payload.len() as u32;
        self.batch.push(crate::batch::Out {
            fd,
            to: fwd.peer.0,
            slot: slot as u16,
            start: 0,
            len,
            dir: Direction::ClientToPeer,
            transport,
            counted: len,
        });
    }

    /// The descriptor of one of our relay sockets.
    pub(crate) fn relay_socket(&self, addr: SocketAddr) -> Option<RawFd> {
        self.relays.get(&addr).map(|r| r.socket.as_raw_fd())
    }

    /// The descriptor of the UDP listener bound to `local`.
    pub(crate) fn listener_fd(&self, local: SocketAddr) -> Option<RawFd> {
        self.listeners
            .iter()
            .find(|(a, _)| *a == local)
            .map(|(_, l)| l.as_raw_fd())
    }

    /// Sends every queued datagram now.
    pub(crate) fn flush_data(&mut self) {
        self.flush_pending = false;
        if !self.batch.is_empty() {
            self.batch.flush(&mut self.traffic);
        }
    }

    /// Has the flush task send the queue once the tasks that are ready now have run.
    pub(crate) fn schedule_flush(&mut self) {
        if !self.batch.is_empty() && !self.flush_pending {
            self.flush_pending = true;
            self.flush_wake.notify_one();
        }
    }

    /// Sends bytes to a client over the transport it used.
    pub(crate) fn send_to_client(&mut self, client: &ClientAddr, data: &[u8]) -> bool {
        match client.transport {
            Transport::Udp => {
                let Some((_, l)) = self.listeners.iter().find(|(a, _)| *a == client.local) else {
                    return false;
                };
                send_now(l, data, client.remote)
            }
            Transport::Tcp | Transport::Tls => match self.streams.get(client) {
                Some(sink) => sink.push(data),
                None => false,
            },
        }
    }

    /// Carries out everything the server queued: relay socket binds and closes, responses,
    /// events. Called after every input that was not pure data. Queued data goes first: a
    /// relay socket closed here must not leave its descriptor in the queue.
    pub(crate) fn flush(&mut self, shared: &SharedShard) {
        self.flush_data();
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::BindRelay { allocation, v4, v6 } => {
                    let mut bound = Vec::new();
                    let mut ok = true;
                    for addr in [v4, v6].into_iter().flatten() {
                        match crate::bind_relay(addr, self.socket_buffer).and_then(udp::register) {
                            Ok(s) => bound.push((addr, Rc::new(s))),
                            Err(e) => {
                                tracing::debug!("cannot bind relay address {addr}: {e}");
                                ok = false;
                                break;
                            }
                        }
                    }
                    if ok {
                        for (addr, socket) in bound {
                            let task = tokio::task::spawn_local(udp::relay(
                                shared.clone(),
                                socket.clone(),
                                addr,
                            ));
                            self.relays.insert(addr, RelaySocket { socket, task });
                        }
                    }
                    self.server
                        .handle_relay_bound(allocation, ok, Instant::now());
                }
                Command::Admit {
                    allocation,
                    request,
                } => match &self.link {
                    Some(link) => {
                        let _ = link.send(ToLink::Admit {
                            shard: self.index,
                            allocation,
                            request,
                        });
                    }
                    // Admission without a link cannot be configured; admit rather than hang.
                    None => {
                        let v = cloudproxy_proto::admission::Verdict::Granted { account: 0 };
                        self.server.handle_admission(allocation, v, Instant::now());
                    }
                },
                Command::Signal { request, path } => match &self.link {
                    Some(link) => {
                        let _ = link.send(ToLink::Signal {
                            shard: self.index,
                            request,
                            path,
                        });
                    }
                    None => self.server.handle_signal_response(
                        request,
                        404,
                        b"Not Found: no control plane behind this relay",
                    ),
                },
                Command::CloseRelay { v4, v6 } => {
                    for addr in [v4, v6].into_iter().flatten() {
                        if let Some(r) = self.relays.remove(&addr) {
                            r.task.abort();
                        }
                    }
                }
            }
        }
        // Events and traffic counts first, so metrics are counted before the client can see
        // the response.
        let Shard {
            traffic, metrics, ..
        } = self;
        traffic.publish(metrics);
        metrics.send_dropped.inc_by(self.batch.take_dropped());
        let mut to_close = Vec::new();
        while let Some(e) = self.server.poll_event() {
            match e {
                Event::AllocationCreated { client, relay } => {
                    tracing::debug!(%client, relay = %relay.0, "allocation created");
                    self.metrics.allocations.inc();
                    self.metrics.allocations_created.inc();
                }
                Event::AllocationDeleted { client, reason } => {
                    tracing::debug!(%client, ?reason, "allocation deleted");
                    self.metrics.allocations.dec();
                    if client.transport.is_stream() {
                        to_close.push(client);
                    }
                }
                Event::AuthFailed { client, reason } => {
                    match reason {
                        AuthFailure::Credential(e) => {
                            tracing::debug!(%client, "auth failed: {e}")
                        }
                        other => tracing::debug!(%client, "auth failed: {other:?}"),
                    }
                    self.metrics.auth_failure();
                }
                Event::ErrorSent { code } => self.metrics.error_sent(code),
                Event::MalformedDropped => {
                    self.metrics.malformed_dropped.inc();
                }
                Event::ReflectionSuppressed => {
                    self.metrics.reflection_suppressed.inc();
                }
                Event::AccountClosed { account, bytes } => {
                    if let Some(link) = &self.link {
                        let _ = link.send(ToLink::Closed { account, bytes });
                    }
                }
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            self.send_to_client(&t.to, &t.data);
        }
        // A TCP/TLS connection lives as long as its allocation; it closes after the last
        // response (e.g. to a Refresh with lifetime 0) has been queued.
        for client in to_close {
            if let Some(sink) = self.streams.get(&client) {
                sink.close();
            }
        }
        // Wake the timer task only if the next deadline is now earlier than what it sleeps for;
        // waking it on every flush would make it spin.
        if let Some(next) = self.server.poll_timeout() {
            if self.armed.is_none_or(|armed| next < armed) {
                self.armed = Some(next);
                self.timer.notify_one();
            }
        }
    }
}

/// One non-blocking `sendto`, straight to the kernel, for control responses. A full socket
/// buffer drops the datagram, as the network would; the client retransmits.
fn send_now(socket: &udp::Socket, data: &[u8], to: SocketAddr) -> bool {
    socket2::SockRef::from(socket.get_ref())
        .send_to(data, &to.into())
        .is_ok()
}
