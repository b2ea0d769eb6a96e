//! One allocation's state on a worker apart from its connection, and what to do with each
//! frame the server sends: a probe coming back (matched, deduplicated, timed) or the answer to
//! a refresh (a 438 Stale Nonce is answered once with the new nonce).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cloudproxy_proto::channel;
use cloudproxy_proto::client::{self, Attr, ClientAuth, CHANNEL_BIND, REFRESH};

use crate::control::{Live, MAX_STEPS};
use crate::histogram::Histogram;
use crate::probe::{Probe, SeqWindow};
use crate::report::DataCounters;
use crate::setup::{transaction_id, CHANNEL};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Refresh(u32),
    Bind,
}

/// An allocation's state apart from its connection, so frames can be handled while the connection is
/// borrowed for reading.
pub(crate) struct Flow {
    pub(crate) index: u32,
    pub(crate) auth: Option<ClientAuth>,
    pub(crate) seq: u64,
    pub(crate) window: SeqWindow,
    /// Outstanding refresh requests: transaction id, what, whether already retried.
    pub(crate) pending: Vec<(u128, Request, bool)>,
    pub(crate) resend: Vec<(Request, bool)>,
    pub(crate) next_refresh: Instant,
    pub(crate) alive: bool,
    pub(crate) in_backlog: bool,
}

/// Everything a frame handler touches besides the flow.
pub(crate) struct Tally {
    pub(crate) live: Arc<Live>,
    pub(crate) latency: Vec<Histogram>,
    pub(crate) counters: DataCounters,
}

impl Flow {
    /// A refresh-type request for this allocation, remembered as pending.
    pub(crate) fn request(&mut self, what: Request, retried: bool, peer: SocketAddr) -> Vec<u8> {
        let tid = transaction_id();
        let msg = match what {
            Request::Refresh(s) => {
                client::request(REFRESH, tid, &[Attr::Lifetime(s)], self.auth.as_ref())
            }
            Request::Bind => client::request(
                CHANNEL_BIND,
                tid,
                &[Attr::ChannelNumber(CHANNEL), Attr::PeerAddress(peer)],
                self.auth.as_ref(),
            ),
        };
        self.pending.push((tid.into(), what, retried));
        msg
    }
}

/// Handles one frame from the server: a probe coming back, or a response to a refresh.
pub(crate) fn on_frame(flow: &mut Flow, tally: &mut Tally, frame: &[u8], now_ns: u64) {
    let Some(&first) = frame.first() else {
        return;
    };
    if channel::is_channel_data(first) {
        let probe = channel::parse_header(frame)
            .and_then(|(_, len)| frame.get(4..4 + len))
            .and_then(Probe::read);
        let Some(p) = probe.filter(|p| (p.step as usize) < MAX_STEPS) else {
            tally.counters.foreign += 1;
            return;
        };
        if p.allocation != flow.index {
            tally.counters.misrouted += 1;
            return;
        }
        if !flow.window.accept(p.seq) {
            tally.counters.duplicates += 1;
            return;
        }
        let s = p.step as usize;
        tally.live.received[s].fetch_add(1, Ordering::Relaxed);
        if tally.latency.len() <= s {
            tally.latency.resize_with(s + 1, Histogram::default);
        }
        tally.latency[s].record(now_ns.saturating_sub(p.sent_ns));
        return;
    }
    let Ok(r) = client::parse(frame, None) else {
        tally.counters.foreign += 1;
        return;
    };
    let Some(pos) = flow.pending.iter().position(|p| p.0 == r.transaction) else {
        return;
    };
    let (_, what, retried) = flow.pending.swap_remove(pos);
    // 437 Allocation Mismatch to a deletion: the server holds no allocation on this 5-tuple
    // any more — typically a resent deletion whose first answer was lost, after the first one
    // deleted it (RFC 8656 §7.3). Gone is what a deletion asks for.
    let gone = what == Request::Refresh(0) && matches!(r.error, Some((437, _)));
    if (r.success || gone) && what == Request::Refresh(0) {
        tally.counters.released += 1;
    } else if r.success {
        tally.counters.refresh_ok += 1;
    } else if let (Some((438, _)), Some(nonce), Some(auth), false) =
        (&r.error, &r.nonce, flow.auth.as_mut(), retried)
    {
        auth.nonce = nonce.clone();
        flow.resend.push((what, true));
    } else if what == Request::Refresh(0) {
        tally.counters.release_failed += 1;
    } else {
        tally.counters.refresh_failed += 1;
    }
}
