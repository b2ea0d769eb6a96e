//! Bandwidth estimation and reservation decisions, without I/O.
//!
//! An enablement request needs `max_proxy_users_per_channel × max_concurrent_channels ×
//! tier bitrate` ([`QualityTier::kbps_per_proxy_user`]). Approval reserves that much of the
//! region's static-pool capacity: the sum of the capacities of the region's static relays,
//! less what approved, active and suspended requests already hold. The store makes the
//! read-decide-write atomic (see `store::requests`); this module only decides.

use crate::model::{QualityTier, Region};

/// The bandwidth an enablement request needs, in kbit/s; `None` on overflow (the validation
/// limits keep real requests far below it).
pub fn estimate_kbps(
    proxy_users_per_channel: u64,
    channels: u64,
    tier: QualityTier,
) -> Option<u64> {
    proxy_users_per_channel
        .checked_mul(channels)?
        .checked_mul(tier.kbps_per_proxy_user())
}

/// A region's static-pool capacity and what is reserved of it, in kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLoad {
    /// The sum of the region's static relays' declared capacity.
    pub capacity_kbps: u64,
    /// The bandwidth approved requests hold in the region.
    pub reserved_kbps: u64,
}

impl RegionLoad {
    /// What is left to reserve (zero when capacity shrank below the reservations).
    pub fn available_kbps(&self) -> u64 {
        self.capacity_kbps.saturating_sub(self.reserved_kbps)
    }
}

/// The sum of stored kbit/s values, saturating at `u64::MAX` (negative values, which the API
/// never stores, count as 0).
pub fn saturating_sum(values: impl IntoIterator<Item = i64>) -> u64 {
    values
        .into_iter()
        .fold(0u64, |acc, v| acc.saturating_add(v.max(0) as u64))
}

/// The outcome of trying to reserve a request's bandwidth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It fits: reserve this many kbit/s.
    Reserve(u64),
    /// It does not fit; the text says why, with the numbers.
    Reject(String),
}

/// Decides whether `need_kbps` fits into `region`'s `load`.
pub fn decide(region: Region, need_kbps: u64, load: RegionLoad) -> Decision {
    let available = load.available_kbps();
    if need_kbps <= available {
        return Decision::Reserve(need_kbps);
    }
    let reason = if load.capacity_kbps == 0 {
        format!(
            "insufficient capacity: region {} has no static-pool relay capacity; the request \
             needs {need_kbps} kbit/s",
            region.as_str()
        )
    } else {
        format!(
            "insufficient capacity: the request needs {need_kbps} kbit/s but only {available} of \
             {} kbit/s of static-pool capacity in region {} is unreserved",
            load.capacity_kbps,
            region.as_str()
        )
    };
    Decision::Reject(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_multiplies_users_channels_and_tier() {
        assert_eq!(estimate_kbps(4, 10, QualityTier::P720), Some(120_000));
        assert_eq!(estimate_kbps(1, 1, QualityTier::AudioOnly), Some(100));
        assert_eq!(estimate_kbps(u64::MAX, 2, QualityTier::AudioOnly), None);
    }

    #[test]
    fn sums_saturate() {
        assert_eq!(saturating_sum([i64::MAX, i64::MAX, 5]), u64::MAX);
        assert_eq!(saturating_sum([i64::MAX, 1]), i64::MAX as u64 + 1);
        assert_eq!(saturating_sum([3, -7, 4]), 7);
        assert_eq!(saturating_sum([]), 0);
    }

    fn load(capacity_kbps: u64, reserved_kbps: u64) -> RegionLoad {
        RegionLoad {
            capacity_kbps,
            reserved_kbps,
        }
    }

    /// The reason `decide` rejects with; a panic when it reserves instead.
    fn rejection(region: Region, need_kbps: u64, load: RegionLoad) -> String {
        match decide(region, need_kbps, load) {
            Decision::Reject(reason) => reason,
            other => panic!("{need_kbps} kbit/s must not fit into {load:?}: {other:?}"),
        }
    }

    #[test]
    fn decide_reserves_up_to_exactly_the_capacity() {
        let load = load(1_000, 400);
        assert_eq!(decide(Region::Japan, 600, load), Decision::Reserve(600));
        let reason = rejection(Region::Japan, 601, load);
        assert!(reason.contains("insufficient capacity"), "{reason}");
        assert!(
            reason.contains("601") && reason.contains("600 of 1000"),
            "{reason}"
        );
        assert!(reason.contains("japan"), "{reason}");
    }

    #[test]
    fn decide_explains_an_empty_region() {
        let reason = rejection(Region::India, 1, load(0, 0));
        assert!(reason.contains("no static-pool relay capacity"), "{reason}");
    }

    #[test]
    fn over_reserved_regions_have_nothing_available() {
        let load = load(100, 150);
        assert_eq!(load.available_kbps(), 0);
        rejection(Region::Europe, 1, load);
        assert_eq!(decide(Region::Europe, 0, load), Decision::Reserve(0));
    }
}
