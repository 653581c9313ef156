//! Wall-clock time as the node and the runtime record it (Unix nanoseconds).

/// Unix time now in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
