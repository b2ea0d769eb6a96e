//! Giving back what a path holds, so a session holds a relay's resources exactly as long as it
//! uses them.
//!
//! - **TURN over UDP**: the relay learns that an allocation has ended only from a Refresh with
//!   LIFETIME 0 (RFC 8656 §7). It is retransmitted as RFC 8489 §6.2.1 says (RTO 500 ms,
//!   doubling), but only for [`RELEASE_PATIENCE`]: a relay that has not answered by then is
//!   dead or out of reach, and the allocation expires there on its own. A stale nonce (438)
//!   is answered once with the new one; 437 means the allocation is gone already.
//! - **TURN over TCP/TLS**: an allocation ends with its connection (RFC 8656 §3.1, RFC 6062),
//!   so the pipe closes it: TLS sends close_notify, then the write side shuts down.
//! - **Direct UDP**: nothing is held at a relay; the media service's LEAVE is all.
//!
//! A pipe that is *dropped* rather than closed (a losing race candidate, the path a reconnect
//! replaced, a session cancelled with its `Client`) owes the same. `Drop` cannot wait, so:
//!
//! 1. at once, synchronously, it sends what it owes over UDP — the media LEAVE, then the
//!    Refresh — so even a runtime that is shutting down lets the relay know;
//! 2. if a tokio runtime is current, a spawned task waits for the answer and retransmits the
//!    same transaction, within the same bound; over TCP/TLS it closes gracefully.
//!
//! An authenticated Allocate may still be in flight when a candidate is dropped (the relay may
//! be waiting for the control plane's admission). A Refresh before its answer is refused with
//! 437 and the allocation would stay, so the task first waits for the Allocate's answer (at
//! most [`ALLOCATE_PATIENCE`]) and deletes what it made.
//!
//! Limits: with no runtime (or one that shuts down before the task runs), step 1 is all — a
//! lost datagram, or an Allocate in flight, leaves the allocation to expire at the relay
//! (its lifetime, 600 s by default). A TCP/TLS connection is closed by the kernel in any case,
//! which ends its allocation.

use std::time::Duration;

use cloudproxy_proto::client::{self, Attr, ClientAuth, Response, TransactionId, REFRESH};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::transport::Link;

/// First retransmission timeout of the Refresh (RFC 8489 §6.2.1).
const RELEASE_RTO: Duration = Duration::from_millis(500);
/// How long a release waits for the relay's answer: transmissions at 0 and 500 ms.
pub(crate) const RELEASE_PATIENCE: Duration = Duration::from_millis(1500);
/// How long a dropped pipe waits for the answer to an Allocate still in flight.
pub(crate) const ALLOCATE_PATIENCE: Duration = Duration::from_secs(3);
/// How long closing a TCP/TLS connection may take (close_notify, FIN).
const CLOSE_PATIENCE: Duration = Duration::from_millis(500);

/// An allocation the pipe holds, or may hold.
pub(crate) struct Held {
    pub auth: ClientAuth,
    /// The Allocate's transaction, when its answer has not come yet.
    pub allocate_in_flight: Option<u128>,
}

/// How a release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// Nothing was held at a relay (direct path, or no allocation made).
    Nothing,
    /// The relay confirmed the deletion (or that the allocation was already gone).
    Deleted,
    /// The TCP/TLS connection, and with it the allocation, was closed.
    Closed,
    /// The relay did not answer in time: the allocation expires there on its own.
    Unanswered,
    /// The relay refused the Refresh with this code.
    Refused(u16),
}

/// What a pipe owes when it ends: taken out of the pipe, so it can outlive it.
pub(crate) struct Release {
    link: Link,
    held: Option<Held>,
    /// The media LEAVE, framed for the link, when it has not been said yet.
    farewell: Option<Vec<u8>>,
    tid: u128,
    /// The Refresh already sent once (by [`Release::in_background`]), to retransmit as is.
    sent: Option<(u128, Vec<u8>)>,
}

impl Release {
    pub(crate) fn new(
        link: Link,
        held: Option<Held>,
        farewell: Option<Vec<u8>>,
        tid: u128,
    ) -> Self {
        Self {
            link,
            held,
            farewell,
            tid,
            sent: None,
        }
    }

    /// From `Drop`: sends what can go synchronously, then finishes in a spawned task if a
    /// runtime is current.
    pub(crate) fn in_background(mut self) {
        if let Link::Udp(sock) = &self.link {
            if let Some(f) = self.farewell.take() {
                let _ = sock.try_send(&f);
            }
            match &self.held {
                Some(h) if h.allocate_in_flight.is_none() => {
                    let (tid, req) = refresh_zero(&mut self.tid, &h.auth);
                    if sock.try_send(&req).is_ok() {
                        self.sent = Some((tid, req));
                    }
                }
                Some(_) => {}
                None => return, // nothing held at a relay
            }
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let r = self.run().await;
                tracing::debug!(outcome = ?r, "released a dropped path");
            });
        }
    }

    /// Releases and waits (bounded) for the relay's answer.
    pub(crate) async fn run(mut self) -> Released {
        match std::mem::replace(&mut self.link, Link::Released) {
            Link::Udp(sock) => {
                if let Some(f) = self.farewell.take() {
                    let _ = sock.send(&f).await;
                }
                match self.held.take() {
                    Some(held) => delete(&sock, held, self.sent.take(), &mut self.tid).await,
                    None => Released::Nothing,
                }
            }
            Link::Stream { mut io, .. } => {
                let _ = tokio::time::timeout(CLOSE_PATIENCE, async {
                    if let Some(f) = self.farewell.take() {
                        io.write_all(&f).await?;
                    }
                    // tokio-rustls sends close_notify, then shuts the TCP write side down.
                    io.shutdown().await
                })
                .await;
                if self.held.is_some() {
                    Released::Closed
                } else {
                    Released::Nothing
                }
            }
            Link::Released => Released::Nothing,
        }
    }
}

fn refresh_zero(tid: &mut u128, auth: &ClientAuth) -> (u128, Vec<u8>) {
    *tid += 1;
    let req = client::request(
        REFRESH,
        TransactionId::from(*tid),
        &[Attr::Lifetime(0)],
        Some(auth),
    );
    (*tid, req)
}

/// RFC 8656 §7: Refresh with LIFETIME 0 deletes the allocation.
async fn delete(
    sock: &UdpSocket,
    mut held: Held,
    mut sent: Option<(u128, Vec<u8>)>,
    tid: &mut u128,
) -> Released {
    let mut buf = vec![0u8; 2048];
    if let Some(allocate) = held.allocate_in_flight {
        match wait_for(sock, allocate, ALLOCATE_PATIENCE, &mut buf).await {
            Wait::Answer(r) if !r.success => return Released::Nothing, // nothing was made
            Wait::Gone => return Released::Unanswered,
            // Success, or no answer (it may have been made and the answer lost): delete.
            Wait::Answer(_) | Wait::Silence => {}
        }
    }
    for _ in 0..2 {
        let (id, req, already_sent) = match sent.take() {
            Some((id, req)) => (id, req, true),
            None => {
                let (id, req) = refresh_zero(tid, &held.auth);
                (id, req, false)
            }
        };
        let Some(r) = transaction(sock, id, &req, already_sent, &mut buf).await else {
            return Released::Unanswered;
        };
        match r.error {
            None => return Released::Deleted,
            Some((438, _)) => held.auth.nonce = r.nonce.unwrap_or_default(),
            // Allocation Mismatch: it is gone already (expired, or the relay restarted).
            Some((437, _)) => return Released::Deleted,
            Some((code, _)) => return Released::Refused(code),
        }
    }
    Released::Refused(438)
}

/// One request, retransmitted on the RFC 8489 §6.2.1 schedule until its answer comes or
/// [`RELEASE_PATIENCE`] has passed. `already_sent`: its first transmission went out earlier.
async fn transaction(
    sock: &UdpSocket,
    tid: u128,
    req: &[u8],
    already_sent: bool,
    buf: &mut [u8],
) -> Option<Response> {
    let deadline = Instant::now() + RELEASE_PATIENCE;
    let mut rto = RELEASE_RTO;
    if !already_sent {
        sock.send(req).await.ok()?;
    }
    loop {
        let wait = rto.min(deadline.saturating_duration_since(Instant::now()));
        match wait_for(sock, tid, wait, buf).await {
            Wait::Answer(r) => return Some(*r),
            Wait::Gone => return None,
            Wait::Silence if Instant::now() >= deadline => return None,
            Wait::Silence => {}
        }
        sock.send(req).await.ok()?;
        rto *= 2;
    }
}

enum Wait {
    Answer(Box<Response>),
    Silence,
    /// A socket error: ICMP port unreachable, no relay there any more.
    Gone,
}

/// Waits up to `patience` for the answer to `tid`.
async fn wait_for(sock: &UdpSocket, tid: u128, patience: Duration, buf: &mut [u8]) -> Wait {
    let answer = tokio::time::timeout(patience, async {
        loop {
            let Ok(n) = sock.recv(buf).await else {
                return Wait::Gone;
            };
            // Media may still arrive as ChannelData; only the answer matters.
            if let Ok(r) = client::parse(&buf[..n], None) {
                if r.transaction == tid && !r.is_indication {
                    return Wait::Answer(Box::new(r));
                }
            }
        }
    })
    .await;
    answer.unwrap_or(Wait::Silence)
}
