//! Durations on the command line: one spelling for every flag that takes a time.
//!
//! A number with a unit: `1500ms`, `10s`, `2.5s`, `5m`, `1h`, `1d`. A bare number means
//! seconds, so values written before units existed (`--ttl 3600`, `--timeout 4`) keep their
//! meaning. Flags that used to take milliseconds in their name (`--join-timeout-ms 10000`) are
//! kept as hidden aliases that take milliseconds; see `cmd_join`.

use std::time::Duration;

/// Longest accepted duration: about 31 years, far beyond any timeout or lifetime here, and
/// small enough that adding it to a Unix time cannot overflow.
const MAX_SECS: f64 = 1e9;

/// Parses `NUMBER[ms|s|m|h|d]` (bare: seconds). Errors say what is expected.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(expected(s)),
    };
    let value: f64 = number.parse().map_err(|_| expected(s))?;
    let secs = value * scale;
    if !secs.is_finite() || secs > MAX_SECS {
        return Err(format!("{s:?}: too long (at most {MAX_SECS} seconds)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn expected(s: &str) -> String {
    format!(
        "{s:?}: expected a duration such as 1500ms, 10s, 5m, 1h or 1d (a bare number is seconds)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn nonsense_is_refused_with_the_value() {
        for bad in ["", "s", "10x", "-1s", "1e3", "ten", "1.2.3s", "99999999999"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
