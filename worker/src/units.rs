//! Parsing of human-friendly sizes (`64MiB`) and durations (`10s`) on the command line.

use std::time::Duration;

/// Parses a byte size: a number with an optional unit (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`,
/// `TiB`; case-insensitive).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 =
        num.replace('_', "").parse().map_err(|_| format!("`{s}` is not a size: expected e.g. 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!("unknown size unit `{other}` in `{s}`: use B, KiB, MiB, GiB, KB, MB or GB"));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("size `{s}` is too large"))
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

/// Parses a duration: a number with an optional unit (`ms`, `s`, `m`, `h`; seconds when absent).
/// Fractions are allowed (`1.5s`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration: expected e.g. 10s or 500ms"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{s}`: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration `{s}` is out of range"))
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
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").unwrap_err().contains("unknown size unit"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
