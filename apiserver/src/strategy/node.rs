//! Nodes (cluster-scoped, stored as upstream under `minions`): the `kubectl get nodes` columns
//! and the `spec.unschedulable` field selector.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::table::age;

pub struct Nodes;

impl Kind for Nodes {
    type Object = Node;

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE_COLUMN,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
            wide("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
            wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ]
    }

    fn cells(&self, n: &Node, now: Timestamp) -> Vec<Value> {
        let status = n.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| c.status.clone());
        let mut state = match ready.as_deref() {
            Some("True") => "Ready".to_string(),
            Some("False") => "NotReady".to_string(),
            _ => "Unknown".to_string(),
        };
        if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            state.push_str(",SchedulingDisabled");
        }
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let mut roles: Vec<String> =
            labels.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).filter(|r| !r.is_empty()).map(String::from).collect();
        if let Some(r) = labels.get("kubernetes.io/role").filter(|r| !r.is_empty()) {
            roles.push(r.clone());
        }
        roles.sort();
        roles.dedup();
        let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
        let addr = |t: &str| status.addresses.iter().flatten().find(|a| a.type_ == t).map(|a| a.address.clone()).unwrap_or_else(|| "<none>".into());
        let info = status.node_info.clone().unwrap_or_default();
        let unknown = |s: String| if s.is_empty() { "<unknown>".to_string() } else { s };
        vec![
            json!(n.metadata.name.clone().unwrap_or_default()),
            json!(state),
            json!(roles),
            json!(age(n.metadata.creation_timestamp.as_ref(), now)),
            json!(info.kubelet_version),
            json!(addr("InternalIP")),
            json!(addr("ExternalIP")),
            json!(unknown(info.os_image)),
            json!(unknown(info.kernel_version)),
            json!(unknown(info.container_runtime_version)),
        ]
    }

    fn fields(&self, n: &Node) -> Vec<(&'static str, String)> {
        vec![("spec.unschedulable", n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false).to_string())]
    }
}
