//! The pool of relay ports one server hands out, in random order (RFC 8656 §6.2, RFC 6056).
//!
//! `is_free` is the truth; the queue may hold stale entries (a port taken out of order by
//! [`PortPool::take_pair`]), which `take` skips. Every operation is O(1) but `take_even` and
//! `take_pair`, which scan and are only used for EVEN-PORT requests.

use std::collections::{HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::Instant;

/// RESERVATION-TOKEN -> (reserved port, valid until).
type Reservations = HashMap<u64, (u16, Instant)>;

/// The relay port range shared by every shard of a process, with the reservations made by
/// EVEN-PORT R=1. Shared because a client's RTP and RTCP sockets may land on different shards
/// (SO_REUSEPORT hashes each 5-tuple), and the RESERVATION-TOKEN must work on either. Locked
/// only on Allocate and allocation deletion, never per packet.
#[derive(Debug)]
pub struct RelayPorts {
    range: RangeInclusive<u16>,
    // std Mutex: held for a few operations on the control path, never across an await.
    inner: Mutex<(PortPool, Reservations)>,
}

/// Why a RESERVATION-TOKEN could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    Unknown,
    Expired,
}

impl RelayPorts {
    /// A pool over `range`, shuffled with `rng` so relayed ports are not predictable.
    pub fn new(range: RangeInclusive<u16>, rng: &mut impl rand::RngCore) -> Self {
        Self {
            inner: Mutex::new((PortPool::new(range.clone(), rng), HashMap::new())),
            range,
        }
    }

    /// The port range relayed sockets are bound in.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (PortPool, Reservations)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn take(&self) -> Option<u16> {
        self.lock().0.take()
    }

    pub(crate) fn take_even(&self) -> Option<u16> {
        self.lock().0.take_even()
    }

    /// Takes an even port and reserves the next one under `token` until `until`.
    pub(crate) fn take_pair(&self, token: u64, until: Instant) -> Option<u16> {
        let mut g = self.lock();
        let port = g.0.take_pair()?;
        g.1.insert(token, (port + 1, until));
        Some(port)
    }

    pub(crate) fn give(&self, port: u16) {
        self.lock().0.give(port);
    }

    pub(crate) fn claim(&self, token: u64, now: Instant) -> Result<u16, ClaimError> {
        let mut g = self.lock();
        match g.1.remove(&token) {
            Some((port, until)) if until > now => Ok(port),
            Some((port, _)) => {
                g.0.give(port);
                Err(ClaimError::Expired)
            }
            None => Err(ClaimError::Unknown),
        }
    }

    /// Frees the ports of reservations that ran out (RFC 8656 §7.2: about 30 s).
    pub(crate) fn expire(&self, now: Instant) {
        let mut g = self.lock();
        let (pool, reservations) = &mut *g;
        reservations.retain(|_, (port, until)| {
            let keep = *until > now;
            if !keep {
                pool.give(*port);
            }
            keep
        });
    }
}

#[derive(Debug)]
pub(crate) struct PortPool {
    start: u16,
    queue: VecDeque<u16>,
    is_free: Vec<bool>,
}

impl PortPool {
    pub(crate) fn new(range: RangeInclusive<u16>, rng: &mut impl rand::RngCore) -> Self {
        let start = *range.start();
        let mut ports: Vec<u16> = range.collect();
        for i in (1..ports.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            ports.swap(i, j);
        }
        Self {
            start,
            is_free: vec![true; ports.len()],
            queue: ports.into(),
        }
    }

    fn index(&self, port: u16) -> Option<usize> {
        let i = port.checked_sub(self.start)? as usize;
        (i < self.is_free.len()).then_some(i)
    }

    fn free(&self, port: u16) -> bool {
        self.index(port).is_some_and(|i| self.is_free[i])
    }

    fn mark(&mut self, port: u16, free: bool) {
        if let Some(i) = self.index(port) {
            self.is_free[i] = free;
        }
    }

    pub(crate) fn take(&mut self) -> Option<u16> {
        while let Some(p) = self.queue.pop_front() {
            if self.free(p) {
                self.mark(p, false);
                return Some(p);
            }
        }
        None
    }

    /// An even port (EVEN-PORT with R=0).
    pub(crate) fn take_even(&mut self) -> Option<u16> {
        let i = self
            .queue
            .iter()
            .position(|&p| p % 2 == 0 && self.free(p))?;
        let p = self.queue.remove(i)?;
        self.mark(p, false);
        Some(p)
    }

    /// An even port whose successor is free too; both are taken (EVEN-PORT with R=1).
    pub(crate) fn take_pair(&mut self) -> Option<u16> {
        let i = self
            .queue
            .iter()
            .position(|&p| p % 2 == 0 && p < u16::MAX && self.free(p) && self.free(p + 1))?;
        let p = self.queue.remove(i)?;
        self.mark(p, false);
        self.mark(p + 1, false);
        Some(p)
    }

    pub(crate) fn give(&mut self, port: u16) {
        if self.index(port).is_some() && !self.free(port) {
            self.mark(port, true);
            self.queue.push_back(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn takes_every_port_once_and_gives_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pool = PortPool::new(100..=109, &mut rng);
        let mut got: Vec<u16> = std::iter::from_fn(|| pool.take()).collect();
        got.sort();
        assert_eq!(got, (100..=109).collect::<Vec<_>>());
        pool.give(105);
        pool.give(105);
        assert_eq!(pool.take(), Some(105));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn pairs_are_even_and_consecutive() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut pool = PortPool::new(100..=103, &mut rng);
        let p = pool.take_pair().unwrap();
        assert_eq!(p % 2, 0);
        let rest: Vec<u16> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(rest.len(), 2);
        assert!(!rest.contains(&p) && !rest.contains(&(p + 1)));
        assert_eq!(pool.take_pair(), None);
        assert_eq!(pool.take_even(), None);
    }
}
