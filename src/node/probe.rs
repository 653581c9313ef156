//! Startup, liveness and readiness probes of one container, with the timing fields and
//! thresholds Kubernetes documents: a probe first runs initialDelaySeconds after the
//! container started, then every periodSeconds, each try bounded by timeoutSeconds; it
//! turns to success after successThreshold consecutive successes and to failure after
//! failureThreshold consecutive failures. The startup probe gates the other two.
use super::handler::{self, Target};
use k8s_openapi::api::core::v1::{Container, Probe};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// The probe of that kind a container declares.
pub fn probe_of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

/// Timing with the documented defaults filled in.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial_delay: i64,
    pub period: i64,
    pub timeout: i64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(p: &Probe) -> Timing {
    Timing {
        initial_delay: p.initial_delay_seconds.unwrap_or(0).max(0) as i64,
        period: p.period_seconds.filter(|v| *v > 0).unwrap_or(10) as i64,
        timeout: p.timeout_seconds.filter(|v| *v > 0).unwrap_or(1) as i64,
        success_threshold: p.success_threshold.filter(|v| *v > 0).unwrap_or(1) as u32,
        failure_threshold: p.failure_threshold.filter(|v| *v > 0).unwrap_or(3) as u32,
    }
}

/// Where one probe of one container stands.
#[derive(Debug, Clone, Default)]
pub struct Track {
    pub last_run_ns: i64,
    pub successes: u32,
    pub failures: u32,
    /// None until the thresholds decide.
    pub result: Option<bool>,
    pub last_message: String,
}

impl Track {
    /// Is a try due at `now` for a container that started at `started_ns`?
    pub fn due(&self, t: &Timing, started_ns: i64, now: i64) -> bool {
        const S: i64 = 1_000_000_000;
        if now < started_ns + t.initial_delay * S {
            return false;
        }
        self.last_run_ns == 0 || now >= self.last_run_ns + t.period * S
    }

    /// Record a try; returns true when the result changed.
    pub fn record(&mut self, t: &Timing, now: i64, outcome: &Result<(), String>) -> bool {
        self.last_run_ns = now;
        let before = self.result;
        match outcome {
            Ok(()) => {
                self.successes += 1;
                self.failures = 0;
                if self.successes >= t.success_threshold {
                    self.result = Some(true);
                }
            }
            Err(msg) => {
                self.failures += 1;
                self.successes = 0;
                self.last_message = msg.clone();
                if self.failures >= t.failure_threshold {
                    self.result = Some(false);
                }
            }
        }
        before != self.result
    }
}

/// Run one try of a probe's handler.
pub async fn run(p: &Probe, target: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(timing(p).timeout as u64);
    if let Some(a) = &p.exec {
        handler::exec(a, target, timeout).await
    } else if let Some(a) = &p.http_get {
        handler::http(a, target, timeout).await
    } else if let Some(a) = &p.tcp_socket {
        handler::tcp(a, target, timeout).await
    } else if let Some(a) = &p.grpc {
        handler::grpc(a, target, timeout).await
    } else {
        Err("the probe has no handler".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_timing() {
        let p = Probe { period_seconds: Some(2), initial_delay_seconds: Some(3), success_threshold: Some(2), failure_threshold: Some(2), ..Default::default() };
        let t = timing(&p);
        assert_eq!((t.period, t.timeout, t.initial_delay), (2, 1, 3));
        let s = 1_000_000_000;
        let mut tr = Track::default();
        assert!(!tr.due(&t, 0, 2 * s));
        assert!(tr.due(&t, 0, 3 * s));
        assert!(!tr.record(&t, 3 * s, &Ok(())));
        assert!(!tr.due(&t, 0, 4 * s));
        assert!(tr.record(&t, 5 * s, &Ok(())));
        assert_eq!(tr.result, Some(true));
        assert!(!tr.record(&t, 7 * s, &Err("x".into())));
        assert_eq!(tr.result, Some(true));
        assert!(tr.record(&t, 9 * s, &Err("y".into())));
        assert_eq!(tr.result, Some(false));
        assert_eq!(tr.last_message, "y");
        let d = timing(&Probe::default());
        assert_eq!((d.period, d.timeout, d.success_threshold, d.failure_threshold), (10, 1, 1, 3));
    }
}
