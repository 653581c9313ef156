//! The node's own admission of pods the cluster binds to it, as the kubelet's: a pod whose
//! requests do not fit what the node has left (allocatable less the requests of the pods it
//! runs) is not run but failed, with upstream's reason (`OutOfcpu`, `OutOfmemory`,
//! `OutOfephemeral-storage`, `OutOf<extended resource>`, `OutOfpods`) and message
//! (`Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 100,
//! capacity: 2000`; cpu in millicores, the rest in units). Then, with the node's own Node
//! object, the kubelet's other general predicates, each `Pod was rejected: Predicate <name>
//! failed: <why>`: NodeAffinity (nodeSelector and required node affinity against the node's
//! labels), NodeName, NodePorts (host ports the running pods hold) and TaintToleration (a
//! NoExecute taint of the node the pod does not tolerate; static pods are not judged). The
//! scheduler checks the same before binding; this catches pods bound by name (`spec.nodeName`)
//! or by a scheduler working from stale numbers.

use std::collections::BTreeMap;

use berth_control::scheduler::resources::{pod_requests, Resources};
use k8s_openapi::api::core::v1::{Node, Pod};
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

fn predicate(name: &str, why: &str) -> Rejection {
    Rejection { reason: name.to_string(), message: format!("Pod was rejected: Predicate {name} failed: {why}") }
}

/// [`admit`], then the predicates that need the node's own object: node affinity, node name,
/// host ports, NoExecute taints.
pub fn admit_on(pod: &Pod, running: &[&Pod], allocatable: &BTreeMap<String, Quantity>, node: &Node) -> Result<(), Rejection> {
    use berth_control::scheduler::plugins::{node_affinity, node_ports, taint_toleration};
    admit(pod, running, allocatable)?;
    let name = node.metadata.name.as_deref().unwrap_or("");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !node_affinity::pod_matches_node(pod, &labels, name) {
        return Err(predicate("NodeAffinity", "node(s) didn't match Pod's node affinity/selector"));
    }
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty() && n != name) {
        return Err(predicate("NodeName", "node(s) didn't match the requested node name"));
    }
    let held: Vec<_> = running.iter().flat_map(|p| berth_control::scheduler::cache::pod_host_ports(p)).collect();
    if node_ports::clashes(&berth_control::scheduler::cache::pod_host_ports(pod), &held) {
        return Err(predicate(node_ports::NAME, node_ports::REASON));
    }
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let untolerated = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
        .any(|t| !tolerations.iter().any(|tol| taint_toleration::tolerates(tol, t)));
    if untolerated {
        return Err(predicate("TaintToleration", "node(s) had taints that the pod didn't tolerate"));
    }
    Ok(())
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

    #[test]
    fn the_nodes_labels_ports_and_no_execute_taints_are_judged() {
        let a = alloc("4", "4Gi", "10");
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"disktype": "ssd"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}, {"key": "soft", "effect": "NoSchedule"}]}
        }))
        .expect("node");
        let with = |spec: serde_json::Value| -> Pod {
            let mut p = pod("100m", "10Mi");
            let extra: Pod = serde_json::from_value(serde_json::json!({"spec": spec})).expect("pod");
            let s = p.spec.as_mut().expect("spec");
            let e = extra.spec.expect("spec");
            s.node_selector = e.node_selector;
            s.tolerations = e.tolerations;
            s.node_name = e.node_name;
            if let Some(ports) = e.containers.first().and_then(|c| c.ports.clone()) {
                s.containers[0].ports = Some(ports);
            }
            p
        };
        let tolerant = serde_json::json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute"}]);
        let ok = with(serde_json::json!({"containers": [{"name": "c"}], "tolerations": tolerant, "nodeSelector": {"disktype": "ssd"}}));
        assert_eq!(admit_on(&ok, &[], &a, &node), Ok(()));
        let r =
            admit_on(&with(serde_json::json!({"containers": [{"name": "c"}], "tolerations": tolerant, "nodeSelector": {"disktype": "hdd"}})), &[], &a, &node)
                .unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("NodeAffinity", "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector")
        );
        let r = admit_on(&with(serde_json::json!({"containers": [{"name": "c"}]})), &[], &a, &node).unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("TaintToleration", "Pod was rejected: Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate")
        );
        let port = |n: i64| with(serde_json::json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": n}]}], "tolerations": tolerant}));
        let (p1, p2) = (port(8080), port(8080));
        let r = admit_on(&p2, &[&p1], &a, &node).unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("NodePorts", "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports")
        );
        assert_eq!(admit_on(&port(8081), &[&p1], &a, &node), Ok(()));
        let r = admit_on(&with(serde_json::json!({"containers": [{"name": "c"}], "tolerations": tolerant, "nodeName": "n2"})), &[], &a, &node).unwrap_err();
        assert_eq!(r.reason, "NodeName");
    }
}
