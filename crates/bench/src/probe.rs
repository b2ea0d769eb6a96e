//! The probe header at the start of every ChannelData payload, and duplicate detection.
//!
//! ```text
//!  0      2      4             8                      16                     24
//!  +------+------+-------------+----------------------+----------------------+---------
//!  |magic | step | allocation  | sequence number      | send time, ns        | filler…
//!  +------+------+-------------+----------------------+----------------------+---------
//! ```
//!
//! The echo peer returns the payload unchanged, so the generator learns from the packet alone
//! which allocation and step it belongs to (a packet delivered to the wrong client is caught),
//! and its round-trip time. Times are nanoseconds since the Unix epoch (CLOCK_REALTIME), the
//! clock of the kernel's receive timestamps (`SO_TIMESTAMPNS`) they are compared with.

/// Bytes of the header; the smallest payload.
pub const HEADER_LEN: usize = 24;
const MAGIC: u16 = 0xCB7E;

/// The fields of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The step that sent it (0 for a fixed-rate run; below [`crate::control::MAX_STEPS`]).
    pub step: u16,
    /// The index of the allocation that sent it, so a packet delivered to another
    /// allocation's socket is caught.
    pub allocation: u32,
    /// Per-allocation sequence number, from 0, for duplicate detection.
    pub seq: u64,
    /// When it was sent: nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub sent_ns: u64,
}

impl Probe {
    /// Writes the header into `payload[..HEADER_LEN]`.
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        payload[2..4].copy_from_slice(&self.step.to_be_bytes());
        payload[4..8].copy_from_slice(&self.allocation.to_be_bytes());
        payload[8..16].copy_from_slice(&self.seq.to_be_bytes());
        payload[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a header; `None` if the payload is too short or not ours.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let h = payload.get(..HEADER_LEN)?;
        if u16::from_be_bytes([h[0], h[1]]) != MAGIC {
            return None;
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Some(Self {
            step: u16::from_be_bytes([h[2], h[3]]),
            allocation: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

/// Which sequence numbers of one allocation arrived, over a sliding window of 128 behind the
/// highest: enough to tell a duplicate from a late packet without per-packet memory.
#[derive(Debug, Clone, Default)]
pub struct SeqWindow {
    highest: Option<u64>,
    /// Bit `i` set: `highest - i` has arrived.
    seen: u128,
}

impl SeqWindow {
    /// Records `seq`; `false` if it is a duplicate. A number more than 128 behind the highest
    /// cannot be checked and counts as new.
    pub fn accept(&mut self, seq: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.seen = 1;
            return true;
        };
        if seq > highest {
            let shift = seq - highest;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = Some(seq);
            return true;
        }
        let behind = highest - seq;
        if behind >= 128 {
            return true;
        }
        let bit = 1u128 << behind;
        let new = self.seen & bit == 0;
        self.seen |= bit;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips_and_rejects_foreign_bytes() {
        let p = Probe {
            step: 3,
            allocation: 70_000,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let mut buf = [0u8; 40];
        p.write(&mut buf);
        assert_eq!(Probe::read(&buf), Some(p));
        assert_eq!(Probe::read(&buf[..10]), None);
        buf[0] ^= 1;
        assert_eq!(Probe::read(&buf), None);
    }

    #[test]
    fn window_tells_duplicates_from_reordering() {
        let mut w = SeqWindow::default();
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(7));
        assert!(w.accept(6), "late but new");
        assert!(!w.accept(6));
        assert!(w.accept(500));
        assert!(!w.accept(500));
        assert!(w.accept(7), "too old to check: counted as new");
        assert!(w.accept(400));
        assert!(!w.accept(400));
    }
}
