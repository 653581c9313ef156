//! NodeName: a pod whose spec.nodeName is set (and still unbound) fits only that node.

use k8s_openapi::api::core::v1::Pod;

use crate::scheduler::cache::NodeInfo;
use crate::scheduler::framework::{FilterPlugin, Rejection};

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(want) if !want.is_empty() && want != node.name() => Err(Rejection::unresolvable(REASON)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn only_the_named_node_fits() {
        let p = pod(serde_json::json!({"spec": {"nodeName": "a", "containers": []}}));
        assert_eq!(NodeName.filter(&p, &node(serde_json::json!({"metadata": {"name": "a"}}))), Ok(()));
        assert_eq!(NodeName.filter(&p, &node(serde_json::json!({"metadata": {"name": "b"}}))), Err(Rejection::unresolvable(REASON)));
    }
}
