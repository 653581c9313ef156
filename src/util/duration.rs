//! Durations in Go's grammar (time.ParseDuration), as kubelet flags and config files write
//! them: a sequence of decimal numbers, each with an optional fraction and a unit, like "300ms",
//! "1.5h", "2h45m", "1m30s"; units ns, us (µs), ms, s, m, h; "0" alone needs no unit. The one
//! duration parser of the code base. Negative durations are refused (nothing here wants one).
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time: invalid duration {0:?}")]
pub struct DurationError(pub String);

pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(s.to_string());
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(end)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
        let mut ns = whole.checked_mul(unit_ns).ok_or_else(bad)?;
        // The fraction, exactly: digits / 10^len of the unit, truncated to nanoseconds.
        let mut scale = unit_ns;
        for d in frac.bytes().take(30) {
            scale /= 10;
            ns += (d - b'0') as u128 * scale;
        }
        total_ns = total_ns.checked_add(ns).ok_or_else(bad)?;
        rest = next;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_grammar() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse("300us"), Ok(Duration::from_micros(300)));
        assert_eq!(parse("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1h0m0s"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5", "5 minutes", "1d", "-1s", "1.s.", ".s", "s", "1m30"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse("10x").unwrap_err().to_string(), "time: invalid duration \"10x\"");
    }
}
