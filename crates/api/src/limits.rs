//! The range of every number the API takes, and why nothing the control plane adds up can
//! overflow.
//!
//! Every number in a body or query is checked against its range here, and a value outside it
//! is a 400 naming the field and the range ([`check`]). The ranges are far above anything a
//! real relay or app produces, and small enough that the sums the control plane keeps fit a
//! signed 64-bit integer (`INTEGER` in SQLite, `BIGINT` in PostgreSQL) with room to spare:
//!
//! | number | largest accepted | why |
//! |---|---|---|
//! | `capacity_kbps`, heartbeat `load_kbps` | 10⁹ (1 Tbit/s) | one relay host; ours tops out near 10 Gbit/s |
//! | heartbeat `allocations`, usage `peak_concurrency` | 10⁷ | a relay has at most ~64 K relayed ports per address |
//! | usage `seconds` per record | 10⁷ × 86 400 = 8.64 × 10¹¹ | 10⁷ allocations for a whole day |
//! | usage `bytes` per record | 12.5 × 10⁹ B/s × 86 400 s = 1.08 × 10¹⁵ | 100 Gbit/s for a whole day |
//! | timestamps (`effective_at`) | 253 402 300 799 (9999-12-31T23:59:59Z) | what dates render |
//!
//! **Sums.** A region's capacity is the sum over its static relays: i64::MAX / 10⁹ ≈ 9.2 × 10⁹
//! relays before it could overflow, and it is added up with saturating arithmetic anyway
//! (the control plane's `RegionLoad::add`), never by SQL `SUM` (SQLite's raises "integer overflow" past i64,
//! PostgreSQL's returns a `numeric` that fails the cast back to `BIGINT`).
//!
//! **Usage** accumulates per (app, day, mode, tier) row. One row holds one day, so it never
//! sums more than a day of traffic: i64::MAX bytes in a day is 1.07 × 10¹⁴ B/s ≈ 854 Tbit/s
//! for one app, or 8 540 relays each at the 100 Gbit/s per-record maximum all day. A century
//! is 36 525 such rows, each in its own row, so no stored value grows with time. The addition
//! in SQL saturates at i64::MAX (the control plane's `saturating_add_sql`) instead of turning into a `REAL`
//! (SQLite) or failing with "bigint out of range" (PostgreSQL, which would wedge the relay's
//! report queue behind one report that can never apply). Nothing adds days up: the usage API
//! returns one row per day.

use crate::error::FieldError;

/// The most a relay may declare it carries, kbit/s (1 Tbit/s); also the most a heartbeat may
/// report.
pub const MAX_CAPACITY_KBPS: u64 = 1_000_000_000;
/// The most allocations a heartbeat, or a usage record's peak, may report.
pub const MAX_ALLOCATIONS: u64 = 10_000_000;
/// Seconds in the longest period one usage record covers: a UTC day.
pub const RECORD_PERIOD_SECS: u64 = 86_400;
/// The most allocation-seconds in one usage record: [`MAX_ALLOCATIONS`] for a whole day.
pub const MAX_RECORD_SECONDS: u64 = MAX_ALLOCATIONS * RECORD_PERIOD_SECS;
/// The most bytes in one usage record: 100 Gbit/s for a whole day.
pub const MAX_RECORD_BYTES: u64 = 100_000_000_000 / 8 * RECORD_PERIOD_SECS;
/// The latest timestamp accepted: 9999-12-31T23:59:59Z.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;
/// The most characters in an owner's or an application's name.
pub const MAX_NAME_CHARS: usize = 100;
/// The most characters in a rejection's reason.
pub const MAX_REASON_CHARS: usize = 500;
/// The most CIDRs one edge may have.
pub const MAX_EDGE_CIDRS: usize = 64;
/// How long the current keys keep working after a rotation when no grace is given: a day.
pub const DEFAULT_GRACE_SECS: i64 = 24 * 3600;
/// The longest rotation grace period: 30 days.
pub const MAX_GRACE_SECS: i64 = 30 * 24 * 3600;

/// `Err` naming `field` and its range when `value` is outside `min..=max`.
pub fn check<T>(field: impl Into<String>, value: T, min: T, max: T) -> Result<(), FieldError>
where
    T: PartialOrd + std::fmt::Display,
{
    if value < min || value > max {
        return Err(FieldError {
            field: field.into(),
            message: format!("must be between {min} and {max}"),
        });
    }
    Ok(())
}

/// Pushes the error of [`check`], if any, onto `errors`.
pub fn check_into<T>(
    errors: &mut Vec<FieldError>,
    field: impl Into<String>,
    value: T,
    min: T,
    max: T,
) where
    T: PartialOrd + std::fmt::Display,
{
    if let Err(e) = check(field, value, min, max) {
        errors.push(e);
    }
}

/// The first character free text (names, use cases, reasons) may not contain, if any:
/// control characters (C0, DEL, C1), which a terminal would obey when `cloudproxy admin`
/// prints the text, and bidirectional overrides and isolates, which make text display in
/// another order than it is stored ("Trojan Source"). HTML characters are allowed: every
/// page escapes them.
pub fn forbidden_char(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// The 400 message for a character [`forbidden_char`] found.
pub fn forbidden_message(c: char) -> String {
    format!(
        "must not contain control characters or bidirectional overrides (found U+{:04X})",
        u32::from(c)
    )
}

#[cfg(test)]
mod text_tests {
    use super::forbidden_char;

    #[test]
    fn controls_and_bidi_overrides_are_forbidden_html_and_cjk_are_not() {
        for bad in [
            "a\u{1b}[31m",
            "\u{7}",
            "x\ny",
            "tab\t",
            "\u{7f}",
            "\u{9b}2J",
            "abc\u{202e}gpj.exe",
        ] {
            assert!(forbidden_char(bad).is_some(), "{bad:?}");
        }
        for good in [
            "<img src=x onerror=alert(1)>",
            "会議アプリ",
            "Acme Meet",
            "é ü ß",
            "🎥",
        ] {
            assert_eq!(forbidden_char(good), None, "{good:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_keep_sums_inside_i64() {
        // A region of a million relays at the maximum still fits without saturating.
        assert!(MAX_CAPACITY_KBPS.checked_mul(1_000_000).unwrap() < i64::MAX as u64);
        // 8 540 relay-days at the per-record byte maximum fit one day's row.
        assert!(MAX_RECORD_BYTES.checked_mul(8_540).unwrap() < i64::MAX as u64);
        assert!(MAX_RECORD_BYTES.checked_mul(8_541).unwrap() > i64::MAX as u64);
        assert_eq!(MAX_RECORD_BYTES, 1_080_000_000_000_000);
        assert_eq!(MAX_RECORD_SECONDS, 864_000_000_000);
        assert_eq!(
            crate::calendar::rfc3339(MAX_UNIX_SECONDS),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn check_names_the_field_and_range() {
        assert!(check("x", 5u64, 0, 5).is_ok());
        let e = check("capacity_kbps", 6u64, 0, 5).unwrap_err();
        assert_eq!(e.field, "capacity_kbps");
        assert_eq!(e.message, "must be between 0 and 5");
        assert!(check("t", -1i64, 0, 9).is_err());
    }
}
