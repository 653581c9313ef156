//! Durations in Go's grammar (`time.ParseDuration`), as Kubernetes flags, config files and
//! CronJob `@every` schedules write them: decimal numbers, each with an optional fraction and a
//! unit (ns, us/µs, ms, s, m, h), like "300ms", "1.5h", "2h45m"; an optional sign; "0" alone
//! needs no unit. The one parser of this grammar: the node's flags and the CronJob schedules
//! both call it. [`format_nanos`] writes a duration as Go's `Duration.String()` does (what the
//! API serves in `metav1.Duration` fields).

/// Why a duration was refused, in Go's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {text:?}")]
    UnknownUnit { unit: String, text: String },
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`, in nanoseconds;
/// the error says what Go's does.
pub fn parse_nanos(text: &str) -> Result<i64, DurationError> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || DurationError::Invalid(text.to_string());
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (whole_digits, after) = split_digits(rest);
        let whole = go_whole(whole_digits).ok_or_else(invalid)?;
        let (fraction_digits, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if whole_digits.is_empty() && fraction_digits.is_empty() {
            // No digits on either side of an optional '.', as in ".s" or "h".
            return Err(invalid());
        }
        let unit_len = after.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(text.to_string()));
        }
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u64 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::UnknownUnit { unit: unit.to_string(), text: text.to_string() }),
        };
        if whole > LIMIT / unit_nanos {
            return Err(invalid());
        }
        let value = whole * unit_nanos + go_fraction(fraction_digits, unit_nanos);
        total = total.checked_add(value).filter(|total| value <= LIMIT && *total <= LIMIT).ok_or_else(invalid)?;
        rest = after;
    }
    if negative {
        Ok(0i64.wrapping_sub_unsigned(total))
    } else {
        i64::try_from(total).map_err(|_| invalid())
    }
}

/// The number `digits` spell, or `None` past 2^63 (Go's limit before the sign is applied).
fn go_whole(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |value, digit| value.checked_mul(10)?.checked_add(u64::from(digit - b'0')).filter(|value| *value <= 1 << 63))
}

/// The nanoseconds a fraction's digits add to one unit, computed as Go does: digits accumulate
/// until they would overflow (the rest are ignored), then `digits * (unit / 10^count)` in `f64`.
fn go_fraction(digits: &str, unit_nanos: u64) -> u64 {
    let (mut value, mut scale) = (0u64, 1f64);
    for digit in digits.bytes() {
        if value > (u64::MAX >> 1) / 10 {
            break;
        }
        let next = value * 10 + u64::from(digit - b'0');
        if next > 1 << 63 {
            break;
        }
        (value, scale) = (next, scale * 10.0);
    }
    (value as f64 * (unit_nanos as f64 / scale)) as u64
}

/// Go's `Duration.String()`: "0s", "250ms", "1.5µs", "15.002s", "2m0.5s", "1h0m0s".
pub fn format_nanos(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let n = ns.unsigned_abs();
    if n == 0 {
        return "0s".into();
    }
    // a whole part and up to `digits` fractional digits, trailing zeros dropped
    let decimal = |whole: u64, fraction: u64, digits: usize| {
        let f = format!("{fraction:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{f}")
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", decimal(n / 1_000, n % 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", decimal(n / 1_000_000, n % 1_000_000, 6));
    }
    let secs = decimal((n / 1_000_000_000) % 60, n % 1_000_000_000, 9);
    let minutes = n / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// Splits `text` into its leading ASCII digits and the rest.
fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_grammar_signs_and_messages() {
        assert_eq!(parse_nanos("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_nanos("-1.5h"), Ok(-5_400_000_000_000));
        assert_eq!(parse_nanos("0"), Ok(0));
        assert_eq!(parse_nanos("10").unwrap_err().to_string(), r#"time: missing unit in duration "10""#);
        assert_eq!(parse_nanos("1x").unwrap_err().to_string(), r#"time: unknown unit "x" in duration "1x""#);
        assert_eq!(parse_nanos("9999999999h").unwrap_err().to_string(), r#"time: invalid duration "9999999999h""#);
    }

    #[test]
    fn formats_as_go_prints() {
        assert_eq!(format_nanos(0), "0s");
        assert_eq!(format_nanos(999), "999ns");
        assert_eq!(format_nanos(1_500), "1.5µs");
        assert_eq!(format_nanos(250_000_000), "250ms");
        assert_eq!(format_nanos(15_002_000_000), "15.002s");
        assert_eq!(format_nanos(60_000_000_000), "1m0s");
        assert_eq!(format_nanos(120_500_000_000), "2m0.5s");
        assert_eq!(format_nanos(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_nanos(-1_000_000_000), "-1s");
        for text in ["1h2m3.004s", "15.123456789s", "1.5ms"] {
            assert_eq!(format_nanos(parse_nanos(text).unwrap_or_default()), text);
        }
    }
}
