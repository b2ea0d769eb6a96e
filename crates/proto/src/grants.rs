//! What an allocation grants toward peers: its permissions (RFC 8656 §9) and channel bindings (§12).
//!
//! An allocation holds a handful of each, and they are looked up on every relayed packet, so
//! they live in small vectors scanned linearly: for a few entries that is faster than hashing
//! (profiling showed SipHash dominating the per-packet cost) and needs no hasher keyed against
//! attackers, since only the authenticated owner of the allocation adds entries. Each table is
//! capped at [`MAX_ENTRIES`] so a scan stays short.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Permissions or channels one allocation may hold; beyond it, 508 Insufficient Capacity.
pub const MAX_ENTRIES: usize = 128;

#[derive(Debug, Default)]
pub(crate) struct Permissions(Vec<(IpAddr, Instant)>);

impl Permissions {
    /// Whether data from/to `ip` may be relayed at `now`.
    #[inline]
    pub(crate) fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        self.0.iter().any(|&(p, until)| p == ip && until > now)
    }

    /// Installs or refreshes; `false` if the table is full.
    pub(crate) fn install(&mut self, ip: IpAddr, until: Instant) -> bool {
        if let Some(e) = self.0.iter_mut().find(|(p, _)| *p == ip) {
            e.1 = until;
            return true;
        }
        if self.0.len() >= MAX_ENTRIES {
            return false;
        }
        first_exact(&mut self.0);
        self.0.push((ip, until));
        true
    }

    /// Whether installing all of `ips` fits.
    pub(crate) fn fits(&self, ips: &[IpAddr]) -> bool {
        let new = ips
            .iter()
            .filter(|ip| !self.0.iter().any(|(p, _)| p == *ip))
            .count();
        self.0.len() + new <= MAX_ENTRIES
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        self.0.retain(|&(_, until)| until > now);
    }

    /// Until when data from/to `ip` may be relayed.
    pub(crate) fn until(&self, ip: IpAddr) -> Option<Instant> {
        self.0.iter().find(|(p, _)| *p == ip).map(|&(_, t)| t)
    }

    /// Removes the permissions of every `ip` for which `denied` holds; returns how many.
    pub(crate) fn revoke(&mut self, denied: impl Fn(IpAddr) -> bool) -> usize {
        let before = self.0.len();
        self.0.retain(|&(ip, _)| !denied(ip));
        before - self.0.len()
    }

    pub(crate) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.0.iter().map(|&(_, t)| t)
    }
}

/// A channel binding: number ↔ peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelBinding {
    pub number: u16,
    pub peer: SocketAddr,
    /// Until when data flows on it.
    pub expires: Instant,
    /// Until when the number and the peer stay reserved (§12: 5 minutes after expiry).
    pub reserved_until: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Channels(Vec<ChannelBinding>);

impl Channels {
    #[inline]
    pub(crate) fn by_number(&self, number: u16) -> Option<&ChannelBinding> {
        self.0.iter().find(|c| c.number == number)
    }

    #[inline]
    pub(crate) fn by_peer(&self, peer: SocketAddr) -> Option<&ChannelBinding> {
        self.0.iter().find(|c| c.peer == peer)
    }

    /// Binds or refreshes (the caller checked number and peer belong together); `false` if the
    /// table is full.
    pub(crate) fn bind(&mut self, binding: ChannelBinding) -> bool {
        if let Some(c) = self.0.iter_mut().find(|c| c.number == binding.number) {
            *c = binding;
            return true;
        }
        if self.0.len() >= MAX_ENTRIES {
            return false;
        }
        first_exact(&mut self.0);
        self.0.push(binding);
        true
    }

    /// Ends, as of `now`, the live bindings toward every peer for which `denied` holds; their
    /// numbers stay reserved until the cooldown is over. Calls `stopped` with each.
    pub(crate) fn stop(
        &mut self,
        denied: impl Fn(SocketAddr) -> bool,
        now: Instant,
        mut stopped: impl FnMut(&ChannelBinding),
    ) -> usize {
        let mut n = 0;
        for c in self
            .0
            .iter_mut()
            .filter(|c| c.expires > now && denied(c.peer))
        {
            c.expires = now;
            stopped(c);
            n += 1;
        }
        n
    }

    /// Forgets bindings whose reservation is over, calling `forgotten` with each.
    pub(crate) fn expire(&mut self, now: Instant, mut forgotten: impl FnMut(&ChannelBinding)) {
        self.0.retain(|c| {
            let keep = c.reserved_until > now;
            if !keep {
                forgotten(c);
            }
            keep
        });
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ChannelBinding> + '_ {
        self.0.iter()
    }

    pub(crate) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.0.iter().map(|c| c.reserved_until)
    }
}

/// Most allocations have one peer: the first entry gets room for exactly one (a `Vec` would
/// reserve four), which keeps an idle allocation's memory small; later ones grow as usual.
fn first_exact<T>(v: &mut Vec<T>) {
    if v.capacity() == 0 {
        v.reserve_exact(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_entry_reserves_room_for_one_then_growth_is_as_usual() {
        let now = Instant::now();
        let mut p = Permissions::default();
        assert!(p.install("192.0.2.1".parse().unwrap(), now));
        assert_eq!(
            p.0.capacity(),
            1,
            "an idle allocation's one peer costs one entry"
        );
        assert!(p.install("192.0.2.2".parse().unwrap(), now));
        assert!(p.0.capacity() >= 2);
        assert!(p.allows(
            "192.0.2.1".parse().unwrap(),
            now - std::time::Duration::from_secs(1)
        ));
    }
}
