//! A shard's side of the XDP fast path: it follows the server's channel events, installing
//! and removing the kernel's entries, and meters what the kernel forwarded.
//!
//! The server decides everything (authentication, permissions, quotas, revocation); the
//! kernel only forwards a binding's ChannelData while its entry lives, and an entry carries
//! the binding's `until`, so even a lapse user space has not yet seen stops it. What the
//! kernel forwarded never reaches a socket, so each entry's counters are read here — every 5 s
//! and when the binding ends — and the payload bytes go to the allocation's
//! account as usage, exactly as the socket path would have counted them.
//!
//! The program is one per process; shards share it behind a mutex taken on channel events and
//! counter reads only, never per packet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cloudproxy_proto::{BoundChannel, ClientAddr, Transport};
use cloudproxy_xdp::{Channel, Counter, FastPath, Installed};

use crate::metrics::Metrics;

/// The process's loaded program, shared by the shards.
pub(crate) type SharedFastPath = Arc<Mutex<FastPath>>;

/// One installed binding.
struct Entry {
    channel: Channel,
    account: Option<u64>,
    ids: Installed,
    /// What was already metered: (client → peer, peer → client).
    metered: (Counter, Counter),
}

/// What the kernel forwarded since the last look, for one account.
pub(crate) struct Forwarded {
    pub account: Option<u64>,
    pub bytes: u64,
}

pub(crate) struct ShardFastPath {
    path: SharedFastPath,
    metrics: Arc<Metrics>,
    entries: HashMap<(ClientAddr, u16), Entry>,
}

impl ShardFastPath {
    pub(crate) fn new(path: SharedFastPath, metrics: Arc<Metrics>) -> Self {
        Self {
            path,
            metrics,
            entries: HashMap::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastPath> {
        self.path.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`cloudproxy_proto::Event::ChannelUsable`]: installs or refreshes the binding. Only UDP
    /// clients are forwarded in the kernel; the rest stays on the socket path.
    pub(crate) fn usable(&mut self, bound: BoundChannel, until: Instant, account: Option<u64>) {
        let Some(channel) = kernel_channel(&bound) else {
            return;
        };
        let BoundChannel { client, number, .. } = bound;
        let (installed, len) = {
            let mut fp = self.lock();
            (fp.install(&channel, until), fp.len())
        };
        self.metrics.fastpath_entries.set(len as i64);
        match installed {
            Ok(ids) => {
                let key = (client, number);
                match self.entries.get_mut(&key) {
                    Some(e) if e.ids == ids => e.channel = channel,
                    _ => {
                        self.entries.insert(
                            key,
                            Entry {
                                channel,
                                account,
                                ids,
                                metered: Default::default(),
                            },
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(%client, number, "fast path: {e}; the socket path relays it"),
        }
    }

    /// [`cloudproxy_proto::Event::ChannelEnded`]: removes the binding and returns what the
    /// kernel forwarded since it was last metered.
    pub(crate) fn ended(&mut self, bound: &BoundChannel) -> Option<Forwarded> {
        let e = self.entries.remove(&(bound.client, bound.number))?;
        let (totals, len) = {
            let mut fp = self.lock();
            (fp.remove(&e.channel), fp.len())
        };
        self.metrics.fastpath_entries.set(len as i64);
        Some(meter(&self.metrics, e.account, e.metered, totals?))
    }

    /// Reads every entry's counters: what the kernel forwarded since the last look, per
    /// entry (several may share an account).
    pub(crate) fn harvest(&mut self) -> Vec<Forwarded> {
        let fp = self.path.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for e in self.entries.values_mut() {
            let (Ok(a), Ok(b)) = (fp.counters(e.ids.to_peer), fp.counters(e.ids.to_client)) else {
                continue;
            };
            let f = meter(&self.metrics, e.account, e.metered, (a, b));
            e.metered = (a, b);
            if f.bytes > 0 {
                out.push(f);
            }
        }
        out
    }
}

/// Counts the difference between two readings of an entry's counters in the metrics; returns
/// it for usage.
fn meter(
    metrics: &Metrics,
    account: Option<u64>,
    before: (Counter, Counter),
    now: (Counter, Counter),
) -> Forwarded {
    let d = |a: Counter, b: Counter| {
        (
            b.packets.saturating_sub(a.packets),
            b.bytes.saturating_sub(a.bytes),
        )
    };
    let (p0, b0) = d(before.0, now.0);
    let (p1, b1) = d(before.1, now.1);
    metrics.fastpath_forwarded(true, p0, b0);
    metrics.fastpath_forwarded(false, p1, b1);
    Forwarded {
        account,
        bytes: b0 + b1,
    }
}

/// The kernel's view of a binding: UDP clients only (IPv4 or IPv6).
fn kernel_channel(bound: &BoundChannel) -> Option<Channel> {
    if bound.client.transport != Transport::Udp {
        return None;
    }
    Some(Channel {
        client: bound.client.remote,
        listener: bound.client.local,
        number: bound.number,
        relay: bound.relay.0,
        peer: bound.peer.0,
    })
}
