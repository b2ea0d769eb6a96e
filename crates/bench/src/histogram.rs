//! A log-bucketed latency histogram in the manner of HdrHistogram: 128 linear sub-buckets per
//! power of two, so a quantile is within 1/128 (< 0.8%) of the true value, from 1 ns to
//! 2^40 ns (18 minutes) in 4,352 counters (34 KiB). Recording is an index computation and an
//! increment: no allocation, no floating point.
//!
//! Written here rather than taken from the `hdrhistogram` crate: the generator needs only
//! record, merge and quantile, in about a hundred lines, and one dependency fewer.

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
const MAX_EXP: u32 = 40;
const LEN: usize = (MAX_EXP - SUB_BITS + 1) as usize * SUB;

/// Counts of values (nanoseconds) in logarithmic buckets.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; LEN].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    let v = v.min((1 << MAX_EXP) - 1);
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let shift = exp - SUB_BITS;
    (shift as usize + 1) * SUB + ((v >> shift) as usize & (SUB - 1))
}

/// The lowest value of bucket `i` and the bucket's width.
fn bucket(i: usize) -> (u64, u64) {
    let (k, sub) = (i / SUB, (i % SUB) as u64);
    if k == 0 {
        return (sub, 1);
    }
    let shift = k as u32 - 1;
    ((SUB as u64 + sub) << shift, 1 << shift)
}

impl Histogram {
    /// Counts one value, in nanoseconds; values past 2^40 ns count in the top bucket (the
    /// exact maximum is kept apart).
    pub fn record(&mut self, value: u64) {
        self.counts[index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds another histogram's counts (a worker thread's, into the run's total).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded, exactly; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding it, never above the
    /// largest value recorded (which is exact for the top rank). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        if rank >= self.total {
            return Some(self.max);
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket(i);
                return Some((low + width / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut expect_low = 0;
        for i in 0..LEN {
            let (low, width) = bucket(i);
            assert_eq!(low, expect_low, "bucket {i}");
            assert_eq!(index(low), i);
            assert_eq!(index(low + width - 1), i);
            expect_low = low + width;
        }
        assert_eq!(index(u64::MAX), LEN - 1);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, want) in [
            (0.5, 50_000_000.0),
            (0.99, 99_000_000.0),
            (0.999, 99_900_000.0),
        ] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Some(100_000_000));
        let mut other = Histogram::default();
        other.record(5);
        h.merge(&other);
        assert_eq!(h.count(), 100_001);
        assert_eq!(h.quantile(0.0), Some(5));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
