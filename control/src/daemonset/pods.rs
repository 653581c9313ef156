//! Which nodes a DaemonSet runs on, and the pod it runs there, as upstream's daemon utils: a
//! node qualifies when the pod's nodeSelector and required node affinity match it and its
//! NoSchedule/NoExecute taints are tolerated (with the tolerations every daemon pod gets:
//! not-ready and unreachable NoExecute, the pressure and unschedulable NoSchedule taints,
//! network-unavailable for host-network pods). The pod is the template with the revision hash,
//! the template generation, those tolerations and a node affinity for exactly its node (the
//! scheduler binds it).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use crate::controller::{owner, pods::from_template};
use crate::scheduler::plugins::{node_affinity::pod_matches_node, taint_toleration::tolerates};

pub use crate::controller::history::REVISION_HASH;
const TEMPLATE_GENERATION: &str = "pod-template-generation";

/// The tolerations every daemon pod gets (key, effect).
fn automatic(host_network: bool) -> Vec<Toleration> {
    let mut out: Vec<Toleration> = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .iter()
    .map(|(key, effect)| Toleration { key: Some(key.to_string()), operator: Some("Exists".into()), effect: Some(effect.to_string()), ..Default::default() })
    .collect();
    if host_network {
        out.push(Toleration {
            key: Some("node.kubernetes.io/network-unavailable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    out
}

/// The pod of `ds` at revision `hash` for `node`.
pub fn for_node(ds: &DaemonSet, hash: &str, node: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
    let mut pod = from_template(&template, ns, ds.metadata.name.as_deref().unwrap_or(""), owner::controller_ref(ds));
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_HASH.into(), hash.into());
    labels.insert(TEMPLATE_GENERATION.into(), ds.metadata.generation.unwrap_or(0).to_string());
    if let Some(spec) = pod.spec.as_mut() {
        let host_network = spec.host_network.unwrap_or(false);
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        for t in automatic(host_network) {
            if !tolerations.iter().any(|x| x.key == t.key && x.effect == t.effect) {
                tolerations.push(t);
            }
        }
        let term = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.to_string()]) }]),
        };
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
        node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector { node_selector_terms: vec![term] });
    }
    pod
}

/// The node a daemon pod is for: where it is bound, or the node its affinity names.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Whether a new daemon pod goes on `node` (`schedule`), and whether one already there may stay
/// (`keep`: NoSchedule taints added later do not evict).
pub struct Placement {
    pub schedule: bool,
    pub keep: bool,
}

pub fn placement(ds: &DaemonSet, node: &Node) -> Placement {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let probe = for_node(ds, "", name);
    let labels = node.metadata.labels.clone().unwrap_or_default();
    // the template's own selector and affinity (the pod's added term only names the node)
    let template_pod = Pod { metadata: Default::default(), spec: ds.spec.as_ref().and_then(|s| s.template.spec.clone()), status: None };
    if !pod_matches_node(&template_pod, &labels, name) {
        return Placement { schedule: false, keep: false };
    }
    let tolerations = probe.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let untolerated = |effect: &str| taints.iter().filter(|t| t.effect == effect).any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
    let no_execute = untolerated("NoExecute");
    Placement { schedule: !no_execute && !untolerated("NoSchedule"), keep: !no_execute }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds() -> DaemonSet {
        serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"nodeSelector": {"role": "worker"}, "containers": [{"name": "c", "image": "i"}]}}}}))
        .expect("ds")
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})).expect("node")
    }

    #[test]
    fn selectors_and_taints_decide_and_the_pod_names_its_node() {
        let d = ds();
        let p = placement(&d, &node("n1", json!({"role": "worker"}), json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}])));
        assert!(p.schedule && p.keep, "not-ready is tolerated");
        let p = placement(&d, &node("n2", json!({"role": "worker"}), json!([{"key": "dedicated", "effect": "NoSchedule"}])));
        assert!(!p.schedule && p.keep);
        let p = placement(&d, &node("n3", json!({"role": "worker"}), json!([{"key": "dedicated", "effect": "NoExecute"}])));
        assert!(!p.schedule && !p.keep);
        assert!(!placement(&d, &node("n4", json!({"role": "db"}), json!([]))).schedule);
        let pod = for_node(&d, "abc", "n1");
        assert_eq!(node_of(&pod).as_deref(), Some("n1"));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!((labels.get(REVISION_HASH).map(String::as_str), labels.get(TEMPLATE_GENERATION).map(String::as_str)), (Some("abc"), Some("2")));
    }
}
