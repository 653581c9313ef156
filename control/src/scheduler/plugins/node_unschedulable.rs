//! NodeUnschedulable: a cordoned node (spec.unschedulable) takes only pods that tolerate the
//! node.kubernetes.io/unschedulable:NoSchedule taint.

use k8s_openapi::api::core::v1::{Pod, Taint};

use super::taint_toleration::tolerates;
use crate::scheduler::cache::NodeInfo;
use crate::scheduler::framework::{FilterPlugin, Rejection};

pub const NAME: &str = "NodeUnschedulable";
pub const REASON: &str = "node(s) were unschedulable";

pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
        if node.node.spec.as_ref().and_then(|s| s.unschedulable) != Some(true) {
            return Ok(());
        }
        let taint = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
        if tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Ok(());
        }
        Err(Rejection::unresolvable(REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn cordoned_nodes_take_only_pods_that_tolerate_it() {
        let n = node(serde_json::json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        let plain = pod(serde_json::json!({"spec": {"containers": []}}));
        assert_eq!(NodeUnschedulable.filter(&plain, &n), Err(Rejection::unresolvable(REASON)));
        let tolerant = pod(
            serde_json::json!({"spec": {"containers": [], "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(NodeUnschedulable.filter(&tolerant, &n), Ok(()));
        let open = node(serde_json::json!({"metadata": {"name": "n"}}));
        assert_eq!(NodeUnschedulable.filter(&plain, &open), Ok(()));
    }
}
