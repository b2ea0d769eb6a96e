//! The UTC calendar the API speaks: RFC 3339 dates and `YYYY-MM-DD` days for Unix seconds
//! (proleptic Gregorian), without a clock.

/// `2026-11-29T08:46:43Z` for Unix seconds (proleptic Gregorian calendar, UTC).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `2026-11-29`: the UTC day of Unix seconds (what usage is aggregated by).
pub fn day(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whether `s` is a real `YYYY-MM-DD` day (between 1970 and 9999).
pub fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 {
        return false;
    }
    // The day after the last of the month is the first of the next one.
    let first_next = days_from_civil(
        if m == 12 { y + 1 } else { y },
        if m == 12 { 1 } else { m + 1 },
    );
    let first = days_from_civil(y, m);
    d <= first_next - first
}

/// Unix seconds of 00:00 UTC on a `YYYY-MM-DD` day, if it is one ([`is_day`]).
pub fn day_start(s: &str) -> Option<i64> {
    if !is_day(s) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    Some((days_from_civil(y, m) + d - 1) * 86_400)
}

/// Days since 1970-01-01 of the first of month `m` of year `y`.
fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(day(1_700_000_000), "2023-11-14");
    }

    #[test]
    fn days_validate() {
        for good in ["2026-11-29", "2024-02-29", "1970-01-01", "2026-12-31"] {
            assert!(is_day(good), "{good}");
        }
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-04-31",
            "26-11-29",
            "2026/11/29",
            "2026-11-00",
            "",
        ] {
            assert!(!is_day(bad), "{bad}");
        }
    }
}
