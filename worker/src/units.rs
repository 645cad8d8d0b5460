//! Parsing of human-friendly sizes (`64MiB`), counts (`1e12`) and durations (`10s`, `1h 30m`) on
//! the command line and in config files.
//!
//! Sizes are `bytesize`'s grammar and durations `humantime`'s (well kept, and wider than the
//! hand-written parsers they replaced: `1.5 GiB`, `1h 30m`, `2days`); a bare number of seconds
//! (`30`, `1.5`) stays accepted, as config files have always allowed. Counts have no crate that
//! reads `2.5e9` as a whole number, so that parser stays here. Errors say what was expected.

use std::time::Duration;

/// Parses a byte size: a number with an optional unit (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`,
/// `TiB`, …; case-insensitive, a space allowed), as `bytesize` reads it.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("`{s}` is not a size ({e}): expected e.g. 64MiB, 1.5GiB or 2MB"))
}

/// Parses a count: digits with optional `_` separators (`1_000_000`) or a power of ten (`1e12`,
/// `2.5e9`), which must be a whole number.
pub(crate) fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let bad = || format!("`{s}` is not a count: expected e.g. 1000000 or 1e12");
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let (mantissa, exponent) = t.split_once(['e', 'E']).ok_or_else(bad)?;
    let exponent: u32 = exponent.parse().map_err(|_| bad())?;
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{frac}");
    let shift = exponent.checked_sub(u32::try_from(frac.len()).map_err(|_| bad())?).ok_or_else(bad)?;
    let n: u64 = digits.parse().map_err(|_| bad())?;
    10u64.checked_pow(shift).and_then(|p| n.checked_mul(p)).ok_or_else(|| format!("count `{s}` is too large"))
}

/// Parses a duration: `humantime`'s grammar (`10s`, `500ms`, `2m`, `1h 30m`, `2days`), or a bare
/// number of seconds (`30`, `1.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("duration `{s}` is out of range"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}): expected e.g. 10s, 500ms or 1h 30m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert_eq!(parse_count("1e12"), Ok(1_000_000_000_000));
        assert_eq!(parse_count("2.5e9"), Ok(2_500_000_000));
        assert!(parse_count("2.55e1").is_err(), "not whole");
        assert!(parse_count("1e30").unwrap_err().contains("too large"));
        assert!(parse_count("lots").unwrap_err().contains("not a count"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("64_000"), Ok(64_000));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("5XB").unwrap_err().contains("not a size"));
        assert!(parse_size("-1MiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
