//! A shard's state and what it does with each input, synchronously: the sans-IO server, the
//! batch arena, its sockets and its clients' stream queues. Nothing here awaits or spawns:
//! the event loop (`event_loop.rs`) owns the tasks, and the tasks (`udp.rs`, `stream.rs`)
//! call the `handle_*` methods below with what they read.
//!
//! After an input the server may have output: data is queued in the batch and sent once the
//! tasks that are ready now have run ([`Shard::schedule_send`]); anything else (responses,
//! relay sockets to bind or close, events) is carried out at once by [`Shard::apply_output`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use cloudproxy_proto::admission::Verdict;
use cloudproxy_proto::server::AuthFailure;
use cloudproxy_proto::{ClientAddr, ClientInput, Command, Event, Forward, Server, Transport};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::batch::{Batch, Out, Received};
use crate::fastpath::{ShardFastPath, SharedFastPath};
use crate::link::{Directory, FromLink, ToLink};
use crate::metrics::{Direction, LocalTraffic, Metrics};
use crate::sink::StreamSink;
use crate::sockets;

/// What became of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Data queued in the batch for a peer or a client: [`Shard::schedule_send`].
    Queued,
    /// A message the server took in; its output waits for [`Shard::apply_output`].
    Handled,
    /// Dropped; nothing to do.
    Dropped,
}

/// A relayed transport address and the task reading it (`None` until the event loop has
/// spawned it).
struct RelaySocket {
    socket: Rc<sockets::Udp>,
    task: Option<JoinHandle<()>>,
}

/// The wake-ups a shard gives its event loop's tasks.
#[derive(Clone, Default)]
pub(crate) struct Wakes {
    /// The sender task: send the batch once the tasks ready now have run.
    pub send: Rc<Notify>,
    /// The timer task: the next deadline moved earlier.
    pub timer: Rc<Notify>,
    /// The relay-task spawner: relay sockets were bound.
    pub relays: Rc<Notify>,
}

pub(crate) struct Shard {
    pub server: Server,
    pub metrics: Arc<Metrics>,
    /// Packet and byte counts not yet published to `metrics`.
    pub traffic: LocalTraffic,
    /// The slots every UDP task of this shard receives into, and the queue of datagrams to
    /// send from them (see `batch.rs`).
    pub batch: Batch,
    wakes: Wakes,
    send_pending: bool,
    /// UDP listeners, to answer a client from the address it reached.
    listeners: Vec<(SocketAddr, Rc<sockets::Udp>)>,
    /// Keyed by our own relayed addresses (locally minted), so a cheap hash does.
    relays: HashMap<SocketAddr, RelaySocket, foldhash::fast::RandomState>,
    /// Relay sockets bound and waiting for their reading task.
    unread_relays: Vec<SocketAddr>,
    /// Outgoing queues of TCP/TLS clients.
    streams: HashMap<ClientAddr, StreamSink>,
    socket_buffer: Option<usize>,
    /// The deadline the timer task sleeps until (`None`: it waits for a wake-up).
    armed: Option<Instant>,
    index: usize,
    /// To the control-plane link (admissions, usage), when there is one.
    link: Option<mpsc::UnboundedSender<ToLink>>,
    /// The XDP fast path, when it runs.
    fast_path: Option<ShardFastPath>,
}

pub(crate) type SharedShard = Rc<RefCell<Shard>>;

impl Shard {
    pub(crate) fn new(
        index: usize,
        server: Server,
        metrics: Arc<Metrics>,
        listeners: Vec<(SocketAddr, Rc<sockets::Udp>)>,
        socket_buffer: Option<usize>,
        link: Option<mpsc::UnboundedSender<ToLink>>,
        fast_path: Option<SharedFastPath>,
    ) -> Self {
        let fast_path = fast_path.map(|p| ShardFastPath::new(p, metrics.clone()));
        Self {
            server,
            metrics,
            traffic: LocalTraffic::default(),
            batch: Batch::new(),
            wakes: Wakes::default(),
            send_pending: false,
            listeners,
            relays: HashMap::default(),
            unread_relays: Vec::new(),
            streams: HashMap::new(),
            socket_buffer,
            armed: None,
            index,
            link,
            fast_path,
        }
    }

    pub(crate) fn wakes(&self) -> Wakes {
        self.wakes.clone()
    }

    // -- Inputs --------------------------------------------------------------------------------

    /// A datagram from a UDP client, received into the batch at offset 0 (`r`) on the
    /// listener bound to `local`.
    pub(crate) fn handle_client_datagram(
        &mut self,
        r: Received,
        local: SocketAddr,
        now: Instant,
    ) -> Outcome {
        let client = ClientAddr {
            transport: Transport::Udp,
            remote: r.from,
            local,
        };
        let bytes = self.batch.packet(r.slot, 0, r.len);
        match self.server.handle_client_input(bytes, client, now) {
            ClientInput::Forward(fwd) => self.queue_to_peer(&fwd, r.slot, 0),
            ClientInput::Handled => Outcome::Handled,
            ClientInput::Dropped => Outcome::Dropped,
        }
    }

    /// A datagram from a peer on our relayed address `relay`, received into the batch
    /// `HEADROOM` bytes into its slot (`r`), so the server can frame it in place.
    pub(crate) fn handle_peer_datagram(
        &mut self,
        relay: SocketAddr,
        r: Received,
        now: Instant,
    ) -> Outcome {
        let out = self.server.handle_peer_input(
            cloudproxy_proto::RelayAddr(relay),
            cloudproxy_proto::PeerAddr(r.from),
            self.batch.slot_mut(r.slot),
            r.len,
            now,
        );
        match out {
            Some((client, range)) => self.queue_to_client(&client, r.slot, range, r.len),
            None => Outcome::Dropped,
        }
    }

    /// One complete frame from a TCP/TLS client. A payload for a peer is copied into a slot
    /// of the batch (a memcpy is cheap next to a system call), so one read of many frames
    /// leaves with one `sendmmsg`.
    pub(crate) fn handle_stream_frame(
        &mut self,
        frame: &[u8],
        client: ClientAddr,
        now: Instant,
    ) -> Outcome {
        match self.server.handle_client_input(frame, client, now) {
            ClientInput::Forward(fwd) => self.copy_to_peer(&fwd, frame, client.transport),
            ClientInput::Handled => Outcome::Handled,
            ClientInput::Dropped => Outcome::Dropped,
        }
    }

    /// A TCP/TLS client connected: its frames go into `sink`.
    pub(crate) fn handle_stream_opened(&mut self, client: ClientAddr, sink: StreamSink) {
        self.streams.insert(client, sink);
    }

    /// A TCP/TLS client's connection ended: its allocation goes with it.
    pub(crate) fn handle_stream_closed(&mut self, client: ClientAddr) {
        self.streams.remove(&client);
        self.server.handle_client_closed(client);
        self.apply_output();
    }

    /// The server's deadline came.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
        self.apply_output();
    }

    /// A verdict or an in-band signal answer from the control-plane link.
    pub(crate) fn handle_link(&mut self, msg: FromLink) {
        match msg {
            FromLink::Verdict(allocation, verdict) => {
                let granted = match &verdict {
                    Verdict::Granted { account } => Some(*account),
                    _ => None,
                };
                let taken = self
                    .server
                    .handle_admission(allocation, verdict, Instant::now());
                if let (false, Some(account), Some(link)) = (taken, granted, &self.link) {
                    let _ = link.send(ToLink::Unused { account });
                }
            }
            FromLink::Signal(request, status, body) => {
                self.server.handle_signal_response(request, status, &body);
            }
        }
        self.apply_output();
    }

    /// The control plane's apps and keys changed (a sync).
    pub(crate) fn handle_directory(&mut self, d: &Directory) {
        self.server.set_app_keys(&d.keys);
        self.server.set_access(d.access.clone());
        self.apply_output();
    }

    /// A reloaded configuration (SIGHUP). Under a control plane its keys are the app keys,
    /// not the file's, so `directory` is applied again on top.
    pub(crate) fn handle_reload(
        &mut self,
        r: &crate::config::ServerReload,
        directory: Option<&Directory>,
    ) {
        let revoked = self.server.reconfigure(
            &r.auth,
            r.peer_policy.clone(),
            r.max_allocations,
            r.max_allocations_per_user,
            Instant::now(),
        );
        if let Some(d) = directory {
            self.server.set_app_keys(&d.keys);
        }
        if revoked > 0 {
            tracing::info!(
                shard = self.index,
                revoked,
                "reload: permissions and channels toward peers now denied ended"
            );
        }
        self.apply_output();
    }

    /// Hands the allocations' byte counts since the last call to the link.
    pub(crate) fn drain_usage(&mut self) {
        if let Some(link) = &self.link {
            self.server.drain_usage(|account, bytes| {
                let _ = link.send(ToLink::Usage { account, bytes });
            });
        }
    }

    /// Meters what the kernel forwarded since the last look: metrics, and usage for the
    /// allocations' accounts.
    pub(crate) fn harvest_fast_path(&mut self) {
        let Some(fp) = &mut self.fast_path else {
            return;
        };
        for f in fp.harvest() {
            self.report_forwarded(f);
        }
    }

    fn report_forwarded(&self, f: crate::fastpath::Forwarded) {
        if let (Some(account), Some(link), 1..) = (f.account, &self.link, f.bytes) {
            let _ = link.send(ToLink::Usage {
                account,
                bytes: f.bytes,
            });
        }
    }

    /// Publishes the shard's packet counts and says it is alive.
    pub(crate) fn publish_traffic(&mut self) {
        self.metrics.beat(self.index);
        let dropped = self.batch.take_dropped();
        self.traffic.publish(&self.metrics);
        self.metrics.send_dropped.inc_by(dropped);
    }

    // -- Data ----------------------------------------------------------------------------------

    /// Queues client data (in slot `slot`, at `fwd.range` from `offset`) for the peer, from
    /// the allocation's relay socket.
    fn queue_to_peer(&mut self, fwd: &Forward, slot: usize, offset: usize) -> Outcome {
        let Some(fd) = self.relay_fd(fwd.relay.0) else {
            return Outcome::Dropped;
        };
        let len = fwd.range.len() as u32;
        self.batch.push(Out {
            fd,
            to: fwd.peer.0,
            slot: slot as u16,
            start: (offset + fwd.range.start) as u32,
            len,
            dir: Direction::ClientToPeer,
            transport: Transport::Udp,
            counted: len,
        });
        Outcome::Queued
    }

    /// Copies stream data for a peer into a free slot and queues it.
    fn copy_to_peer(&mut self, fwd: &Forward, bytes: &[u8], transport: Transport) -> Outcome {
        let Some(fd) = self.relay_fd(fwd.relay.0) else {
            return Outcome::Dropped;
        };
        let payload = &bytes[fwd.range.clone()];
        let slot = match self.batch.copy_in(payload) {
            Some(slot) => slot,
            None => {
                self.send_queued();
                match self.batch.copy_in(payload) {
                    Some(slot) => slot,
                    None => return Outcome::Dropped,
                }
            }
        };
        let len = payload.len() as u32;
        self.batch.push(Out {
            fd,
            to: fwd.peer.0,
            slot: slot as u16,
            start: 0,
            len,
            dir: Direction::ClientToPeer,
            transport,
            counted: len,
        });
        Outcome::Queued
    }

    /// Queues peer data (slot `slot`, bytes `range`, framed by the server) for a UDP client
    /// from the listener it reached; a TCP/TLS client's frame goes into its stream queue at
    /// once.
    fn queue_to_client(
        &mut self,
        client: &ClientAddr,
        slot: usize,
        range: std::ops::Range<usize>,
        payload: usize,
    ) -> Outcome {
        match client.transport {
            Transport::Udp => {
                let Some(fd) = self.listener_fd(client.local) else {
                    return Outcome::Dropped;
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
                Outcome::Queued
            }
            Transport::Tcp | Transport::Tls => {
                let sent = match self.streams.get(client) {
                    Some(sink) => sink.push(self.batch.packet(slot, range.start, range.len())),
                    None => false,
                };
                if !sent {
                    return Outcome::Dropped;
                }
                self.traffic
                    .record(Direction::PeerToClient, client.transport, payload);
                Outcome::Queued
            }
        }
    }

    /// The descriptor of one of our relay sockets.
    fn relay_fd(&self, addr: SocketAddr) -> Option<RawFd> {
        self.relays.get(&addr).map(|r| r.socket.as_raw_fd())
    }

    /// The descriptor of the UDP listener bound to `local`.
    fn listener_fd(&self, local: SocketAddr) -> Option<RawFd> {
        self.listeners
            .iter()
            .find(|(a, _)| *a == local)
            .map(|(_, l)| l.as_raw_fd())
    }

    /// Sends every queued datagram now.
    pub(crate) fn send_queued(&mut self) {
        self.send_pending = false;
        if !self.batch.is_empty() {
            self.batch.flush(&mut self.traffic);
        }
    }

    /// Has the sender task send the queue once the tasks that are ready now have run, so
    /// datagrams several tasks queue for one socket share a `sendmmsg`.
    pub(crate) fn schedule_send(&mut self) {
        if !self.batch.is_empty() && !self.send_pending {
            self.send_pending = true;
            self.wakes.send.notify_one();
        }
    }

    // -- Output --------------------------------------------------------------------------------

    /// Carries out everything the server queued: relay socket binds and closes, responses,
    /// events. Called after every input that was not pure data. Queued data goes first: a
    /// relay socket closed here must not leave its descriptor in the queue.
    pub(crate) fn apply_output(&mut self) {
        self.send_queued();
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::BindRelay { allocation, v4, v6 } => {
                    let ok = self.bind_relays([v4, v6].into_iter().flatten());
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
                        let v = Verdict::Granted { account: 0 };
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
                        if let Some(task) = self.relays.remove(&addr).and_then(|r| r.task) {
                            task.abort();
                        }
                    }
                }
            }
        }
        // Events and traffic counts first, so metrics are counted before the client can see
        // the response.
        self.traffic.publish(&self.metrics);
        self.metrics.send_dropped.inc_by(self.batch.take_dropped());
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
                Event::ChannelUsable {
                    channel,
                    until,
                    account,
                } => {
                    if let Some(fp) = &mut self.fast_path {
                        fp.usable(channel, until, account);
                    }
                }
                Event::ChannelEnded { channel, .. } => {
                    // Metered before the account closes (the server orders the events so).
                    if let Some(f) = self.fast_path.as_mut().and_then(|fp| fp.ended(&channel)) {
                        self.report_forwarded(f);
                    }
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
        // waking it on every apply would make it spin.
        if let Some(next) = self.server.poll_timeout() {
            if self.armed.is_none_or(|armed| next < armed) {
                self.armed = Some(next);
                self.wakes.timer.notify_one();
            }
        }
    }

    /// Binds and registers an allocation's relay sockets, all or none; their reading tasks
    /// are the event loop's to spawn ([`Shard::take_unread_relays`]).
    fn bind_relays(&mut self, addrs: impl Iterator<Item = SocketAddr>) -> bool {
        let mut bound = Vec::new();
        for addr in addrs {
            match sockets::bind_relay(addr, self.socket_buffer).and_then(sockets::register) {
                Ok(s) => bound.push((addr, Rc::new(s))),
                Err(e) => {
                    tracing::debug!("cannot bind relay address {addr}: {e}");
                    return false;
                }
            }
        }
        for (addr, socket) in bound {
            self.relays.insert(addr, RelaySocket { socket, task: None });
            self.unread_relays.push(addr);
        }
        self.wakes.relays.notify_one();
        true
    }

    /// Relay sockets bound since the last call that are still open, for the event loop to
    /// spawn their reading tasks.
    pub(crate) fn take_unread_relays(&mut self) -> Vec<(SocketAddr, Rc<sockets::Udp>)> {
        let relays = &self.relays;
        self.unread_relays
            .drain(..)
            .filter_map(|a| relays.get(&a).map(|r| (a, r.socket.clone())))
            .collect()
    }

    /// The task reading relay socket `addr`; aborted at once if the socket closed meanwhile.
    pub(crate) fn set_relay_task(&mut self, addr: SocketAddr, task: JoinHandle<()>) {
        match self.relays.get_mut(&addr) {
            Some(r) => r.task = Some(task),
            None => task.abort(),
        }
    }

    /// Sends bytes to a client over the transport it used.
    fn send_to_client(&mut self, client: &ClientAddr, data: &[u8]) -> bool {
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

    /// The server's next deadline, now what the timer task sleeps until.
    pub(crate) fn arm_timer(&mut self) -> Option<Instant> {
        self.armed = self.server.poll_timeout();
        self.armed
    }

    pub(crate) fn has_allocation(&self, client: &ClientAddr) -> bool {
        self.server.has_allocation(client)
    }
}

/// One non-blocking `sendto`, straight to the kernel, for control responses. A full socket
/// buffer drops the datagram, as the network would; the client retransmits.
fn send_now(socket: &sockets::Udp, data: &[u8], to: SocketAddr) -> bool {
    socket2::SockRef::from(socket.get_ref())
        .send_to(data, &to.into())
        .is_ok()
}
