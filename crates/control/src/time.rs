//! Wall-clock helpers. The store and the pure modules take `now` as Unix seconds; only the
//! HTTP layer reads the clock ([`now_unix`]). The calendar is the wire vocabulary's.

use std::time::{SystemTime, UNIX_EPOCH};

pub use cloudproxy_api::calendar::{day, day_start, is_day, rfc3339};

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
