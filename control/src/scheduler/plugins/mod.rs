//! The filter and score plugins, one file each, named as upstream names them, and the
//! registry a profile is built from.

pub mod balanced_allocation;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};

    use crate::scheduler::cache::NodeInfo;

    pub fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    /// A Ready node from JSON (metadata/spec/status as given; Ready added).
    pub fn node(mut v: serde_json::Value) -> NodeInfo {
        let conds = serde_json::json!([{"type": "Ready", "status": "True"}]);
        if v.pointer("/status/conditions").is_none() {
            if let Some(o) = v.as_object_mut() {
                let status = o.entry("status").or_insert_with(|| serde_json::json!({}));
                status["conditions"] = conds;
            }
        }
        let n: Node = serde_json::from_value(v).expect("node");
        NodeInfo::new(Arc::new(n))
    }
}
