//! Which pods a controller gives up first when it scales down, upstream's ActivePodsWithRanks
//! order: not yet on a node, then Pending before Unknown before Running, not ready before
//! ready, a lower `controller.kubernetes.io/pod-deletion-cost` first, more pods of the same
//! owner on the pod's node first, ready for less time first, more restarts first, newer first.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::{max_restarts, phase, ready_since};

pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn node(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn cost(pod: &Pod) -> i64 {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(DELETION_COST)).and_then(|v| v.parse::<i32>().ok()).map(i64::from).unwrap_or(0)
}

/// `pods` in the order they are deleted (first to go first). `related` are all the owner's
/// active pods, which count toward how crowded each node is.
pub fn deletion_order(mut pods: Vec<Arc<Pod>>, related: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        let n = node(p);
        if !n.is_empty() {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &Pod| if node(p).is_empty() { 0 } else { per_node.get(node(p)).copied().unwrap_or(0) };
    pods.sort_by(|a, b| {
        let (a, b) = (a.as_ref(), b.as_ref());
        node(a)
            .is_empty()
            .cmp(&node(b).is_empty())
            .reverse()
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| ready_since(a).is_some().cmp(&ready_since(b).is_some()))
            .then_with(|| cost(a).cmp(&cost(b)))
            .then_with(|| rank(b).cmp(&rank(a)))
            .then_with(|| newer_first(ready_since(a).flatten(), ready_since(b).flatten()))
            .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
            .then_with(|| newer_first(a.metadata.creation_timestamp.as_ref().map(|t| t.0), b.metadata.creation_timestamp.as_ref().map(|t| t.0)))
    });
    pods
}

/// A missing time first, then the later time first.
fn newer_first(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, ready: Option<&str>, restarts: i32, created: &str) -> Arc<Pod> {
        let conditions = ready.map(|t| json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]));
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {"containers": [], "nodeName": if node.is_empty() { None } else { Some(node) }},
                "status": {"phase": phase, "conditions": conditions, "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": restarts}]}
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn the_least_valuable_pods_go_first() {
        let t = "2026-01-01T00:00:00Z";
        let pods = vec![
            pod("ready-old", "n1", "Running", Some("2026-01-01T00:00:00Z"), 0, t),
            pod("ready-new", "n2", "Running", Some("2026-01-01T01:00:00Z"), 0, t),
            pod("unscheduled", "", "Pending", None, 0, t),
            pod("pending", "n1", "Pending", None, 0, t),
            pod("running-not-ready", "n1", "Running", None, 0, t),
            pod("restarting", "n2", "Running", None, 5, t),
        ];
        let order: Vec<String> = deletion_order(pods.clone(), &pods).iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
        assert_eq!(order, ["unscheduled", "pending", "running-not-ready", "restarting", "ready-old", "ready-new"]);
    }
}
