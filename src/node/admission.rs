//! The node's own admission of pods the cluster binds to it, as the kubelet's: a pod whose
//! requests do not fit what the node has left (allocatable less the requests of the pods it
//! runs) is not run but failed, with upstream's reason (`OutOfcpu`, `OutOfmemory`,
//! `OutOfephemeral-storage`, `OutOf<extended resource>`, `OutOfpods`) and message
//! (`Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 100,
//! capacity: 2000`; cpu in millicores, the rest in units). The scheduler checks the same before
//! binding; this catches pods bound by name (`spec.nodeName`) or by a scheduler working from
//! stale numbers.

use std::collections::BTreeMap;

use berth_control::scheduler::resources::{pod_requests, Resources};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a pod was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

fn short(resource: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    Rejection {
        reason: format!("OutOf{resource}"),
        message: format!("Pod was rejected: Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"),
    }
}

/// Whether `pod` fits beside `running` on a node with `allocatable` (status.allocatable).
pub fn admit(pod: &Pod, running: &[&Pod], allocatable: &BTreeMap<String, Quantity>) -> Result<(), Rejection> {
    let cap = Resources::from_list(Some(allocatable));
    let max_pods = allocatable.get("pods").and_then(|q| berth_names::quantity::Quantity::parse(&q.0).ok()).map(|q| q.value()).unwrap_or(110);
    if running.len() as i64 + 1 > max_pods {
        return Err(short("pods", 1, running.len() as i64, max_pods));
    }
    let want = pod_requests(pod, false);
    let mut used = Resources::default();
    for p in running {
        used.add(&pod_requests(p, false));
    }
    for (name, requested, in_use, capacity) in [
        ("cpu", want.milli_cpu, used.milli_cpu, cap.milli_cpu),
        ("memory", want.memory, used.memory, cap.memory),
        ("ephemeral-storage", want.ephemeral_storage, used.ephemeral_storage, cap.ephemeral_storage),
    ] {
        if requested > 0 && requested > capacity - in_use {
            return Err(short(name, requested, in_use, capacity));
        }
    }
    for (name, requested) in &want.scalar {
        let (in_use, capacity) = (used.scalar.get(name).copied().unwrap_or(0), cap.scalar.get(name).copied().unwrap_or(0));
        if *requested > 0 && *requested > capacity - in_use {
            return Err(short(name, *requested, in_use, capacity));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cpu: &str, memory: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}})).unwrap()
    }

    fn alloc(cpu: &str, memory: &str, pods: &str) -> BTreeMap<String, Quantity> {
        [("cpu", cpu), ("memory", memory), ("pods", pods)].into_iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
    }

    #[test]
    fn pods_that_do_not_fit_are_rejected_with_upstreams_words() {
        let a = alloc("2", "1Gi", "3");
        let small = pod("500m", "100Mi");
        assert_eq!(admit(&small, &[&small, &small], &a), Ok(()));
        let big = pod("1500m", "100Mi");
        let r = admit(&big, &[&small, &small], &a).unwrap_err();
        assert_eq!(r.reason, "OutOfcpu");
        assert_eq!(r.message, "Pod was rejected: Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000");
        let r = admit(&pod("100m", "2Gi"), &[], &a).unwrap_err();
        assert_eq!(r.reason, "OutOfmemory");
        let r = admit(&small, &[&small, &small, &small], &a).unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("OutOfpods", "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3")
        );
    }
}
