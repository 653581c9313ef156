//! CrashLoopBackOff: restarts wait 10 s, doubling to 300 s; a container that ran for ten
//! minutes starts over. The first restart is immediate, as on a kubelet.
use serde::{Deserialize, Serialize};

pub const INITIAL_SECS: i64 = 10;
pub const MAX_SECS: i64 = 300;
pub const RESET_AFTER_SECS: i64 = 600;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Backoff {
    /// The delay that applies to the next restart (0 = none yet).
    pub delay_secs: i64,
}

impl Backoff {
    /// A container that ran from `started` to `finished` (ns) exited: when may it restart?
    /// Returns the earliest restart time in ns and advances the delay.
    pub fn next_restart(&mut self, started_ns: i64, finished_ns: i64) -> i64 {
        if finished_ns - started_ns >= RESET_AFTER_SECS * 1_000_000_000 {
            self.delay_secs = 0;
        }
        let wait = self.delay_secs;
        self.delay_secs = if self.delay_secs == 0 { INITIAL_SECS } else { (self.delay_secs * 2).min(MAX_SECS) };
        finished_ns + wait * 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let s = 1_000_000_000;
        assert_eq!(b.next_restart(0, s), s, "first restart is immediate");
        let waits: Vec<i64> = (0..7).map(|_| (b.next_restart(0, s) - s) / 1_000_000_000).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.next_restart(0, 700 * s), 700 * s, "ran 10 minutes: reset");
    }
}
