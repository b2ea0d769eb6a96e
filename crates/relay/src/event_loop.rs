//! One event loop per shard: a thread, a single-threaded tokio runtime, and every task of the
//! shard. All spawning happens here; the tasks (`udp.rs`, `stream.rs`) call the shard's
//! synchronous `handle_*` methods (`shard.rs`).
//!
//! The tasks of a shard run on its one thread and share its state through `Rc<RefCell<_>>`:
//! no lock, no channel hop between a socket and the server. A `RefCell` borrow is never held
//! across an `.await`.

use std::cell::RefCell;
use std::net::{TcpListener, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudproxy_proto::{ClientAddr, Server, ServerConfig, Shared, Transport};
use tokio::sync::mpsc;

use crate::config::ServerReload;
use crate::link::ShardLink;
use crate::metrics::Metrics;
use crate::shard::{Shard, SharedShard};
use crate::stream::{ApiRoute, ConnectionLimit, ConnectionSetup, Deadlines};
use crate::{sockets, stream, udp};

/// What the relay tells a running shard.
#[derive(Debug)]
pub(crate) enum ShardControl {
    Drain,
    Reload(Arc<ServerReload>),
    Stop,
}

/// Everything a shard's thread starts from.
pub(crate) struct ShardSetup {
    pub index: usize,
    pub server: ServerConfig,
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<(TcpListener, Transport)>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub api: Option<Arc<ApiRoute>>,
    pub shared: Shared,
    pub metrics: Arc<Metrics>,
    pub streams: Arc<ConnectionLimit>,
    pub stream_deadlines: Deadlines,
    pub socket_buffer: Option<usize>,
    pub control: mpsc::UnboundedReceiver<ShardControl>,
    pub link: Option<ShardLink>,
    pub fast_path: Option<crate::fastpath::SharedFastPath>,
}

/// How often a shard hands its allocations' byte counts to the link.
const USAGE_DRAIN: Duration = Duration::from_secs(5);

/// How often a shard publishes its packet counts and beats (`/healthz`).
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The lag watcher's tick: short enough to see a stall that overflows a listener's buffer.
const LAG_TICK: Duration = Duration::from_millis(10);

impl ShardSetup {
    /// Runs the shard on the calling thread until [`ShardControl::Stop`].
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
            match s.local_addr().and_then(|a| Ok((a, sockets::register(s)?))) {
                Ok((a, s)) => listeners.push((a, Rc::new(s))),
                Err(e) => tracing::error!("UDP listener: {e}"),
            }
        }
        let shard = Rc::new(RefCell::new(Shard::new(
            self.index,
            server,
            self.metrics.clone(),
            listeners.clone(),
            self.socket_buffer,
            self.link.as_ref().map(|l| l.tx.clone()),
            self.fast_path.clone(),
        )));
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
                    let setup = ConnectionSetup {
                        tls: match transport {
                            Transport::Tls => self.tls.clone().map(tokio_rustls::TlsAcceptor::from),
                            _ => None,
                        },
                        api: self.api.clone(),
                        deadlines: self.stream_deadlines,
                    };
                    tokio::task::spawn_local(accept(
                        shard.clone(),
                        l,
                        transport,
                        setup,
                        self.streams.clone(),
                    ));
                }
                Err(e) => tracing::error!("TCP listener: {e}"),
            }
        }
        tokio::task::spawn_local(timers(shard.clone()));
        tokio::task::spawn_local(sender(shard.clone()));
        tokio::task::spawn_local(relay_readers(shard.clone()));
        tokio::task::spawn_local(publish_traffic(shard.clone()));
        tokio::task::spawn_local(watch_lag(self.metrics.clone(), self.index));
        if self.fast_path.is_some() {
            tokio::task::spawn_local(harvest_fast_path(shard.clone()));
        }
        while let Some(c) = self.control.recv().await {
            match c {
                ShardControl::Drain => shard.borrow_mut().server.set_draining(true),
                ShardControl::Reload(r) => {
                    let d = directory.as_ref().map(|d| d.borrow().clone());
                    shard.borrow_mut().handle_reload(&r, d.as_deref());
                }
                ShardControl::Stop => break,
            }
        }
        tracing::debug!(shard = self.index, "event loop stopped");
    }
}

/// The shard's side of the control-plane link: verdicts, directory changes, usage drains.
fn spawn_link_tasks(shard: &SharedShard, link: ShardLink) {
    let ShardLink {
        mut verdicts,
        mut directory,
        ..
    } = link;
    let s = shard.clone();
    tokio::task::spawn_local(async move {
        while let Some(msg) = verdicts.recv().await {
            s.borrow_mut().handle_link(msg);
        }
    });
    let s = shard.clone();
    tokio::task::spawn_local(async move {
        while directory.changed().await.is_ok() {
            let d = directory.borrow_and_update().clone();
            s.borrow_mut().handle_directory(&d);
        }
    });
    let s = shard.clone();
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(USAGE_DRAIN);
        loop {
            tick.tick().await;
            s.borrow_mut().drain_usage();
        }
    });
}

/// Accepts TCP/TLS clients within the connection limits and spawns a task for each.
async fn accept(
    shard: SharedShard,
    listener: tokio::net::TcpListener,
    transport: Transport,
    setup: ConnectionSetup,
    limit: Arc<ConnectionLimit>,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("listener address: {e}");
            return;
        }
    };
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept on {local}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match limit.try_open(remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                limit.refused(why, remote);
                continue;
            }
        };
        let client = ClientAddr {
            transport,
            remote,
            local,
        };
        tokio::task::spawn_local(stream::connection(
            shard.clone(),
            tcp,
            client,
            setup.clone(),
            slot,
        ));
    }
}

/// Spawns the reading task of every relay socket the shard binds.
async fn relay_readers(shard: SharedShard) {
    let wake = shard.borrow().wakes().relays;
    loop {
        wake.notified().await;
        let bound = shard.borrow_mut().take_unread_relays();
        for (addr, socket) in bound {
            let task = tokio::task::spawn_local(udp::relay(shard.clone(), socket, addr));
            shard.borrow_mut().set_relay_task(addr, task);
        }
    }
}

/// Sleeps until the server's next deadline, or until woken because it may have moved.
async fn timers(shard: SharedShard) {
    let wake = shard.borrow().wakes().timer;
    loop {
        let next = shard.borrow_mut().arm_timer();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => continue,
                }
            }
            None => {
                wake.notified().await;
                continue;
            }
        }
        shard.borrow_mut().handle_timeout(Instant::now());
    }
}

/// Sends the shard's queued datagrams when woken by [`Shard::schedule_send`]. Woken during a
/// task's burst, it runs after the tasks that were already ready, so datagrams they queue for
/// the same socket (many relay tasks answering clients through one listener) share one
/// `sendmmsg`.
async fn sender(shard: SharedShard) {
    let wake = shard.borrow().wakes().send;
    loop {
        wake.notified().await;
        shard.borrow_mut().send_queued();
    }
}

/// How often what the kernel forwarded is read into metrics and usage.
/// Two map lookups per installed binding, so not much more often than usage is drained.
const FAST_PATH_HARVEST: Duration = Duration::from_secs(5);

/// Reads the fast path's counters every [`FAST_PATH_HARVEST`] (and a binding's last counts
/// when it ends, in the shard).
async fn harvest_fast_path(shard: SharedShard) {
    let mut tick = tokio::time::interval(FAST_PATH_HARVEST);
    loop {
        tick.tick().await;
        shard.borrow_mut().harvest_fast_path();
    }
}

/// Publishes the shard's packet counts at least every 250 ms.
async fn publish_traffic(shard: SharedShard) {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    loop {
        tick.tick().await;
        shard.borrow_mut().publish_traffic();
    }
}

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
