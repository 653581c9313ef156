//! A StatefulSet's status from its pods, as upstream counts it: replicas = pods created,
//! readyReplicas / availableReplicas = Running and Ready (for minReadySeconds), current and
//! updated = live pods at the current / update revision. A RollingUpdate is complete when
//! every pod is updated and ready: the update revision becomes the current one.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::identity::revision_of;
use crate::controller;

pub fn running_and_ready(pod: &Pod) -> bool {
    controller::phase(pod) == "Running" && controller::is_ready(pod)
}

pub fn running_and_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    controller::phase(pod) == "Running" && controller::is_available(pod, min_ready, now)
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

pub fn compute(set: &StatefulSet, pods: &[Arc<Pod>], current: &str, update: &str, now: Timestamp) -> StatefulSetStatus {
    let min_ready = set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let (mut replicas, mut ready, mut available, mut at_current, mut at_update) = (0, 0, 0, 0, 0);
    for p in pods {
        replicas += 1;
        if running_and_ready(p) {
            ready += 1;
            if running_and_available(p, min_ready, now) {
                available += 1;
            }
        }
        if p.metadata.deletion_timestamp.is_none() {
            let rev = revision_of(p);
            if rev == Some(current) {
                at_current += 1;
            }
            if rev == Some(update) {
                at_update += 1;
            }
        }
    }
    let before = set.status.clone().unwrap_or_default();
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas,
        ready_replicas: nonzero(ready),
        available_replicas: Some(available),
        current_replicas: nonzero(at_current),
        updated_replicas: nonzero(at_update),
        current_revision: Some(current.to_string()),
        update_revision: Some(update.to_string()),
        collision_count: before.collision_count,
        conditions: before.conditions,
    };
    let rolling = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling && at_update == replicas && ready == replicas {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
    status
}
