//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation, as upstream's
//! TriggerTimeTracker: the earliest time of the changes (a pod's Ready transition, the
//! service's creation) that a sync of a service's endpoints reflects for the first time. The
//! first sync of a service answers its creation time; a sync that sees no new change answers
//! None (the annotation is then removed). Each controller keeps its own tracker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};

use crate::informer::ObjectKey;

/// The annotation's key.
pub const ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

#[derive(Default)]
struct State {
    pods: HashMap<String, Timestamp>,
    service: Option<Timestamp>,
}

#[derive(Default)]
pub struct TriggerTimes {
    states: Mutex<HashMap<ObjectKey, State>>,
}

/// When the pod's Ready condition last changed.
fn pod_time(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready")?.last_transition_time.as_ref().map(|t| t.0)
}

fn earliest(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl TriggerTimes {
    /// The trigger time to annotate the endpoints of `service` (key `key`) with, given the pods
    /// it selects now; remembers what this sync saw.
    pub fn compute(&self, key: &ObjectKey, service: &Service, pods: &[Arc<Pod>]) -> Option<Timestamp> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let known = states.get(key);
        let mut changed: Option<Timestamp> = None;
        let mut pod_times = HashMap::new();
        for pod in pods {
            let (Some(t), Some(name)) = (pod_time(pod), pod.metadata.name.as_ref()) else { continue };
            pod_times.insert(name.clone(), t);
            if known.and_then(|s| s.pods.get(name)).is_none_or(|last| t > *last) {
                changed = earliest(changed, t);
            }
        }
        let created = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(t) = created {
            if known.and_then(|s| s.service).is_none_or(|last| t > last) {
                changed = earliest(changed, t);
            }
        }
        let was_known = known.is_some();
        states.insert(key.clone(), State { pods: pod_times, service: created });
        if was_known {
            changed
        } else {
            created
        }
    }

    /// Forgets a deleted service.
    pub fn delete(&self, key: &ObjectKey) {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// The annotation's value: RFC 3339 in UTC with as many fractional digits as needed.
pub fn format(t: Timestamp) -> String {
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready_at: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}]}}),
            )
            .expect("pod"),
        )
    }

    #[test]
    fn first_sync_is_the_creation_then_the_earliest_new_change_then_nothing() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "s", "creationTimestamp": "2025-01-01T00:00:00Z"}})).expect("svc");
        let key = (String::new(), "s".to_string());
        let tracker = TriggerTimes::default();
        let t0 = tracker.compute(&key, &svc, &[pod("a", "2025-01-01T00:00:05Z")]);
        assert_eq!(t0.map(format).as_deref(), Some("2025-01-01T00:00:00Z"));
        let pods = [pod("a", "2025-01-01T00:00:05Z"), pod("b", "2025-01-01T00:00:09Z"), pod("c", "2025-01-01T00:00:07.5Z")];
        assert_eq!(tracker.compute(&key, &svc, &pods).map(format).as_deref(), Some("2025-01-01T00:00:07.5Z"));
        assert_eq!(tracker.compute(&key, &svc, &pods), None);
        tracker.delete(&key);
        assert_eq!(tracker.compute(&key, &svc, &pods).map(format).as_deref(), Some("2025-01-01T00:00:00Z"));
    }
}
