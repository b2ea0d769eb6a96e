//! JOIN rate limits whose memory does not depend on who sends.
//!
//! The keys (source addresses, token identities) are chosen by whoever sends, so a table with an
//! entry per key would grow with an attacker's imagination. Instead each limit is a fixed array
//! of [`BUCKETS`] cells, and a key uses the cell its keyed hash (HMAC-SHA256 under a per-process
//! key) points at: 8 bytes per cell, 128 KiB per limit, allocated once. Keys that share a cell
//! share its budget; the hash is keyed, so nobody can pick keys that land on a given victim's
//! cell, and a flood spread over many keys throttles everyone only beyond `BUCKETS` times the
//! per-key rate (16,384 × 5/s = 82k JOINs/s by default, more than the service can verify).
//!
//! Each cell is a GCRA (generic cell rate algorithm) token bucket: one "theoretical arrival
//! time" per cell, in microseconds since the server's start. A JOIN is allowed when that time is
//! at most `burst - 1` intervals ahead of now, and then moves it one interval on.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Cells per limit (a power of two).
pub(crate) const BUCKETS: usize = 1 << 14;

/// A rate: `burst` JOINs at once, then one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRate {
    /// JOINs allowed back to back. At least 1.
    pub burst: u32,
    /// The sustained rate: one JOIN per this interval.
    pub interval: Duration,
}

impl JoinRate {
    /// `burst` at once, then `per_second` a second (at least 1).
    pub const fn per_second(per_second: u32, burst: u32) -> Self {
        let per_second = if per_second == 0 { 1 } else { per_second };
        Self {
            burst,
            interval: Duration::from_micros(1_000_000 / per_second as u64),
        }
    }
}

#[derive(Debug)]
pub(crate) struct RateTable {
    /// Theoretical arrival time of each cell, µs since the server's anchor.
    tat: Box<[u64]>,
    rate: JoinRate,
    /// Keys the cell index; one per table, so the two tables' collisions are independent.
    mac: Hmac<Sha256>,
}

impl RateTable {
    pub(crate) fn new(rate: JoinRate, key: &[u8; 32]) -> Self {
        Self {
            tat: vec![0; BUCKETS].into_boxed_slice(),
            rate,
            mac: Hmac::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    /// Counts one JOIN for the key made of `parts`, at `now_us`: whether it is within the rate.
    pub(crate) fn allow(&mut self, parts: &[&[u8]], now_us: u64) -> bool {
        let mut mac = self.mac.clone();
        for p in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") are different keys.
            mac.update(&(p.len() as u32).to_be_bytes());
            mac.update(p);
        }
        let digest = mac.finalize().into_bytes();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        let cell = &mut self.tat[(u64::from_be_bytes(head) as usize) & (BUCKETS - 1)];
        let interval = u64::try_from(self.rate.interval.as_micros()).unwrap_or(u64::MAX);
        let tolerance = interval.saturating_mul(u64::from(self.rate.burst.max(1) - 1));
        let tat = (*cell).max(now_us);
        if tat - now_us > tolerance {
            return false;
        }
        *cell = tat.saturating_add(interval);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate_per_key() {
        let mut t = RateTable::new(JoinRate::per_second(5, 3), &[7; 32]);
        let a: &[&[u8]] = &[b"a"];
        let ms = |n: u64| n * 1_000;
        assert!((0..3).all(|_| t.allow(a, ms(1_000))));
        assert!(!t.allow(a, ms(1_000)));
        // Another key has its own budget (a collision is 1 in 16,384).
        assert!(t.allow(&[b"b"], ms(1_000)));
        // One interval later, one more.
        assert!(!t.allow(a, ms(1_199)));
        assert!(t.allow(a, ms(1_200)));
        assert!(!t.allow(a, ms(1_200)));
        // After a long silence, the whole burst again and no more.
        assert_eq!((0..10).filter(|_| t.allow(a, ms(60_000))).count(), 3);
        // Rates finer than a millisecond count too.
        let mut fast = RateTable::new(JoinRate::per_second(4_000, 1), &[7; 32]);
        assert!(fast.allow(a, 0));
        assert!(!fast.allow(a, 249));
        assert!(fast.allow(a, 250));
    }
}
