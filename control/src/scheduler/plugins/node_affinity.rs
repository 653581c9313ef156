//! NodeAffinity: spec.nodeSelector and required node affinity must match the node (filter);
//! matching preferred terms add their weights (score, normalized to the best node).
//! Terms are ORed, the expressions of one term ANDed; matchFields knows metadata.name only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod};

use crate::scheduler::cache::{NodeInfo, Snapshot};
use crate::scheduler::framework::{default_normalize, FilterPlugin, Rejection, ScorePlugin};

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|w| w == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(Ok(have)), [want]) = (value.map(str::parse::<i64>), values) else { return false };
            let Ok(want) = want.parse::<i64>() else { return false };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Does one term match? An empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

/// nodeSelector and required node affinity of `pod` against a node.
pub fn pod_matches_node(pod: &Pod, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    if let Some(sel) = spec.node_selector.as_ref() {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, labels, node_name)),
    }
}

pub struct NodeAffinity;

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
        if pod_matches_node(pod, node.labels(), node.name()) {
            Ok(())
        } else {
            Err(Rejection::unresolvable(REASON))
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> i64 {
        let preferred = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default();
        preferred.iter().filter(|p| p.weight != 0 && term_matches(&p.preference, node.labels(), node.name())).map(|p| p.weight as i64).sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    fn labelled(name: &str, labels: serde_json::Value) -> NodeInfo {
        node(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
    }

    fn required(exprs: serde_json::Value, fields: serde_json::Value) -> Pod {
        pod(serde_json::json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": exprs, "matchFields": fields}]}}}}}))
    }

    #[test]
    fn node_selector_must_match_every_label() {
        let p = pod(serde_json::json!({"spec": {"containers": [], "nodeSelector": {"disktype": "ssd"}}}));
        assert_eq!(NodeAffinity.filter(&p, &labelled("a", serde_json::json!({"disktype": "ssd"}))), Ok(()));
        assert_eq!(NodeAffinity.filter(&p, &labelled("b", serde_json::json!({"disktype": "hdd"}))), Err(Rejection::unresolvable(REASON)));
        assert!(NodeAffinity.filter(&p, &labelled("c", serde_json::json!({}))).is_err());
    }

    #[test]
    fn required_terms_with_every_operator_and_match_fields() {
        let n = labelled("node-1", serde_json::json!({"zone": "a", "cores": "8"}));
        let cases = [
            (serde_json::json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}]), true),
            (serde_json::json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}]), false),
            (serde_json::json!([{"key": "missing", "operator": "NotIn", "values": ["a"]}]), true),
            (serde_json::json!([{"key": "zone", "operator": "Exists"}]), true),
            (serde_json::json!([{"key": "zone", "operator": "DoesNotExist"}]), false),
            (serde_json::json!([{"key": "cores", "operator": "Gt", "values": ["4"]}]), true),
            (serde_json::json!([{"key": "cores", "operator": "Lt", "values": ["4"]}]), false),
            (serde_json::json!([{"key": "zone", "operator": "Gt", "values": ["4"]}]), false),
            (serde_json::json!([{"key": "zone", "operator": "In", "values": ["a"]}, {"key": "cores", "operator": "In", "values": ["2"]}]), false),
        ];
        for (exprs, want) in cases {
            let got = NodeAffinity.filter(&required(exprs.clone(), serde_json::json!([])), &n).is_ok();
            assert_eq!(got, want, "{exprs}");
        }
        let by_name = required(serde_json::json!([]), serde_json::json!([{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]));
        assert_eq!(NodeAffinity.filter(&by_name, &n), Ok(()));
        assert!(NodeAffinity.filter(&by_name, &labelled("node-2", serde_json::json!({}))).is_err());
        let empty = required(serde_json::json!([]), serde_json::json!([]));
        assert!(NodeAffinity.filter(&empty, &n).is_err(), "an empty term matches nothing");
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod(serde_json::json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 30, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}
        ]}}}}));
        let snap = Snapshot::default();
        let nodes = [
            labelled("a", serde_json::json!({"zone": "a"})),
            labelled("b", serde_json::json!({"zone": "a", "gpu": "x"})),
            labelled("c", serde_json::json!({})),
        ];
        let mut s: Vec<i64> = nodes.iter().map(|n| NodeAffinity.score(&p, n, &snap)).collect();
        assert_eq!(s, vec![10, 40, 0]);
        NodeAffinity.normalize(&mut s);
        assert_eq!(s, vec![25, 100, 0]);
    }
}
