//! What the workload controllers share, as upstream's pkg/controller: controller references and
//! the claiming of objects by selector (`owner`), expectations that keep a slow watch from
//! causing double creates (`expectations`), creating pods from a template in slow-start batches
//! and deleting them (`pods`), the order in which pods are given up (`ranking`), what the
//! endpoint controllers ask of a service's pods (`service_pods`) and their
//! last-change-trigger-time (`trigger_time`), and the pod states every controller asks about
//! (below).

pub mod expectations;
pub mod history;
pub mod owner;
pub mod pods;
pub mod ranking;
pub mod service_pods;
pub mod trigger_time;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

/// A pod that counts: not finished (Succeeded or Failed) and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The pod's Ready condition: whether it is True, and since when.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's IsPodAvailable).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since.saturating_add(SignedDuration::from_secs(i64::from(min_ready_seconds))).is_ok_and(|t| t <= now),
    }
}

/// When a ready pod becomes available (None: not ready, or already available).
pub fn available_at(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Timestamp> {
    let since = ready_since(pod)??;
    let at = since.saturating_add(SignedDuration::from_secs(i64::from(min_ready_seconds))).ok()?;
    (at > now).then_some(at)
}

/// The most restarts of any of the pod's containers.
pub fn max_restarts(pod: &Pod) -> i32 {
    pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0)).unwrap_or(0)
}
