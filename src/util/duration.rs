//! Durations in Go's grammar (time.ParseDuration), as kubelet flags and config files write
//! them: a sequence of decimal numbers, each with an optional fraction and a unit, like "300ms",
//! "1.5h", "2h45m", "1m30s"; units ns, us (µs), ms, s, m, h; "0" alone needs no unit. Parsed by
//! the one parser of the grammar (`berth_names::duration`); negative durations are refused
//! (nothing here wants one).
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time: invalid duration {0:?}")]
pub struct DurationError(pub String);

/// A duration that is not negative (the grammar is berth_names::duration's).
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(s.to_string());
    let nanos = berth_names::duration::parse_nanos(s).map_err(|_| bad())?;
    let nanos = u64::try_from(nanos).map_err(|_| bad())?;
    Ok(Duration::from_nanos(nanos))
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
